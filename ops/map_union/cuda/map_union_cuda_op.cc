#include "map_union/cuda/map_union_cuda_op.h"

#include "map_union/cuda/map_union_kernel.h"
#include "op_definition/map_union_inputs.h"

namespace deltaonnx {
namespace cuda {

void MapUnionCudaKernel::compute(OrtKernelContext* raw_context) const {
  Ort::KernelContext ctx(raw_context);
  const MapUnionInputs in = read_map_union_inputs(ctx);
  Ort::UnownedValue out = output_of(ctx, 0, in.shape);
  if (in.elements == 0) return;
  const cudaStream_t stream = compute_stream(ctx);
  check_cuda(launch_map_union(in.maps, in.per_item, static_cast<int64_t>(in.count), out.GetTensorMutableData<uint8_t>(),
                              in.elements, in.item_size, stream),
             "map union");
}

}  // namespace cuda
}  // namespace deltaonnx

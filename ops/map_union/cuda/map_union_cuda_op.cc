#include "map_union/cuda/map_union_cuda_op.h"

#include <cstdint>
#include <vector>

#include "map_union/cuda/map_union_kernel.h"

namespace deltaonnx {
namespace cuda {
namespace {

constexpr const char* kOp = "DeltaMapUnion";

}  // namespace

MapUnionCudaKernel::MapUnionCudaKernel(const OrtKernelInfo* info) { node_ = AttributeReader(info, kOp).node(); }

void MapUnionCudaKernel::Compute(OrtKernelContext* raw_context) const {
  Ort::KernelContext ctx(raw_context);
  const size_t count = ctx.GetInputCount();
  if (count == 0) fail(kOp, node_, "needs at least one input map");
  std::vector<const uint8_t*> maps;
  std::vector<int64_t> shape;
  for (size_t i = 0; i < count; ++i) {
    const OrtValue* map = optional_input(ctx, i);
    if (map == nullptr) fail(kOp, node_, "input " + std::to_string(i) + " is missing");
    const std::vector<int64_t> s = shape_of(map);
    if (i == 0) {
      shape = s;
    } else if (s != shape) {
      fail(kOp, node_, "input " + std::to_string(i) + " has shape " + shape_string(s) + ", input 0 has " + shape_string(shape));
    }
    maps.push_back(Ort::ConstValue(map).GetTensorData<uint8_t>());
  }
  Ort::UnownedValue out = ctx.GetOutput(0, shape);
  const int64_t size = element_count(shape);
  if (size == 0) return;
  const cudaStream_t stream = compute_stream(ctx, kOp, node_);
  check_cuda(launch_map_union(maps.data(), static_cast<int64_t>(maps.size()), out.GetTensorMutableData<uint8_t>(), size, stream),
             kOp, node_, "map union");
}

}  // namespace cuda
}  // namespace deltaonnx

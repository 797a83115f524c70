#include "map_union/map_union_kernel.h"

#include "op_definition/map_union_inputs.h"

namespace deltaonnx {

void MapUnionKernel::compute(OrtKernelContext* raw) const {
  Ort::KernelContext ctx(raw);
  const MapUnionInputs in = read_map_union_inputs(ctx);
  uint8_t* out = output_of(ctx, 0, in.shape).GetTensorMutableData<uint8_t>();
  const int64_t count = in.elements;
  if (count == 0) return;
  const uint8_t* a = in.maps[0];
  for (int64_t j = 0; j < count; ++j) out[j] = a[j] != 0;
  for (size_t i = 1; i < in.count; ++i) {
    const uint8_t* b = in.maps[i];
    for (int64_t j = 0; j < count; ++j) out[j] |= b[j] != 0;
  }
}

}  // namespace deltaonnx

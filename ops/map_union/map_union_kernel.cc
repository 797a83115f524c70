#include "map_union/map_union_kernel.h"

#include <cstring>

#include "op_definition/map_union_inputs.h"

namespace deltaonnx {

void MapUnionKernel::compute(OrtKernelContext* raw) const {
  Ort::KernelContext ctx(raw);
  const MapUnionInputs in = read_map_union_inputs(ctx);
  uint8_t* out = output_of(ctx, 0, in.shape).GetTensorMutableData<uint8_t>();
  const int64_t count = in.elements;
  if (count == 0) return;
  bool first = true;
  for (size_t i = 0; i < in.count; ++i) {  // the maps of the output's shape
    if (in.per_item[i]) continue;
    const uint8_t* b = in.maps[i];
    if (first) {
      for (int64_t j = 0; j < count; ++j) out[j] = b[j] != 0;
    } else {
      for (int64_t j = 0; j < count; ++j) out[j] |= b[j] != 0;
    }
    first = false;
  }
  const int64_t items = count / in.item_size;
  for (size_t i = 0; i < in.count; ++i) {  // then each per-item map marks its items whole
    if (!in.per_item[i]) continue;
    for (int64_t n = 0; n < items; ++n)
      if (in.maps[i][n] != 0) std::memset(out + n * in.item_size, 1, static_cast<size_t>(in.item_size));
  }
}

}  // namespace deltaonnx

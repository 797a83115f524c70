// DeltaMapUnion's inputs read and checked once for every provider: one or more uint8 maps of one shape, or of
// one value per batch item (broadcast over the item).
#pragma once
#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/checked_size.h"
#include "op_definition/ort_tensors.h"

namespace deltaonnx {

struct MapUnionInputs {
  const uint8_t* const* maps = nullptr;  // count data pointers, in the calling thread's scratch (valid until its next read)
  // per input, 1 where it is a per-item map (one value per batch item: a squeeze-excite gate's) that marks the whole
  // item of the output where set; 0 where it has the output's shape. Same scratch.
  const uint8_t* per_item = nullptr;
  size_t count = 0;
  Shape shape;  // the output's: the inputs' that are not per-item (all equal), or the inputs' when all are
  int64_t elements = 0;
  int64_t item_size = 1;  // the output's elements per batch item
};

// Elements after the first dimension (1 for a per-item map [N,1,1,1], or a shape of rank 1).
inline int64_t elements_per_item(const Shape& s) {
  int64_t e = 1;
  for (size_t d = 1; d < s.size(); ++d) e = checked_product({e, s[d]}, "the change map");
  return e;
}

inline MapUnionInputs read_map_union_inputs(const Ort::KernelContext& ctx) {
  thread_local std::vector<const uint8_t*> pointers;  // grow, never shrink
  thread_local std::vector<uint8_t> per_item;
  thread_local std::vector<Shape> shapes;
  MapUnionInputs in;
  const size_t count = ctx.GetInputCount();
  if (count == 0) throw UserError("needs at least one input map");
  pointers.resize(count);
  per_item.assign(count, 0);
  shapes.resize(count);
  int full = -1;  // the first input with more than one element per item: the output's shape
  for (size_t i = 0; i < count; ++i) {
    const OrtValue* map = static_cast<const OrtValue*>(ctx.GetInput(i));
    if (map == nullptr) throw UserError("input " + std::to_string(i) + " is missing");
    shapes[i] = shape_of(map);
    if (shapes[i].too_long()) throw UserError("a change map has at most 8 dimensions, got " + shape_text(shapes[i]));
    if (full < 0 && elements_per_item(shapes[i]) > 1) full = static_cast<int>(i);
    pointers[i] = Ort::ConstValue(map).GetTensorData<uint8_t>();
  }
  in.shape = shapes[full < 0 ? 0 : full];
  for (size_t i = 0; i < count; ++i) {
    const Shape& s = shapes[i];
    if (s == in.shape) continue;
    if (full >= 0 && s.size() == in.shape.size() && s.size() > 0 && s[0] == in.shape[0] && elements_per_item(s) == 1) {
      per_item[i] = 1;
      continue;
    }
    throw UserError("change maps differ in shape: input " + std::to_string(full < 0 ? 0 : full) + " has " +
                    shape_text(in.shape) + ", input " + std::to_string(i) + " has " + shape_text(s) +
                    " (a map of another shape must hold one value per batch item, [N,1,...,1])");
  }
  int64_t elements = 1;
  for (int64_t d : in.shape) elements = checked_product({elements, d}, "the change map");
  in.elements = elements;
  in.item_size = in.shape.size() == 0 ? 1 : elements_per_item(in.shape);
  in.maps = pointers.data();
  in.per_item = per_item.data();
  in.count = count;
  return in;
}

}  // namespace deltaonnx

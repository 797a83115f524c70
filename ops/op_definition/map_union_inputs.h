// DeltaMapUnion's inputs read and checked once for every provider: one or more uint8 maps of one shape.
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
  size_t count = 0;
  Shape shape;
  int64_t elements = 0;
};

inline MapUnionInputs read_map_union_inputs(const Ort::KernelContext& ctx) {
  thread_local std::vector<const uint8_t*> pointers;  // grows, never shrinks
  MapUnionInputs in;
  const size_t count = ctx.GetInputCount();
  if (count == 0) throw UserError("needs at least one input map");
  pointers.resize(count);
  for (size_t i = 0; i < count; ++i) {
    const OrtValue* map = static_cast<const OrtValue*>(ctx.GetInput(i));
    if (map == nullptr) throw UserError("input " + std::to_string(i) + " is missing");
    const Shape s = shape_of(map);
    if (i == 0) {
      if (s.too_long()) throw UserError("a change map has at most 8 dimensions, got " + shape_text(s));
      in.shape = s;
    } else if (s != in.shape) {
      throw UserError("change maps differ in shape: input 0 has " + shape_text(in.shape) + ", input " +
                      std::to_string(i) + " has " + shape_text(s));
    }
    pointers[i] = Ort::ConstValue(map).GetTensorData<uint8_t>();
  }
  int64_t elements = 1;
  for (int64_t d : in.shape) elements = checked_product({elements, d}, "the change map");
  in.elements = elements;
  in.maps = pointers.data();
  in.count = count;
  return in;
}

}  // namespace deltaonnx

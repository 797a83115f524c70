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
  std::vector<const uint8_t*> maps;
  std::vector<int64_t> shape;
  int64_t elements = 0;
};

inline MapUnionInputs read_map_union_inputs(const Ort::KernelContext& ctx) {
  MapUnionInputs in;
  const size_t count = ctx.GetInputCount();
  if (count == 0) throw UserError("needs at least one input map");
  for (size_t i = 0; i < count; ++i) {
    const OrtValue* map = optional_input(ctx, i);
    if (map == nullptr) throw UserError("input " + std::to_string(i) + " is missing");
    const std::vector<int64_t> s = shape_of(map);
    if (i == 0) {
      in.shape = s;
    } else if (s != in.shape) {
      throw UserError("change maps differ in shape: input 0 has " + shape_text(in.shape) + ", input " +
                      std::to_string(i) + " has " + shape_text(s));
    }
    in.maps.push_back(Ort::ConstValue(map).GetTensorData<uint8_t>());
  }
  int64_t elements = 1;
  for (int64_t d : in.shape) elements = checked_product({elements, d}, "the change map");
  in.elements = elements;
  return in;
}

}  // namespace deltaonnx

// DeltaMapUnion on the GPU: the elementwise OR of several change maps, one thread per element.
#pragma once
#include <cstdint>

#include "common/host_device.h"

namespace deltaonnx {
namespace cuda {

constexpr int kMapUnionInputsPerLaunch = 8;

// OR of up to kMapUnionInputsPerLaunch maps (passed by value in the kernel's parameters); with more inputs,
// later launches fold the output of the earlier ones in.
struct MapUnionStep {
  const uint8_t* maps[kMapUnionInputsPerLaunch] = {};
  bool per_item[kMapUnionInputsPerLaunch] = {};  // one value per batch item, read at index / item_size
  int32_t num_maps = 0;
  int64_t item_size = 1;
  bool fold_output = false;
  uint8_t* out = nullptr;
  int64_t size = 0;
};

// The launch that ORs inputs [first, first + kMapUnionInputsPerLaunch) of maps into out.
inline MapUnionStep map_union_launch(const uint8_t* const* maps, const uint8_t* per_item, int64_t num_maps,
                                     int64_t first, uint8_t* out, int64_t size, int64_t item_size) {
  MapUnionStep step;
  const int64_t left = num_maps - first;
  step.num_maps = static_cast<int32_t>(left < kMapUnionInputsPerLaunch ? left : kMapUnionInputsPerLaunch);
  for (int32_t i = 0; i < step.num_maps; ++i) {
    step.maps[i] = maps[first + i];
    step.per_item[i] = per_item[first + i] != 0;
  }
  step.item_size = item_size;
  step.fold_output = first > 0;
  step.out = out;
  step.size = size;
  return step;
}

DELTA_HD void map_union_thread(const MapUnionStep& s, int64_t index) {
  uint8_t v = 0;
  for (int32_t i = 0; i < s.num_maps && !v; ++i) v = s.maps[i][s.per_item[i] ? index / s.item_size : index] != 0;
  if (s.fold_output && s.out[index] != 0) v = 1;
  s.out[index] = v;
}

}  // namespace cuda
}  // namespace deltaonnx

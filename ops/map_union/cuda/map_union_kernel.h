// Launcher of DeltaMapUnion's kernel (map_union_step.h) on a stream.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

#include "map_union/cuda/map_union_step.h"

namespace deltaonnx {
namespace cuda {

// out = OR of maps[0..num_maps) of `size` bytes (a per-item one, per_item[i] != 0: one byte per `item_size` of
// out), in launches of kMapUnionInputsPerLaunch inputs.
cudaError_t launch_map_union(const uint8_t* const* maps, const uint8_t* per_item, int64_t num_maps, uint8_t* out,
                             int64_t size, int64_t item_size, cudaStream_t stream);

}  // namespace cuda
}  // namespace deltaonnx

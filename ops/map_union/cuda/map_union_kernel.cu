// DeltaMapUnion as a CUDA kernel: grid-stride over the elements, up to 8 inputs per launch.
#include "map_union/cuda/map_union_kernel.h"

#include "cuda_common/launch_config.cuh"

namespace deltaonnx {
namespace cuda {
namespace {

__global__ void map_union_kernel(MapUnionStep step) {
  for (int64_t i = global_thread_index(); i < step.size; i += grid_stride()) map_union_thread(step, i);
}

}  // namespace

cudaError_t launch_map_union(const uint8_t* const* maps, const uint8_t* per_item, int64_t num_maps, uint8_t* out,
                             int64_t size, int64_t item_size, cudaStream_t stream) {
  for (int64_t first = 0; first < num_maps; first += kMapUnionInputsPerLaunch) {
    const MapUnionStep step = map_union_launch(maps, per_item, num_maps, first, out, size, item_size);
    map_union_kernel<<<blocks_for(size, kMaxBlocks1D), kBlockThreads, 0, stream>>>(step);
    const cudaError_t error = cudaGetLastError();
    if (error != cudaSuccess) return error;
  }
  return cudaSuccess;
}

}  // namespace cuda
}  // namespace deltaonnx

// Launch shapes shared by the .cu files (nvcc only).
#pragma once
#include <cstdint>

#include <cuda_runtime.h>

namespace deltaonnx {
namespace cuda {

constexpr int kBlockThreads = 256;
// 1-D kernels loop grid-stride past this many blocks, keeping any tensor size within grid limits.
constexpr int64_t kMaxBlocks1D = int64_t{1} << 20;
// gridDim.y and gridDim.z limit.
constexpr int64_t kMaxGridYZ = 65535;

inline unsigned int blocks_for(int64_t threads, int64_t max_blocks = int64_t{0x7fffffff}) {
  int64_t blocks = (threads + kBlockThreads - 1) / kBlockThreads;
  if (blocks > max_blocks) blocks = max_blocks;
  return static_cast<unsigned int>(blocks < 1 ? 1 : blocks);
}

__device__ __forceinline__ int64_t global_thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}

__device__ __forceinline__ int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

}  // namespace cuda
}  // namespace deltaonnx

// DeltaPool's compute as a CUDA kernel. Grid: x over list entries, y = channel, z = batch item.
#include "delta_pool/cuda/max_pool_kernel.h"

#include "cuda_common/launch_config.cuh"

namespace deltaonnx {
namespace cuda {
namespace {

__global__ void max_pool_kernel(MaxPoolStep step) {
  const int64_t i = global_thread_index();
  if (i < step.list.total) max_pool_thread(step, blockIdx.z, blockIdx.y, i);
}

}  // namespace

cudaError_t launch_max_pool(const MaxPoolStep& step, cudaStream_t stream) {
  dim3 grid(blocks_for(step.list.total), static_cast<unsigned int>(step.channels),
            static_cast<unsigned int>(step.batch));
  max_pool_kernel<<<grid, kBlockThreads, 0, stream>>>(step);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace deltaonnx

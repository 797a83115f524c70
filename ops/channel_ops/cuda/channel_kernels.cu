// DeltaGlobalAveragePool's and DeltaChannelScale's kernels: grid-stride loops over the rules of channel_step.h.
#include "channel_ops/cuda/channel_kernels.h"

#include "cuda_common/launch_config.cuh"

namespace deltaonnx {
namespace cuda {
namespace {

__global__ void global_pool_kernel(GlobalPoolStep step) {
  const int64_t total = step.g.outputs();
  for (int64_t i = global_thread_index(); i < total; i += grid_stride()) global_pool_thread(step, i);
}

__global__ void channel_scale_kernel(ChannelScaleStep step) {
  const int64_t total = step.g.elements();
  for (int64_t i = global_thread_index(); i < total; i += grid_stride()) channel_scale_thread(step, i);
}

}  // namespace

cudaError_t launch_global_pool(const GlobalPoolStep& step, cudaStream_t stream) {
  if (step.g.outputs() == 0) return cudaSuccess;
  global_pool_kernel<<<blocks_for(step.g.outputs(), kMaxBlocks1D), kBlockThreads, 0, stream>>>(step);
  return cudaGetLastError();
}

cudaError_t launch_channel_scale(const ChannelScaleStep& step, cudaStream_t stream) {
  if (step.g.elements() == 0) return cudaSuccess;
  channel_scale_kernel<<<blocks_for(step.g.elements(), kMaxBlocks1D), kBlockThreads, 0, stream>>>(step);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace deltaonnx

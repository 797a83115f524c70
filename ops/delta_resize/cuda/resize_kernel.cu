// DeltaResize's kernels: one thread per output float (or map byte), grid-stride, the rules of resize_step.h.
#include "delta_resize/cuda/resize_kernel.h"

#include "cuda_common/launch_config.cuh"

namespace deltaonnx {
namespace cuda {
namespace {

__global__ void resize_kernel(ResizeStep step) {
  const int64_t total = step.out_elements();
  for (int64_t i = global_thread_index(); i < total; i += grid_stride()) resize_thread(step, i);
}

__global__ void resize_map_kernel(ResizeStep step) {
  const int64_t total = step.map_elements();
  for (int64_t q = global_thread_index(); q < total; q += grid_stride()) resize_map_thread(step, q);
}

}  // namespace

cudaError_t launch_resize(const ResizeStep& step, cudaStream_t stream) {
  if (step.out_elements() == 0) return cudaSuccess;
  resize_kernel<<<blocks_for(step.out_elements(), kMaxBlocks1D), kBlockThreads, 0, stream>>>(step);
  return cudaGetLastError();
}

cudaError_t launch_resize_map(const ResizeStep& step, cudaStream_t stream) {
  if (step.map_elements() == 0) return cudaSuccess;
  resize_map_kernel<<<blocks_for(step.map_elements(), kMaxBlocks1D), kBlockThreads, 0, stream>>>(step);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace deltaonnx

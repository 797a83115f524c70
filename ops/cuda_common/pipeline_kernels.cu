// The shared pipeline steps as CUDA kernels: each thread calls the step's DELTA_HD body (pipeline_steps.h).
#include "cuda_common/pipeline_kernels.h"

#include "cuda_common/launch_config.cuh"

namespace deltaonnx {
namespace cuda {
namespace {

__global__ void change_step_kernel(ChangeStep step) {
  const int64_t end = step.threads();
  for (int64_t i = global_thread_index(); i < end; i += grid_stride()) change_step_thread(step, i);
}

// Grid: x over the item's output pixels, y = batch item, so a warp never spans two items' lists.
__global__ void recompute_step_kernel(RecomputeStep step) {
  const int64_t n = blockIdx.y;
  const int64_t q = global_thread_index();
  const bool flag = q < step.out_plane() && recompute_step_flag(step, n, q);
  const uint32_t ballot = __ballot_sync(0xffffffffu, flag);
  if (ballot == 0) return;  // warp-uniform
  const int lane = static_cast<int>(threadIdx.x) & (kWarpSize - 1);
  const int leader = __ffs(static_cast<int>(ballot)) - 1;
  int32_t base = 0;
  if (lane == leader) base = atomicAdd(step.counts + n, popcount32(ballot));
  base = __shfl_sync(0xffffffffu, base, leader);
  if (flag) step.pixel_list[n * step.out_plane() + warp_append_slot(ballot, lane, base)] = static_cast<int32_t>(q);
}

__global__ void densify_step_kernel(PixelList list, uint8_t* map_out) {
  const int64_t q = global_thread_index();
  if (q < list.total) densify_step_thread(list, map_out, blockIdx.y, q);
}

__global__ void keep_step_kernel(KeepStep step) {
  const int64_t end = step.threads();
  for (int64_t i = global_thread_index(); i < end; i += grid_stride()) keep_step_thread(step, i);
}

}  // namespace

cudaError_t launch_change_step(const ChangeStep& step, cudaStream_t stream) {
  change_step_kernel<<<blocks_for(step.threads(), kMaxBlocks1D), kBlockThreads, 0, stream>>>(step);
  return cudaGetLastError();
}

cudaError_t launch_recompute_step(const RecomputeStep& step, cudaStream_t stream) {
  static_assert(kBlockThreads % kWarpSize == 0, "whole warps");
  dim3 grid(blocks_for(step.out_plane()), static_cast<unsigned int>(step.batch));
  recompute_step_kernel<<<grid, kBlockThreads, 0, stream>>>(step);
  return cudaGetLastError();
}

cudaError_t launch_densify_step(const PixelList& list, uint8_t* map_out, int64_t batch, cudaStream_t stream) {
  dim3 grid(blocks_for(list.total), static_cast<unsigned int>(batch));
  densify_step_kernel<<<grid, kBlockThreads, 0, stream>>>(list, map_out);
  return cudaGetLastError();
}

cudaError_t launch_keep_step(const KeepStep& step, cudaStream_t stream) {
  keep_step_kernel<<<blocks_for(step.threads(), kMaxBlocks1D), kBlockThreads, 0, stream>>>(step);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace deltaonnx

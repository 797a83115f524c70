// DeltaConv's gather-GEMM as a CUDA kernel: the phases of gather_gemm.h with barriers between them.
#include "delta_conv/cuda/gather_gemm_kernel.h"

#include "cuda_common/launch_config.cuh"

namespace deltaonnx {
namespace cuda {
namespace {

template <class Tile>
__global__ void __launch_bounds__(Tile::kThreads) gather_gemm_kernel(GatherGemm gemm) {
  __shared__ float a_tile[Tile::kSharedA];
  __shared__ float b_tile[Tile::kSharedB];
  const GemmBlock block = gemm_block<Tile>(gemm, blockIdx.x, blockIdx.y, blockIdx.z);
  if (!gemm_block_active(block)) return;  // the same for every thread of the block
  const int tid = static_cast<int>(threadIdx.x);
  GemmThread<Tile> thread;
  gemm_thread_init<Tile>(gemm, block, tid, thread);
  const int32_t depth = static_cast<int32_t>(gemm.shape.depth());
  for (int32_t k0 = 0; k0 < depth; k0 += Tile::BK) {
    gemm_load<Tile>(gemm, block, tid, thread, k0, a_tile, b_tile);
    __syncthreads();
    gemm_accumulate<Tile>(tid, a_tile, b_tile, thread);
    __syncthreads();
  }
  gemm_store<Tile>(gemm, block, tid, thread);
}

__global__ void channel_activation_kernel(GatherGemm gemm) {
  const int64_t i = global_thread_index();
  if (i < gemm.list.total) channel_activation_thread(gemm, blockIdx.y, i);
}

template <class Tile>
cudaError_t launch_tile(const GatherGemm& gemm, cudaStream_t stream) {
  const GemmGrid g = gemm_grid<Tile>(gemm);
  dim3 grid(static_cast<unsigned int>(g.x), static_cast<unsigned int>(g.y), static_cast<unsigned int>(g.z));
  gather_gemm_kernel<Tile><<<grid, Tile::kThreads, 0, stream>>>(gemm);
  return cudaGetLastError();
}

}  // namespace

cudaError_t launch_gather_gemm(const GatherGemm& gemm, cudaStream_t stream) {
  const cudaError_t error =
      use_wide_tile(gemm.shape) ? launch_tile<WideTile>(gemm, stream) : launch_tile<NarrowTile>(gemm, stream);
  if (error != cudaSuccess || !is_channel_activation(gemm.act.kind)) return error;
  dim3 grid(blocks_for(gemm.list.total), static_cast<unsigned int>(gemm.batch));  // batch <= kMaxBatch
  channel_activation_kernel<<<grid, kBlockThreads, 0, stream>>>(gemm);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace deltaonnx

// DeltaGate as two CUDA kernels, grid-stride over blocks and then pixels.
#include "delta_gate/cuda/gate_kernel.h"

#include "cuda_common/launch_config.cuh"

namespace deltaonnx {
namespace cuda {
namespace {

__global__ void gate_verdict_kernel(GateStep step) {
  for (int64_t i = global_thread_index(); i < step.verdict_threads(); i += grid_stride()) gate_verdict_thread(step, i);
}

__global__ void gate_apply_kernel(GateStep step) {
  for (int64_t i = global_thread_index(); i < step.apply_threads(); i += grid_stride()) gate_apply_thread(step, i);
}

}  // namespace

cudaError_t launch_gate(const GateStep& step, cudaStream_t stream) {
  gate_verdict_kernel<<<blocks_for(step.verdict_threads(), kMaxBlocks1D), kBlockThreads, 0, stream>>>(step);
  cudaError_t error = cudaGetLastError();
  if (error != cudaSuccess) return error;
  gate_apply_kernel<<<blocks_for(step.apply_threads(), kMaxBlocks1D), kBlockThreads, 0, stream>>>(step);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace deltaonnx

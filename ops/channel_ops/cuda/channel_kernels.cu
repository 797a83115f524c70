// DeltaGlobalAveragePool's, DeltaChannelScale's and DeltaChannelGate's kernels: grid-stride loops over the rules of
// channel_step.h.
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

// One 1x1 conv of DeltaChannelGate over every item: out [N, outputs] from in [N, inputs], a thread per output.
__global__ void channel_gate_layer_kernel(GateLayer layer, const float* in, float* out, int64_t total) {
  for (int64_t i = global_thread_index(); i < total; i += grid_stride()) gate_layer_thread(layer, in, out, i);
}

// DeltaChannelGate's map_out: item n's change flag, a thread per item.
__global__ void channel_gate_map_kernel(ChannelGateStep step) {
  for (int64_t n = global_thread_index(); n < step.pool.g.batch; n += grid_stride())
    step.map_out[n] = gate_changed(step, n);
}

cudaError_t launch_gate_layer(const GateLayer& layer, const float* in, float* out, int64_t items, cudaStream_t stream) {
  const int64_t total = items * layer.outputs;
  if (total == 0) return cudaSuccess;
  channel_gate_layer_kernel<<<blocks_for(total, kMaxBlocks1D), kBlockThreads, 0, stream>>>(layer, in, out, total);
  return cudaGetLastError();
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

cudaError_t launch_channel_gate(const ChannelGateStep& step, cudaStream_t stream) {
  const int64_t items = step.pool.g.batch;
  if (items == 0) return cudaSuccess;
  cudaError_t error = launch_global_pool(step.pool, stream);
  if (error == cudaSuccess) error = launch_gate_layer(step.reduce, step.pool.y, step.hidden, items, stream);
  if (error == cudaSuccess) error = launch_gate_layer(step.expand, step.hidden, step.s, items, stream);
  if (error != cudaSuccess || step.map_out == nullptr) return error;
  channel_gate_map_kernel<<<blocks_for(items, kMaxBlocks1D), kBlockThreads, 0, stream>>>(step);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace deltaonnx

// The kernel launchers of the host-emulated op library: the same signatures as the .cu launchers, each
// running its kernel's grid on the host (host_emulation.cc). Linked instead of the .cu files.
#include "cuda_common/host/host_emulation.h"
#include "cuda_common/pipeline_kernels.h"
#include "delta_conv/cuda/gather_gemm_kernel.h"
#include "delta_pool/cuda/max_pool_kernel.h"
#include "map_union/cuda/map_union_kernel.h"
#include "delta_gate/cuda/gate_kernel.h"
#include "delta_resize/cuda/resize_kernel.h"
#include "channel_ops/cuda/channel_kernels.h"

namespace deltaonnx {
namespace cuda {

cudaError_t launch_change_step(const ChangeStep& step, cudaStream_t) {
  host::run_change_step(step);
  return cudaSuccess;
}

cudaError_t launch_recompute_step(const RecomputeStep& step, cudaStream_t) {
  host::run_recompute_step(step);
  return cudaSuccess;
}

cudaError_t launch_densify_step(const PixelList& list, uint8_t* map_out, int64_t batch, cudaStream_t) {
  host::run_densify_step(list, map_out, batch);
  return cudaSuccess;
}

cudaError_t launch_keep_step(const KeepStep& step, cudaStream_t) {
  host::run_keep_step(step);
  return cudaSuccess;
}

cudaError_t launch_gather_gemm(const GatherGemm& gemm, cudaStream_t) {
  host::run_gather_gemm(gemm);
  return cudaSuccess;
}

cudaError_t launch_max_pool(const MaxPoolStep& step, cudaStream_t) {
  host::run_max_pool(step);
  return cudaSuccess;
}

cudaError_t launch_map_union(const uint8_t* const* maps, const uint8_t* per_item, int64_t num_maps, uint8_t* out,
                             int64_t size, int64_t item_size, cudaStream_t) {
  host::run_map_union(maps, per_item, num_maps, out, size, item_size);
  return cudaSuccess;
}

cudaError_t launch_gate(const GateStep& step, cudaStream_t) {
  host::run_gate(step);
  return cudaSuccess;
}

cudaError_t launch_global_pool(const GlobalPoolStep& step, cudaStream_t) {
  host::run_global_pool(step);
  return cudaSuccess;
}

cudaError_t launch_channel_scale(const ChannelScaleStep& step, cudaStream_t) {
  host::run_channel_scale(step);
  return cudaSuccess;
}

cudaError_t launch_channel_gate(const ChannelGateStep& step, cudaStream_t) {
  host::run_channel_gate(step);
  return cudaSuccess;
}

cudaError_t launch_resize(const ResizeStep& step, cudaStream_t) {
  host::run_resize(step);
  return cudaSuccess;
}

cudaError_t launch_resize_map(const ResizeStep& step, cudaStream_t) {
  host::run_resize_map(step);
  return cudaSuccess;
}

}  // namespace cuda
}  // namespace deltaonnx

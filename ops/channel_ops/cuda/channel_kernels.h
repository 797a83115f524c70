// Launchers of DeltaGlobalAveragePool's, DeltaChannelScale's and DeltaChannelGate's kernels
// (channel_ops/channel_step.h) on a stream.
#pragma once
#include <cuda_runtime_api.h>

#include "channel_ops/channel_step.h"

namespace deltaonnx {
namespace cuda {

// y [N, C]: one thread per output channel, summing its plane (squeeze-excite planes are small: 56 x 56 at most
// in MobileNetV3 at 224 px).
cudaError_t launch_global_pool(const GlobalPoolStep& step, cudaStream_t stream);
// y = x times its channel's scale, one thread per float, grid-stride.
cudaError_t launch_channel_scale(const ChannelScaleStep& step, cudaStream_t stream);
// DeltaChannelGate, four launches in stream order: the pool into step.pool.y (launch_global_pool's kernel), the
// reduce layer into step.hidden, the expand layer into step.s (one thread per output each), then map_out when asked
// for (one thread per item). The scratch step.pool.y and step.hidden must be device memory the caller keeps alive
// until the stream has run them.
cudaError_t launch_channel_gate(const ChannelGateStep& step, cudaStream_t stream);

}  // namespace cuda
}  // namespace deltaonnx

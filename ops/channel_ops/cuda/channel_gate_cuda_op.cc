#include "channel_ops/cuda/channel_gate_cuda_op.h"

#include "channel_ops/channel_launch.h"
#include "channel_ops/cuda/channel_kernels.h"

namespace deltaonnx {
namespace cuda {

ChannelGateCudaKernel::ChannelGateCudaKernel(const OrtKernelInfo* info)
    : SchemaKernel(info), attributes_(read_channel_gate_attributes(AttributeReader(info))) {}

void ChannelGateCudaKernel::compute(OrtKernelContext* raw) const {
  Ort::KernelContext ctx(raw);
  const KernelInputs in(ctx);
  ChannelGateStep step = prepare_channel_gate(ctx, in, attributes_, /*block=*/1);
  const size_t means = static_cast<size_t>(step.pool.g.outputs());                   // N * C
  const size_t hidden = static_cast<size_t>(step.pool.g.batch * step.reduce.outputs);  // N * R
  // One device allocation for both (none when N is 0: the outputs are allocated, nothing runs).
  const size_t bytes = DeviceScratch::align_up(sizeof(float) * means) + DeviceScratch::align_up(sizeof(float) * hidden);
  DeviceScratch scratch(ctx, ctx.GetInput(channel_gate::kX), bytes);
  step.pool.y = scratch.take<float>(means);
  step.hidden = scratch.take<float>(hidden);
  check_cuda(launch_channel_gate(step, compute_stream(ctx)), "DeltaChannelGate");
}

}  // namespace cuda
}  // namespace deltaonnx

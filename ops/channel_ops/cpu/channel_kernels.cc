#include "channel_ops/cpu/channel_kernels.h"

#include "channel_ops/channel_launch.h"
#include "channel_ops/cpu/channel_engine.h"
#include "common/channel_block.h"
#include "ort_util.h"

namespace deltaonnx {

GlobalPoolKernel::GlobalPoolKernel(const OrtKernelInfo* info)
    : SchemaKernel(info), attributes_(read_channel_op_attributes(AttributeReader(info), /*with_channels=*/true)),
      block_(cpu_channel_block()) {}

void GlobalPoolKernel::compute(OrtKernelContext* raw) const {
  Ort::KernelContext ctx(raw);
  const KernelInputs in(ctx);
  global_pool(prepare_global_pool(ctx, in, attributes_, block_), ort_parallel_for(ctx));
}

ChannelScaleKernel::ChannelScaleKernel(const OrtKernelInfo* info)
    : SchemaKernel(info), attributes_(read_channel_op_attributes(AttributeReader(info), /*with_channels=*/false)),
      block_(cpu_channel_block()) {}

void ChannelScaleKernel::compute(OrtKernelContext* raw) const {
  Ort::KernelContext ctx(raw);
  const KernelInputs in(ctx);
  channel_scale(prepare_channel_scale(ctx, in, attributes_, block_), ort_parallel_for(ctx));
}

}  // namespace deltaonnx

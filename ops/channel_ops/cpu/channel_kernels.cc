#include "channel_ops/cpu/channel_kernels.h"

#include "channel_ops/channel_launch.h"
#include "channel_ops/cpu/channel_engine.h"
#include "common/channel_block.h"
#include "ort_util.h"

namespace deltaonnx {

template <const OpSchema& Schema>
ChannelOpKernel<Schema>::ChannelOpKernel(const OrtKernelInfo* info)
    : SchemaKernel<Schema>(info),
      attributes_(read_channel_op_attributes(AttributeReader(info), /*with_channels=*/kIsGlobalPool<Schema>)),
      block_(cpu_channel_block()) {}

template <const OpSchema& Schema>
void ChannelOpKernel<Schema>::compute(OrtKernelContext* raw) const {
  Ort::KernelContext ctx(raw);
  const KernelInputs in(ctx);
  if constexpr (kIsGlobalPool<Schema>)
    global_pool(prepare_global_pool(ctx, in, attributes_, block_), ort_parallel_for(ctx));
  else
    channel_scale(prepare_channel_scale(ctx, in, attributes_, block_), ort_parallel_for(ctx));
}

template class ChannelOpKernel<kGlobalPoolSchema>;
template class ChannelOpKernel<kChannelScaleSchema>;

}  // namespace deltaonnx

#include "channel_ops/cuda/channel_cuda_ops.h"

#include "channel_ops/channel_launch.h"
#include "channel_ops/cuda/channel_kernels.h"

namespace deltaonnx {
namespace cuda {

template <const OpSchema& Schema>
void ChannelOpCudaKernel<Schema>::compute(OrtKernelContext* raw_context) const {
  Ort::KernelContext ctx(raw_context);
  const KernelInputs in(ctx);
  if constexpr (kIsGlobalPool<Schema>)
    check_cuda(launch_global_pool(prepare_global_pool(ctx, in, attributes_, /*block=*/1), compute_stream(ctx)),
               "DeltaGlobalAveragePool");
  else
    check_cuda(launch_channel_scale(prepare_channel_scale(ctx, in, attributes_, /*block=*/1), compute_stream(ctx)),
               "DeltaChannelScale");
}

template class ChannelOpCudaKernel<kGlobalPoolSchema>;
template class ChannelOpCudaKernel<kChannelScaleSchema>;

}  // namespace cuda
}  // namespace deltaonnx

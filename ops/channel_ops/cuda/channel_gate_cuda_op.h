// DeltaChannelGate for ORT's CUDAExecutionProvider (docs/ops.md#deltachannelgate): the pool, the two 1x1 convs and
// the change flags as small kernels on ORT's compute stream (channel_kernels.h). The CUDA library's channel block is 1,
// so "blocked" runs as "nchw" (as DeltaGlobalAveragePool's, channel_cuda_ops.h).
#pragma once
#include <onnxruntime_cxx_api.h>

#include "cuda_common/ort_support.h"
#include "op_definition/delta_attributes.h"
#include "op_definition/op_schemas.h"

namespace deltaonnx {
namespace cuda {

class ChannelGateCudaKernel : public SchemaKernel<kChannelGateSchema> {
 public:
  explicit ChannelGateCudaKernel(const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
  ChannelGateAttributes attributes_;
};

struct ChannelGateCudaOp : SchemaOp<ChannelGateCudaOp, ChannelGateCudaKernel, kChannelGateSchema> {
  const char* GetExecutionProviderType() const { return kExecutionProvider; }
};

}  // namespace cuda
}  // namespace deltaonnx

// DeltaGlobalAveragePool and DeltaChannelScale for ORT's CUDAExecutionProvider. The CUDA library's channel block is
// 1 (docs/ops.md#blocked-layout: its blocked tensors are plain NCHW), so "blocked" runs as "nchw".
#pragma once
#include <onnxruntime_cxx_api.h>

#include "cuda_common/ort_support.h"
#include "op_definition/delta_attributes.h"
#include "op_definition/op_schemas.h"

namespace deltaonnx {
namespace cuda {

class GlobalPoolCudaKernel : public SchemaKernel<kGlobalPoolSchema> {
 public:
  explicit GlobalPoolCudaKernel(const OrtKernelInfo* info)
      : SchemaKernel(info), attributes_(read_channel_op_attributes(AttributeReader(info), /*with_channels=*/true)) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
  ChannelOpAttributes attributes_;
};

class ChannelScaleCudaKernel : public SchemaKernel<kChannelScaleSchema> {
 public:
  explicit ChannelScaleCudaKernel(const OrtKernelInfo* info)
      : SchemaKernel(info), attributes_(read_channel_op_attributes(AttributeReader(info), /*with_channels=*/false)) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
  ChannelOpAttributes attributes_;
};

struct GlobalPoolCudaOp : SchemaOp<GlobalPoolCudaOp, GlobalPoolCudaKernel, kGlobalPoolSchema> {
  const char* GetExecutionProviderType() const { return kExecutionProvider; }
};
struct ChannelScaleCudaOp : SchemaOp<ChannelScaleCudaOp, ChannelScaleCudaKernel, kChannelScaleSchema> {
  const char* GetExecutionProviderType() const { return kExecutionProvider; }
};

}  // namespace cuda
}  // namespace deltaonnx

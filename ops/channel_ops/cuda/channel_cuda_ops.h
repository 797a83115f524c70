// DeltaGlobalAveragePool and DeltaChannelScale for ORT's CUDAExecutionProvider. The CUDA library's channel block is
// 1 (docs/ops.md#blocked-layout: its blocked tensors are plain NCHW), so "blocked" runs as "nchw". One kernel class
// for both, as on the CPU (channel_ops/cpu/channel_kernels.h).
#pragma once
#include <onnxruntime_cxx_api.h>

#include "cuda_common/ort_support.h"
#include "op_definition/delta_attributes.h"
#include "op_definition/op_schemas.h"

namespace deltaonnx {
namespace cuda {

template <const OpSchema& Schema>
class ChannelOpCudaKernel : public SchemaKernel<Schema> {
 public:
  explicit ChannelOpCudaKernel(const OrtKernelInfo* info)
      : SchemaKernel<Schema>(info),
        attributes_(read_channel_op_attributes(AttributeReader(info), kIsGlobalPool<Schema>)) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return this->guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
  ChannelOpAttributes attributes_;
};

template <const OpSchema& Schema>
struct ChannelOpCudaOp : SchemaOp<ChannelOpCudaOp<Schema>, ChannelOpCudaKernel<Schema>, Schema> {
  const char* GetExecutionProviderType() const { return kExecutionProvider; }
};
using GlobalPoolCudaOp = ChannelOpCudaOp<kGlobalPoolSchema>;
using ChannelScaleCudaOp = ChannelOpCudaOp<kChannelScaleSchema>;

}  // namespace cuda
}  // namespace deltaonnx

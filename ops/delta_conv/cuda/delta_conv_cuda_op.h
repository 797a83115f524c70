// DeltaConv for ORT's CUDAExecutionProvider: the op as op_definition/ declares it for every provider, with a
// kernel that runs the shared device pipeline and the gather-GEMM.
#pragma once
#include <onnxruntime_cxx_api.h>

#include "cuda_common/ort_support.h"
#include "op_definition/delta_attributes.h"
#include "op_definition/op_schemas.h"

namespace deltaonnx {
namespace cuda {

class DeltaConvCudaKernel : public SchemaKernel<kDeltaConvSchema> {
 public:
  explicit DeltaConvCudaKernel(const OrtKernelInfo* info)
      : SchemaKernel(info), attributes_(read_delta_conv_attributes(AttributeReader(info))) {
    refuse_block_gate(attributes_.knobs, "CUDA");
  }
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
  DeltaConvAttributes attributes_;
};

struct DeltaConvCudaOp : SchemaOp<DeltaConvCudaOp, DeltaConvCudaKernel, kDeltaConvSchema> {
  const char* GetExecutionProviderType() const { return kExecutionProvider; }
};

}  // namespace cuda
}  // namespace deltaonnx

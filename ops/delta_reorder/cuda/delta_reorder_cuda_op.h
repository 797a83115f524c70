// DeltaReorder for ORT's CUDAExecutionProvider. The CUDA library's channel block is 1 (docs/ops.md#blocked-layout:
// its blocked tensors are plain NCHW), so either direction is a device copy on ORT's compute stream.
#pragma once
#include <onnxruntime_cxx_api.h>

#include "cuda_common/ort_support.h"
#include "op_definition/delta_attributes.h"
#include "op_definition/op_schemas.h"

namespace deltaonnx {
namespace cuda {

class DeltaReorderCudaKernel : public SchemaKernel<kDeltaReorderSchema> {
 public:
  // The attribute is read (and a bad one refused) as on the CPU, although both directions copy.
  explicit DeltaReorderCudaKernel(const OrtKernelInfo* info)
      : SchemaKernel(info), attributes_(read_delta_reorder_attributes(AttributeReader(info))) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
  ReorderAttributes attributes_;
};

struct DeltaReorderCudaOp : SchemaOp<DeltaReorderCudaOp, DeltaReorderCudaKernel, kDeltaReorderSchema> {
  const char* GetExecutionProviderType() const { return kExecutionProvider; }
};

}  // namespace cuda
}  // namespace deltaonnx

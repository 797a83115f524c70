// DeltaResize for ORT's CUDAExecutionProvider. The CUDA library's channel block is 1 (docs/ops.md#blocked-layout:
// its blocked tensors are plain NCHW), so "blocked" runs as "nchw": the kernels of resize_kernel.cu.
#pragma once
#include <onnxruntime_cxx_api.h>

#include "cuda_common/ort_support.h"
#include "op_definition/delta_attributes.h"
#include "op_definition/op_schemas.h"

namespace deltaonnx {
namespace cuda {

class DeltaResizeCudaKernel : public SchemaKernel<kDeltaResizeSchema> {
 public:
  explicit DeltaResizeCudaKernel(const OrtKernelInfo* info)
      : SchemaKernel(info), attributes_(read_delta_resize_attributes(AttributeReader(info))) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
  ResizeAttributes attributes_;
};

struct DeltaResizeCudaOp : SchemaOp<DeltaResizeCudaOp, DeltaResizeCudaKernel, kDeltaResizeSchema> {
  const char* GetExecutionProviderType() const { return kExecutionProvider; }
};

}  // namespace cuda
}  // namespace deltaonnx

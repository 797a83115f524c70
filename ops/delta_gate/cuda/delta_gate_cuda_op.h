// DeltaGate for ORT's CUDAExecutionProvider: the op as op_definition/ declares it, computed by the verdict and
// apply kernels (gate_step.h) on ORT's compute stream.
#pragma once
#include <onnxruntime_cxx_api.h>

#include "cuda_common/ort_support.h"
#include "delta_gate/gate_spec.h"
#include "op_definition/op_schemas.h"

namespace deltaonnx {
namespace cuda {

class DeltaGateCudaKernel : public SchemaKernel<kDeltaGateSchema> {
 public:
  explicit DeltaGateCudaKernel(const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
  GateSpec spec_;
};

struct DeltaGateCudaOp : SchemaOp<DeltaGateCudaOp, DeltaGateCudaKernel, kDeltaGateSchema> {
  const char* GetExecutionProviderType() const { return kExecutionProvider; }
};

}  // namespace cuda
}  // namespace deltaonnx

// DeltaPool (MaxPool) for ORT's CPU execution provider: the op as op_definition/ declares it for every
// provider; immutable after creation like DeltaConvKernel. layout = "blocked" runs the same engine on lines.
#pragma once
#include <onnxruntime_cxx_api.h>

#include "delta_pool/cpu/pool_engine.h"
#include "op_definition/delta_attributes.h"
#include "op_definition/op_schemas.h"

namespace deltaonnx {

class DeltaPoolKernel : public SchemaKernel<kDeltaPoolSchema> {
 public:
  explicit DeltaPoolKernel(const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
  PoolSpec spec_;
  int64_t block_ = 1;  // layout "blocked": the library's channel block (X, X_ref, Y, Y_prev hold lines of it)
};

struct DeltaPoolOp : SchemaOp<DeltaPoolOp, DeltaPoolKernel, kDeltaPoolSchema> {};

}  // namespace deltaonnx

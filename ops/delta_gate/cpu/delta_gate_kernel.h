// DeltaGate for ORT's CPU execution provider: the op as op_definition/ declares it, computed by the engine
// (ops/delta_gate/gate_engine.h) on ORT's thread pool.
#pragma once
#include <onnxruntime_cxx_api.h>

#include "delta_gate/gate_engine.h"
#include "op_definition/op_schemas.h"

namespace deltaonnx {

class DeltaGateKernel : public SchemaKernel<kDeltaGateSchema> {
 public:
  explicit DeltaGateKernel(const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
  GateSpec spec_;
};

struct DeltaGateOp : SchemaOp<DeltaGateOp, DeltaGateKernel, kDeltaGateSchema> {};

}  // namespace deltaonnx

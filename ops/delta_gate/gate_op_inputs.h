// DeltaGate's attributes and tensors read once for every execution provider (the CPU kernel and the CUDA op):
// the type-strict attribute reader of op_definition/, rule 1 from the shapes, the external map's resolution.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <vector>

#include "delta_gate/gate_engine.h"
#include "op_definition/ort_tensors.h"

namespace deltaonnx {

// rule, threshold, gate_block, gate_hard; a wrong type or value is a UserError naming the attribute.
GateSpec read_gate_spec(const OrtKernelInfo* info);

struct GateInputs {
  Shape shape;                  // X's [N,C,H,W]
  GateRun run;                  // x, x_ref (nullptr without state), map_in; outputs not yet set
};

// X, X_ref and the optional map (empty: no map) of this run; errors are UserError.
GateInputs read_gate_inputs(const Ort::KernelContext& ctx, const GateSpec& spec);

}  // namespace deltaonnx

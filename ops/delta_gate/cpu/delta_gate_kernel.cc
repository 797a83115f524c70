#include "delta_gate/cpu/delta_gate_kernel.h"

#include "common/kernel_table.h"
#include "delta_gate/gate_op_inputs.h"
#include "ort_util.h"

namespace deltaonnx {

DeltaGateKernel::DeltaGateKernel(const OrtKernelInfo* info) : SchemaKernel(info), spec_(read_gate_spec(info)) {}

void DeltaGateKernel::compute(OrtKernelContext* raw) const {
  Ort::KernelContext ctx(raw);
  GateInputs in = read_gate_inputs(ctx, spec_);
  const Shape& xs = in.shape;
  in.run.x_gated = output_of(ctx, delta_gate::kXGated, xs).GetTensorMutableData<float>();
  in.run.map_out = output_of(ctx, delta_gate::kMapOut, map_shape_of(xs)).GetTensorMutableData<uint8_t>();
  run_gate(spec_, in.run, kernels(), ort_parallel_for(ctx));
}

}  // namespace deltaonnx

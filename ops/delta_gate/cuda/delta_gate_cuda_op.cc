#include "delta_gate/cuda/delta_gate_cuda_op.h"

#include "delta_gate/cuda/gate_kernel.h"
#include "delta_gate/gate_op_inputs.h"

namespace deltaonnx {
namespace cuda {

DeltaGateCudaKernel::DeltaGateCudaKernel(const OrtKernelInfo* info) : SchemaKernel(info), spec_(read_gate_spec(info)) {}

void DeltaGateCudaKernel::compute(OrtKernelContext* raw) const {
  Ort::KernelContext ctx(raw);
  const GateInputs in = read_gate_inputs(ctx, spec_);
  const Shape& xs = in.shape;
  float* gated = output_of(ctx, delta_gate::kXGated, xs).GetTensorMutableData<float>();
  uint8_t* map_out = output_of(ctx, delta_gate::kMapOut, map_shape_of(xs)).GetTensorMutableData<uint8_t>();
  const int64_t plane = xs[2] * xs[3], volume = xs[0] * xs[1] * plane;
  if (volume == 0) return;
  const cudaStream_t stream = compute_stream(ctx);
  if (in.run.x_ref == nullptr) {  // rule 1: the whole frame passes
    check_cuda(cudaMemcpyAsync(gated, in.run.x, sizeof(float) * volume, cudaMemcpyDeviceToDevice, stream), "gate copy");
    check_cuda(cudaMemsetAsync(map_out, 1, xs[0] * plane, stream), "gate map");
    return;
  }
  GateStep step = make_gate_step(spec_, xs[0], xs[1], xs[2], xs[3]);
  step.x = in.run.x;
  step.x_ref = in.run.x_ref;
  step.x_gated = gated;
  step.marks = in.run.map_in;
  step.marks_per_block = in.run.map_per_block;
  step.map_out = map_out;
  DeviceScratch scratch(ctx, ctx.GetInput(delta_gate::kX), DeviceScratch::align_up(step.verdict_threads()));
  step.verdicts = scratch.take<uint8_t>(step.verdict_threads());
  check_cuda(launch_gate(step, stream), "gate");
}

}  // namespace cuda
}  // namespace deltaonnx

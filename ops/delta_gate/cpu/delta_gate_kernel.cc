#include "delta_gate/cpu/delta_gate_kernel.h"

#include "common/kernel_table.h"
#include "ort_util.h"

namespace deltaonnx {

DeltaGateKernel::DeltaGateKernel(const OrtApi&, const OrtKernelInfo* raw) {
  Ort::ConstKernelInfo info(raw);
  node_ = info.GetNodeName();
  const std::string rule = attribute_or<std::string>(info, "rule", "block");
  const float tau = attribute_or<float>(info, "threshold", 0.f);
  const int64_t block = attribute_or<int64_t>(info, "gate_block", kDefaultGateBlock);
  const float hard = attribute_or<float>(info, "gate_hard", -1.f);
  const std::string error = GateSpec::make(rule, tau, block, hard, &spec_);
  if (!error.empty()) throw UserError("node '" + node_ + "' (DeltaGate): " + error);
}

OrtStatusPtr DeltaGateKernel::ComputeV2(OrtKernelContext* raw) {
  return guarded("DeltaGate", node_, [&] {
    Ort::KernelContext ctx(raw);
    Ort::ConstValue x = ctx.GetInput(0);
    const std::vector<int64_t> xs = x.GetTensorTypeAndShapeInfo().GetShape();
    if (xs.size() != 4) throw UserError("node '" + node_ + "': X must be 4-D NCHW, got " + shape_string(xs));
    GateRun run;
    run.batch = xs[0];
    run.channels = xs[1];
    run.height = xs[2];
    run.width = xs[3];
    run.x = x.GetTensorData<float>();
    if (has_input(ctx, 1)) {  // rule 1: empty, or another shape, is no state
      Ort::ConstValue ref = ctx.GetInput(1);
      if (ref.GetTensorTypeAndShapeInfo().GetShape() == xs) run.x_ref = ref.GetTensorData<float>();
    }
    if (has_input(ctx, 2)) {
      Ort::ConstValue map = ctx.GetInput(2);
      const std::vector<int64_t> ms = map.GetTensorTypeAndShapeInfo().GetShape();
      if (!is_empty_shape(ms)) {
        if (ms.size() != 4 || ms[0] != xs[0] || ms[1] != 1)
          throw UserError("node '" + node_ + "': the change map must be [N,1,H,W] or one cell per block, got " +
                          shape_string(ms) + " for X " + shape_string(xs));
        const std::string e = check_gate_map(spec_, xs[2], xs[3], ms[2], ms[3], &run.map_per_block);
        if (!e.empty()) throw UserError("node '" + node_ + "': " + e);
        run.map_in = map.GetTensorData<uint8_t>();
      }
    }
    run.x_gated = ctx.GetOutput(0, xs).GetTensorMutableData<float>();
    run.map_out = ctx.GetOutput(1, {xs[0], 1, xs[2], xs[3]}).GetTensorMutableData<uint8_t>();
    run_gate(spec_, run, kernels(), ort_parallel_for(ctx));
  });
}

OrtStatusPtr DeltaGateOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
  return guarded("DeltaGate", "", [&] { *kernel = new DeltaGateKernel(api, info); });
}

}  // namespace deltaonnx

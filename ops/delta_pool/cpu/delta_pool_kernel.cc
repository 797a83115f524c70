#include "delta_pool/cpu/delta_pool_kernel.h"

#include "common/channel_block.h"
#include "ort_util.h"

namespace deltaonnx {

using namespace delta_pool;

DeltaPoolKernel::DeltaPoolKernel(const OrtKernelInfo* info) : SchemaKernel(info) {
  const DeltaPoolAttributes a = read_delta_pool_attributes(AttributeReader(info));
  spec_.window = a.window;
  spec_.threshold = a.knobs.threshold;
  spec_.dense_fraction = a.knobs.dense_fraction;
  spec_.gate = a.knobs.gate;
  if (a.layout == TensorLayout::kBlocked) block_ = cpu_channel_block();
}

void DeltaPoolKernel::compute(OrtKernelContext* raw) const {
  Ort::KernelContext ctx(raw);
  const KernelInputs in(ctx);
  const Shape xs = input_shape_4d(in, kX, "X");
  const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
  check_channel_block(xs, block_, "X (layout \"blocked\")");
  const OutputGeometry out_geometry = output_geometry(spec_.window, xs, C);
  const Window2D& win = out_geometry.window;
  const Shape& ys = out_geometry.shape;
  const StateInputs st = read_state_inputs(in, kXRef, kYPrev, kMapIn, xs, ys, spec_.threshold);
  const DeltaOutputs out = delta_outputs(ctx, xs, ys, st);
  if (N * C * H * W == 0 || win.y.out * win.x.out == 0) return;
  if (carry_unmarked_run(st, out, nullptr, xs, ys)) return;

  PoolRun run;
  fill_delta_run(run, xs, in.data<float>(kX), st, out);
  run.block = block_;
  run_delta_pool(spec_, run, ort_parallel_for(ctx));
}

}  // namespace deltaonnx

#include "delta_pool/cpu/delta_pool_kernel.h"

#include "ort_util.h"

namespace deltaonnx {

namespace {
enum Input { kX = 0, kXRef, kYPrev, kMapIn };
enum Output { kY = 0, kXRefNext, kMapOut };
}  // namespace

DeltaPoolKernel::DeltaPoolKernel(const OrtApi&, const OrtKernelInfo* raw_info) {
  Ort::ConstKernelInfo info(raw_info);
  node_ = info.GetNodeName();
  auto fail = [&](const std::string& attr, const std::string& why) {
    throw UserError("node '" + node_ + "': attribute '" + attr + "' " + why);
  };
  spec_.window = read_window(info, node_, {});
  const int64_t ceil_mode = attribute_or<int64_t>(info, "ceil_mode", 0);
  if (ceil_mode != 0 && ceil_mode != 1) fail("ceil_mode", "must be 0 or 1");
  spec_.window.ceil_mode = ceil_mode == 1;
  if (attribute_or<int64_t>(info, "storage_order", 0) != 0)
    fail("storage_order", "must be 0 (DeltaPool has no Indices output)");
  spec_.threshold = attribute_or<float>(info, "threshold", 0.f);
  spec_.dense_fraction = attribute_or<float>(info, "dense_fraction", 0.5f);
  std::string e = spec_.validate();
  if (!e.empty()) throw UserError("node '" + node_ + "': " + e);
}

OrtStatusPtr DeltaPoolKernel::ComputeV2(OrtKernelContext* context) {
  return guarded("DeltaPool", node_, [&] { compute(context); });
}

void DeltaPoolKernel::compute(OrtKernelContext* raw) {
  Ort::KernelContext ctx(raw);
  auto err = [&](const std::string& what) { throw UserError("node '" + node_ + "': " + what); };
  Ort::ConstValue x = ctx.GetInput(kX);
  const std::vector<int64_t> xs = x.GetTensorTypeAndShapeInfo().GetShape();
  if (xs.size() != 4) err("X must be 4-D NCHW, got shape " + shape_string(xs));
  const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
  const Window2D win = spec_.window.resolve(H, W);
  if (H > 0 && W > 0 && (win.y.out < 1 || win.x.out < 1))
    err("input " + std::to_string(H) + "x" + std::to_string(W) + " is smaller than the pool's window");
  const std::vector<int64_t> ys{N, C, win.y.out, win.x.out};
  const StateInputs st = read_state_inputs(ctx, node_, kXRef, kYPrev, kMapIn, xs, ys, spec_.threshold);
  Ort::UnownedValue y = ctx.GetOutput(kY, ys);
  // A dropped reference has an empty (or absent) X_ref_next.
  Ort::UnownedValue x_ref_next = ctx.GetOutput(kXRefNext, st.reference_dropped ? std::vector<int64_t>{0, 0, 0, 0} : xs);
  if (!st.reference_dropped && static_cast<OrtValue*>(x_ref_next) == nullptr)
    err("the output X_ref_next may be left out only without an X_ref input");
  Ort::UnownedValue map_out = ctx.GetOutput(kMapOut, {N, 1, win.y.out, win.x.out});
  if (N * C * H * W == 0 || win.y.out * win.x.out == 0) return;

  PoolRun run;
  fill_delta_run(run, xs, x, st, y, x_ref_next, map_out);
  run_delta_pool(spec_, run, ort_parallel_for(ctx));
}

OrtStatusPtr DeltaPoolOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
  std::string node;
  try {
    node = Ort::ConstKernelInfo(info).GetNodeName();
  } catch (...) {
  }
  return guarded("DeltaPool", node, [&] { *kernel = new DeltaPoolKernel(api, info); });
}

ONNXTensorElementDataType DeltaPoolOp::GetInputType(size_t index) const {
  return index == kMapIn ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}

OrtCustomOpInputOutputCharacteristic DeltaPoolOp::GetInputCharacteristic(size_t index) const {
  return (index == kXRef || index == kMapIn) ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
}

ONNXTensorElementDataType DeltaPoolOp::GetOutputType(size_t index) const {
  return index == kMapOut ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}

}  // namespace deltaonnx

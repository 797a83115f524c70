#include "delta_conv/cpu/delta_conv_kernel.h"

#include "ort_util.h"

namespace deltaonnx {

namespace {
enum Input { kX = 0, kW, kB, kXRef, kYPrev, kMapIn };
enum Output { kY = 0, kXRefNext, kMapOut };
}  // namespace

DeltaConvKernel::DeltaConvKernel(const OrtApi&, const OrtKernelInfo* raw_info) {
  Ort::ConstKernelInfo info(raw_info);
  node_ = info.GetNodeName();
  auto fail = [&](const std::string& attr, const std::string& why) {
    throw UserError("node '" + node_ + "': attribute '" + attr + "' " + why);
  };
  int is_constant = 0;
  Ort::ConstValue w = info.GetTensorConstantInput(kW, &is_constant);
  std::vector<int64_t> w_shape;
  if (is_constant) {
    w_shape = w.GetTensorTypeAndShapeInfo().GetShape();
    if (w_shape.size() != 4)
      throw UserError("node '" + node_ + "': W must be 4-D [M, C/group, kH, kW], got " + shape_string(w_shape));
  }
  std::vector<int64_t> kernel_fallback;
  if (is_constant) kernel_fallback = {w_shape[2], w_shape[3]};
  spec_.window = read_window(info, node_, kernel_fallback);
  spec_.group = attribute_or<int64_t>(info, "group", 1);
  if (spec_.group < 1) fail("group", "must be >= 1");
  std::string act = attribute_or<std::string>(info, "activation", "");
  if (!parse_activation(act, &spec_.activation)) fail("activation", "has the unsupported value '" + act + "'");
  spec_.activation_params = attributes_or<float>(info, "activation_params", {});
  spec_.threshold = attribute_or<float>(info, "threshold", 0.f);
  spec_.dense_fraction = attribute_or<float>(info, "dense_fraction", 0.5f);
  if (!(spec_.threshold >= 0.f) || !std::isfinite(spec_.threshold)) fail("threshold", "must be finite and >= 0");
  if (!(spec_.dense_fraction >= 0.f && spec_.dense_fraction <= 1.f)) fail("dense_fraction", "must be in [0, 1]");
  if (is_constant) {
    if (w_shape[2] != spec_.window.kernel_h || w_shape[3] != spec_.window.kernel_w)
      fail("kernel_shape", "does not match W's shape " + shape_string(w_shape));
    spec_.out_channels = w_shape[0];
    spec_.in_channels_per_group = w_shape[1];
    std::string e = spec_.validate();
    if (!e.empty()) throw UserError("node '" + node_ + "': " + e);
    packed_ = std::make_unique<PackedConvWeights>(spec_, w.GetTensorData<float>(), kernels());
    dense_ = NchwcDenseConv::create(raw_info, spec_, w.GetTensorData<float>());
    spec_from_weights_ = true;
  } else if (spec_.activation == Activation::kPRelu && spec_.activation_params.empty()) {
    fail("activation_params", "must give PRelu's slope");
  }
}

OrtStatusPtr DeltaConvKernel::ComputeV2(OrtKernelContext* context) {
  return guarded("DeltaConv", node_, [&] { compute(context); });
}

void DeltaConvKernel::compute(OrtKernelContext* raw) {
  Ort::KernelContext ctx(raw);
  auto err = [&](const std::string& what) { throw UserError("node '" + node_ + "': " + what); };
  Ort::ConstValue x = ctx.GetInput(kX);
  const std::vector<int64_t> xs = x.GetTensorTypeAndShapeInfo().GetShape();
  if (xs.size() != 4) err("X must be 4-D NCHW, got shape " + shape_string(xs));

  ConvSpec spec = spec_;
  std::unique_ptr<PackedConvWeights> packed_now;
  const PackedConvWeights* packed = packed_.get();
  if (!spec_from_weights_) {  // W is computed by the graph: check and pack it for this run
    Ort::ConstValue w = ctx.GetInput(kW);
    const std::vector<int64_t> ws = w.GetTensorTypeAndShapeInfo().GetShape();
    if (ws.size() != 4 || ws[2] != spec.window.kernel_h || ws[3] != spec.window.kernel_w)
      err("W has shape " + shape_string(ws) + ", which does not match kernel_shape");
    spec.out_channels = ws[0];
    spec.in_channels_per_group = ws[1];
    std::string e = spec.validate();
    if (!e.empty()) err(e);
    packed_now = std::make_unique<PackedConvWeights>(spec, w.GetTensorData<float>(), kernels());
    packed = packed_now.get();
  }
  const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3], M = spec.out_channels;
  if (C != spec.in_channels_per_group * spec.group)
    err("X has " + std::to_string(C) + " channels but W and group expect " +
        std::to_string(spec.in_channels_per_group * spec.group));
  const Window2D win = spec.window.resolve(H, W);
  if (H > 0 && W > 0 && (win.y.out < 1 || win.x.out < 1))
    err("input " + std::to_string(H) + "x" + std::to_string(W) + " is smaller than the kernel's window");
  const std::vector<int64_t> ys{N, M, win.y.out, win.x.out};

  const float* bias = nullptr;
  if (has_input(ctx, kB)) {
    Ort::ConstValue b = ctx.GetInput(kB);
    const std::vector<int64_t> bs = b.GetTensorTypeAndShapeInfo().GetShape();
    if (bs.size() != 1 || bs[0] != M) err("B must have shape [" + std::to_string(M) + "], got " + shape_string(bs));
    bias = b.GetTensorData<float>();
  }
  const StateInputs st = read_state_inputs(ctx, node_, kXRef, kYPrev, kMapIn, xs, ys, spec.threshold);
  Ort::UnownedValue y = ctx.GetOutput(kY, ys);
  // A dropped reference has an empty (or absent) X_ref_next.
  Ort::UnownedValue x_ref_next = ctx.GetOutput(kXRefNext, st.reference_dropped ? std::vector<int64_t>{0, 0, 0, 0} : xs);
  if (!st.reference_dropped && static_cast<OrtValue*>(x_ref_next) == nullptr)
    err("the output X_ref_next may be left out only without an X_ref input");
  Ort::UnownedValue map_out = ctx.GetOutput(kMapOut, {N, 1, win.y.out, win.x.out});
  if (N * C * H * W == 0 || win.y.out * win.x.out * M == 0) return;

  ConvRun run;
  fill_delta_run(run, xs, x, st, y, x_ref_next, map_out);
  run.bias = bias;
  DenseItemConv dense;
  if (dense_ != nullptr && (st.reference_dropped || !dense_->own_engine_reads_in_place())) {
    const int64_t Ho = win.y.out, Wo = win.x.out;
    dense = [&](const float* src, float* item_y) { return dense_->compute(raw, src, H, W, bias, item_y, Ho, Wo); };
  }
  run_delta_conv(spec, *packed, run, ort_parallel_for(ctx), nullptr, &dense);
}

OrtStatusPtr DeltaConvOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
  std::string node;
  try {
    node = Ort::ConstKernelInfo(info).GetNodeName();
  } catch (...) {
  }
  return guarded("DeltaConv", node, [&] { *kernel = new DeltaConvKernel(api, info); });
}

ONNXTensorElementDataType DeltaConvOp::GetInputType(size_t index) const {
  return index == kMapIn ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}

OrtCustomOpInputOutputCharacteristic DeltaConvOp::GetInputCharacteristic(size_t index) const {
  return (index == kB || index == kXRef || index == kMapIn) ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
}

ONNXTensorElementDataType DeltaConvOp::GetOutputType(size_t index) const {
  return index == kMapOut ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}

}  // namespace deltaonnx

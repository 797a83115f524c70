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
  Ort::ConstValue x_ref = ctx.GetInput(kXRef);
  Ort::ConstValue y_prev = ctx.GetInput(kYPrev);
  if (static_cast<const OrtValue*>(x_ref) == nullptr || static_cast<const OrtValue*>(y_prev) == nullptr)
    err("the state inputs X_ref and Y_prev are required (feed empty tensors on the first frame)");
  const std::vector<int64_t> rs = x_ref.GetTensorTypeAndShapeInfo().GetShape();
  const bool has_state = !is_empty_shape(rs) && rs == xs;
  const std::vector<int64_t> ps = y_prev.GetTensorTypeAndShapeInfo().GetShape();
  if (has_state && ps != ys)
    err("state Y_prev has shape " + shape_string(ps) + " but this run's output is " + shape_string(ys) +
        " (state from another model or stream?)");
  const uint8_t* map_in = nullptr;
  if (has_input(ctx, kMapIn)) {
    Ort::ConstValue m = ctx.GetInput(kMapIn);
    const std::vector<int64_t> ms = m.GetTensorTypeAndShapeInfo().GetShape();
    const std::vector<int64_t> want{N, 1, H, W};
    if (ms != want) err("change map input has shape " + shape_string(ms) + ", expected " + shape_string(want));
    map_in = m.GetTensorData<uint8_t>();
  }
  Ort::UnownedValue y = ctx.GetOutput(kY, ys);
  Ort::UnownedValue x_ref_next = ctx.GetOutput(kXRefNext, xs);
  Ort::UnownedValue map_out = ctx.GetOutput(kMapOut, {N, 1, win.y.out, win.x.out});
  if (N * C * H * W == 0 || win.y.out * win.x.out == 0) return;

  PoolRun run;
  run.batch = N;
  run.channels = C;
  run.height = H;
  run.width = W;
  run.x = x.GetTensorData<float>();
  run.x_ref = has_state ? x_ref.GetTensorData<float>() : nullptr;
  run.y_prev = has_state ? y_prev.GetTensorData<float>() : nullptr;
  run.map_in = map_in;
  run.y = y.GetTensorMutableData<float>();
  run.x_ref_next = x_ref_next.GetTensorMutableData<float>();
  run.map_out = map_out.GetTensorMutableData<uint8_t>();
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
  return index == kMapIn ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
}

ONNXTensorElementDataType DeltaPoolOp::GetOutputType(size_t index) const {
  return index == kMapOut ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}

}  // namespace deltaonnx

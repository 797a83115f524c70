#include "invoked_conv.h"

#include <stdexcept>
#include <vector>

#include "status_guard.h"

namespace ort_invoke {

// ORT finds the kernel whose registration starts at this version (or whose versioned range holds it):
// CPU Conv<float> is registered from opset 11 on.
constexpr int kConvSinceVersion = 11;

InvokedConvKernel::InvokedConvKernel(const OrtApi&, const OrtKernelInfo* raw_info) {
  Ort::ConstKernelInfo info(raw_info);
  geometry_ = ConvGeometry::read(info);
  input_count_ = info.GetInputCount();
  if (input_count_ < 2 || input_count_ > 3) throw std::invalid_argument("needs inputs X, W and optionally B");
  const char* type_names[] = {"T"};
  const ONNXTensorElementDataType type_values[] = {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT};
  std::vector<Ort::OpAttr> attrs = geometry_.op_attributes();
  conv_ = Ort::Op::Create(raw_info, "Conv", "", kConvSinceVersion, type_names, type_values, 1, attrs.data(),
                          attrs.size(), input_count_, 1);
}

OrtStatusPtr InvokedConvKernel::ComputeV2(OrtKernelContext* context) {
  return guarded("InvokedConv", [&] { compute(context); });
}

void InvokedConvKernel::compute(OrtKernelContext* raw) {
  Ort::KernelContext ctx(raw);
  Ort::ConstValue x = ctx.GetInput(0);
  Ort::ConstValue w = ctx.GetInput(1);
  const std::vector<int64_t> xs = x.GetTensorTypeAndShapeInfo().GetShape();
  const std::vector<int64_t> ws = w.GetTensorTypeAndShapeInfo().GetShape();
  if (xs.size() != 4 || ws.size() != 4)
    throw std::invalid_argument("X and W must be 4-D, got " + shape_string(xs) + " and " + shape_string(ws));
  const std::vector<int64_t> ys{xs[0], ws[0], geometry_.out_h(xs[2], ws[2]), geometry_.out_w(xs[3], ws[3])};
  if (ys[2] < 1 || ys[3] < 1) throw std::invalid_argument("input smaller than the kernel window");
  Ort::UnownedValue y = ctx.GetOutput(0, ys);  // allocated here: the invoked kernel writes into it

  const OrtValue* inputs[3] = {x, w, nullptr};
  if (input_count_ == 3) inputs[2] = ctx.GetInput(2);
  OrtValue* outputs[1] = {y};
  conv_.Invoke(raw, inputs, input_count_, outputs, 1);
}

OrtStatusPtr InvokedConvOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
  return guarded("InvokedConv", [&] { *kernel = new InvokedConvKernel(api, info); });
}

}  // namespace ort_invoke

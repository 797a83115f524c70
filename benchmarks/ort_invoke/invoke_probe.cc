#include "invoke_probe.h"

#include <cstdint>
#include <stdexcept>
#include <vector>

#include "status_guard.h"

namespace ort_invoke {

InvokeProbeKernel::InvokeProbeKernel(const OrtApi&, const OrtKernelInfo* raw_info) {
  Ort::ConstKernelInfo info(raw_info);
  mistake_ = info.GetAttribute<std::string>("mistake");
  geometry_ = ConvGeometry::read(info);
  if (mistake_ == "dangling_info") {
    saved_info_ = raw_info;
  } else if (mistake_ == "create_in_compute") {
    info_copy_ = info.Copy();
  } else {
    conv_ = create(raw_info);
  }
}

Ort::Op InvokeProbeKernel::create(const OrtKernelInfo* info) const {
  const char* type_names[] = {"T"};
  const ONNXTensorElementDataType type_values[] = {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT};
  int version = 11;
  if (mistake_.rfind("version_", 0) == 0) version = std::stoi(mistake_.substr(8));
  std::vector<Ort::OpAttr> attrs;
  if (mistake_ == "int32_attrs") {
    const ConvGeometry& g = geometry_;
    static thread_local std::vector<int32_t> s, p, d;  // the wrong width on purpose
    s.assign(g.strides.begin(), g.strides.end());
    p.assign(g.pads.begin(), g.pads.end());
    d.assign(g.dilations.begin(), g.dilations.end());
    attrs.emplace_back("strides", s.data(), static_cast<int>(s.size()), ORT_OP_ATTR_INTS);
    attrs.emplace_back("pads", p.data(), static_cast<int>(p.size()), ORT_OP_ATTR_INTS);
    attrs.emplace_back("dilations", d.data(), static_cast<int>(d.size()), ORT_OP_ATTR_INTS);
    attrs.emplace_back("group", &g.group, 1, ORT_OP_ATTR_INT);
  } else if (mistake_ == "int32_pads" || mistake_ == "len_in_bytes") {
    const ConvGeometry& g = geometry_;
    static thread_local std::vector<int32_t> p;
    p.assign(g.pads.begin(), g.pads.end());
    const int bytes = static_cast<int>(g.pads.size() * sizeof(int64_t));
    attrs.emplace_back("strides", g.strides.data(), 2, ORT_OP_ATTR_INTS);
    if (mistake_ == "int32_pads")
      attrs.emplace_back("pads", p.data(), static_cast<int>(p.size()), ORT_OP_ATTR_INTS);
    else  // the byte size where ORT wants the element count: it reads 32 values past a 4-value array
      attrs.emplace_back("pads", g.pads.data(), bytes, ORT_OP_ATTR_INTS);
    attrs.emplace_back("dilations", g.dilations.data(), 2, ORT_OP_ATTR_INTS);
    attrs.emplace_back("group", &g.group, 1, ORT_OP_ATTR_INT);
  } else if (mistake_ == "float_group") {
    const float group = static_cast<float>(geometry_.group);
    attrs.emplace_back("strides", geometry_.strides.data(), 2, ORT_OP_ATTR_INTS);
    attrs.emplace_back("pads", geometry_.pads.data(), 4, ORT_OP_ATTR_INTS);
    attrs.emplace_back("dilations", geometry_.dilations.data(), 2, ORT_OP_ATTR_INTS);
    attrs.emplace_back("group", &group, 1, ORT_OP_ATTR_FLOAT);
  } else if (mistake_ != "no_attrs") {
    attrs = geometry_.op_attributes();
  }
  const size_t inputs = mistake_ == "two_inputs" ? 2 : 3;
  return Ort::Op::Create(info, "Conv", "", version, type_names, type_values, 1, attrs.data(), attrs.size(), inputs, 1);
}

OrtStatusPtr InvokeProbeKernel::ComputeV2(OrtKernelContext* context) {
  return guarded("InvokeProbe", [&] { compute(context); });
}

void InvokeProbeKernel::compute(OrtKernelContext* raw) {
  Ort::KernelContext ctx(raw);
  Ort::ConstValue x = ctx.GetInput(0), w = ctx.GetInput(1), b = ctx.GetInput(2);
  const std::vector<int64_t> xs = x.GetTensorTypeAndShapeInfo().GetShape();
  const std::vector<int64_t> ws = w.GetTensorTypeAndShapeInfo().GetShape();
  const std::vector<int64_t> ys{xs[0], ws[0], geometry_.out_h(xs[2], ws[2]), geometry_.out_w(xs[3], ws[3])};
  Ort::UnownedValue y = ctx.GetOutput(0, ys);
  const OrtValue* inputs[3] = {x, w, b};
  OrtValue* outputs[1] = {y};
  if (mistake_ == "create_in_compute") {
    Ort::Op op = create(info_copy_);
    op.Invoke(raw, inputs, 3, outputs, 1);
    return;
  }
  if (mistake_ == "owning_wrappers") {
    // Ort::Value owns what it wraps: these release ORT's own input and output values when they go out of scope.
    Ort::Value in[3] = {Ort::Value(const_cast<OrtValue*>(inputs[0])), Ort::Value(const_cast<OrtValue*>(inputs[1])),
                        Ort::Value(const_cast<OrtValue*>(inputs[2]))};
    Ort::Value out[1] = {Ort::Value(outputs[0])};
    conv_.Invoke(raw, in, 3, out, 1);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(lazy_mutex_);
    if (mistake_ == "dangling_info" && !static_cast<const OrtOp*>(conv_)) conv_ = create(saved_info_);
  }
  conv_.Invoke(raw, inputs, 3, outputs, 1);
}

OrtStatusPtr InvokeProbeOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
  return guarded("InvokeProbe", [&] { *kernel = new InvokeProbeKernel(api, info); });
}

}  // namespace ort_invoke

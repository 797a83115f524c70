#include "conv_geometry.h"

#include <sstream>
#include <stdexcept>

namespace ort_invoke {

namespace {

std::vector<int64_t> ints_or(const Ort::ConstKernelInfo& info, const char* name, std::vector<int64_t> fallback) {
  try {
    return info.GetAttributes<int64_t>(name);
  } catch (const Ort::Exception&) {
    return fallback;
  }
}

}  // namespace

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? "," : "") << shape[i];
  s << ']';
  return s.str();
}

ConvGeometry ConvGeometry::read(const Ort::ConstKernelInfo& info) {
  ConvGeometry g;
  g.kernel_shape = ints_or(info, "kernel_shape", {});
  g.strides = ints_or(info, "strides", g.strides);
  g.pads = ints_or(info, "pads", g.pads);
  g.dilations = ints_or(info, "dilations", g.dilations);
  try {
    g.group = info.GetAttribute<int64_t>("group");
  } catch (const Ort::Exception&) {
  }
  std::string auto_pad = "NOTSET";
  try {
    auto_pad = info.GetAttribute<std::string>("auto_pad");
  } catch (const Ort::Exception&) {
  }
  if (auto_pad != "NOTSET") throw std::invalid_argument("only explicit pads are supported (auto_pad=" + auto_pad + ")");
  if (!g.kernel_shape.empty() && g.kernel_shape.size() != 2) throw std::invalid_argument("kernel_shape must have 2 values");
  if (g.strides.size() != 2 || g.dilations.size() != 2 || g.pads.size() != 4)
    throw std::invalid_argument("strides/dilations need 2 values and pads 4 (2-D Conv only)");
  if (g.group < 1) throw std::invalid_argument("group must be >= 1");
  return g;
}

std::vector<Ort::OpAttr> ConvGeometry::op_attributes() const {
  std::vector<Ort::OpAttr> attrs;
  attrs.reserve(5);
  auto ints = [&](const char* name, const std::vector<int64_t>& v) {
    attrs.emplace_back(name, v.data(), static_cast<int>(v.size()), ORT_OP_ATTR_INTS);
  };
  if (!kernel_shape.empty()) ints("kernel_shape", kernel_shape);
  ints("strides", strides);
  ints("pads", pads);
  ints("dilations", dilations);
  attrs.emplace_back("group", &group, 1, ORT_OP_ATTR_INT);
  return attrs;
}

}  // namespace ort_invoke

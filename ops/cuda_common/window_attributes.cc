#include "cuda_common/window_attributes.h"

#include <cmath>

namespace deltaonnx {
namespace cuda {
namespace {

void require_count(const AttributeReader& a, const char* name, const std::vector<int64_t>& v, size_t count) {
  if (v.size() != count) {
    a.fail(std::string("attribute '") + name + "' must have " + std::to_string(count) + " values, got " +
           std::to_string(v.size()) + " (only 2-D windows are supported)");
  }
}

void require_at_least(const AttributeReader& a, const char* name, const std::vector<int64_t>& v, int64_t least) {
  for (int64_t x : v) {
    if (x < least) a.fail(std::string("attribute '") + name + "' must be >= " + std::to_string(least) + ", got " + shape_string(v));
  }
}

}  // namespace

Axis WindowAttributes::axis(int dim, int64_t in, int64_t kernel) const {
  return resolve_window_axis(in, kernel, strides[dim], dilations[dim], pads[dim], pads[dim + 2], pad_mode, ceil_mode);
}

WindowAttributes read_window_attributes(const AttributeReader& a, bool pool) {
  WindowAttributes w;
  w.kernel_shape = a.get_ints("kernel_shape", {});
  if (pool || !w.kernel_shape.empty()) {
    if (pool && !a.has("kernel_shape")) a.fail("attribute 'kernel_shape' is required");
    require_count(a, "kernel_shape", w.kernel_shape, 2);
    require_at_least(a, "kernel_shape", w.kernel_shape, 1);
  }
  std::vector<int64_t> strides = a.get_ints("strides", {1, 1});
  require_count(a, "strides", strides, 2);
  require_at_least(a, "strides", strides, 1);
  std::vector<int64_t> dilations = a.get_ints("dilations", {1, 1});
  require_count(a, "dilations", dilations, 2);
  require_at_least(a, "dilations", dilations, 1);
  std::vector<int64_t> pads = a.get_ints("pads", {0, 0, 0, 0});
  require_count(a, "pads", pads, 4);
  require_at_least(a, "pads", pads, 0);
  for (int i = 0; i < 2; ++i) {
    w.strides[i] = strides[i];
    w.dilations[i] = dilations[i];
  }
  for (int i = 0; i < 4; ++i) w.pads[i] = pads[i];

  const std::string auto_pad = a.get_string("auto_pad", "NOTSET");
  if (!parse_pad_mode(auto_pad.c_str(), &w.pad_mode)) {
    a.fail("attribute 'auto_pad' must be NOTSET, SAME_UPPER, SAME_LOWER or VALID, got '" + auto_pad + "'");
  }

  if (pool) {
    const int64_t ceil_mode = a.get_int("ceil_mode", 0);
    if (ceil_mode != 0 && ceil_mode != 1) a.fail("attribute 'ceil_mode' must be 0 or 1");
    w.ceil_mode = ceil_mode == 1;
    if (a.get_int("storage_order", 0) != 0) a.fail("attribute 'storage_order' other than 0 is not supported");
  }

  w.threshold = a.get_float("threshold", 0.f);
  if (!std::isfinite(w.threshold) || w.threshold < 0.f) {
    a.fail("attribute 'threshold' must be finite and >= 0, got " + std::to_string(w.threshold));
  }
  w.dense_fraction = a.get_float("dense_fraction", 0.5f);
  if (!(w.dense_fraction >= 0.f)) {
    a.fail("attribute 'dense_fraction' must be >= 0, got " + std::to_string(w.dense_fraction));
  }
  return w;
}

ConvActivation read_conv_activation(const AttributeReader& a) {
  ConvActivation result;
  std::string error;
  if (!resolve_conv_activation(a.get_string("activation", ""), a.get_floats("activation_params", {}), &result, &error)) {
    a.fail(error);
  }
  return result;
}

}  // namespace cuda
}  // namespace deltaonnx

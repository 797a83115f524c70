#include "common/window_spec.h"

#include "common/checked_size.h"

namespace deltaonnx {

bool parse_auto_pad(const std::string& s, AutoPad* out) {
  if (s.empty() || s == "NOTSET") *out = AutoPad::kNotSet;
  else if (s == "SAME_UPPER") *out = AutoPad::kSameUpper;
  else if (s == "SAME_LOWER") *out = AutoPad::kSameLower;
  else if (s == "VALID") *out = AutoPad::kValid;
  else return false;
  return true;
}

std::string WindowSpec::validate() const {
  const std::string limit = std::to_string(kMaxWindowExtent);
  auto in_range = [&](int64_t v, int64_t least) { return v >= least && v <= kMaxWindowExtent; };
  if (!in_range(kernel_h, 1) || !in_range(kernel_w, 1)) return "attribute 'kernel_shape' must lie in [1, " + limit + "]";
  if (!in_range(stride_h, 1) || !in_range(stride_w, 1)) return "attribute 'strides' must lie in [1, " + limit + "]";
  if (!in_range(dilation_h, 1) || !in_range(dilation_w, 1)) return "attribute 'dilations' must lie in [1, " + limit + "]";
  for (int64_t p : pads)
    if (!in_range(p, 0)) return "attribute 'pads' must lie in [0, " + limit + "]";
  return "";
}

std::string WindowSpec::check_input(int64_t H, int64_t W) const {
  if (H < 0 || W < 0 || H > kMaxSpatialExtent || W > kMaxSpatialExtent)
    return "input extent " + std::to_string(H) + "x" + std::to_string(W) + " is out of range";
  if (H == 0 || W == 0) return "";
  const Window2D w = resolve(H, W);
  if (w.y.out < 1 || w.x.out < 1)
    return "input " + std::to_string(H) + "x" + std::to_string(W) + " is smaller than the kernel's window";
  return "";
}

std::string window_from_lists(const std::vector<int64_t>& kernel, const std::vector<int64_t>& strides,
                              const std::vector<int64_t>& pads, const std::vector<int64_t>& dilations,
                              const std::string& auto_pad, bool ceil_mode, WindowSpec* out) {
  auto count = [](const char* name, const std::vector<int64_t>& v, size_t n, const char* what) -> std::string {
    if (v.size() == n) return "";
    std::string list;
    for (int64_t x : v) list += (list.empty() ? "" : ",") + std::to_string(x);
    return std::string("attribute '") + name + "' must have " + std::to_string(n) + " values (" + what + "), got [" +
           list + "]";
  };
  for (const std::string& e : {count("kernel_shape", kernel, 2, "only 2-D windows are supported"),
                               count("strides", strides, 2, "only 2-D windows are supported"),
                               count("dilations", dilations, 2, "only 2-D windows are supported"),
                               count("pads", pads, 4, "top, left, bottom, right")}) {
    if (!e.empty()) return e;
  }
  WindowSpec w;
  w.kernel_h = kernel[0];
  w.kernel_w = kernel[1];
  w.stride_h = strides[0];
  w.stride_w = strides[1];
  w.dilation_h = dilations[0];
  w.dilation_w = dilations[1];
  for (int i = 0; i < 4; ++i) w.pads[i] = pads[i];
  w.ceil_mode = ceil_mode;
  if (!parse_auto_pad(auto_pad, &w.auto_pad))
    return "attribute 'auto_pad' must be NOTSET, SAME_UPPER, SAME_LOWER or VALID, got '" + auto_pad + "'";
  const std::string error = w.validate();
  if (!error.empty()) return error;
  *out = w;
  return "";
}

Window2D WindowSpec::resolve(int64_t H, int64_t W) const {
  Window2D w;
  auto axis = [&](Axis& a, int64_t in, int64_t k, int64_t s, int64_t d, int64_t pb, int64_t pe) {
    a.in = in; a.kernel = k; a.stride = s; a.dilation = d;
    if (auto_pad == AutoPad::kSameUpper || auto_pad == AutoPad::kSameLower) {
      same_padding(in, k, s, d, auto_pad == AutoPad::kSameUpper, &pb, &pe);
    } else if (auto_pad == AutoPad::kValid) {
      pb = pe = 0;
    }
    a.pad_begin = pb; a.pad_end = pe;
    a.out = window_output_extent(in, k, s, d, pb, pe, ceil_mode);
  };
  axis(w.y, H, kernel_h, stride_h, dilation_h, pads[0], pads[2]);
  axis(w.x, W, kernel_w, stride_w, dilation_w, pads[1], pads[3]);
  return w;
}

}  // namespace deltaonnx

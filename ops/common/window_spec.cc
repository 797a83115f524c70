#include "common/window_spec.h"

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
  if (kernel_h < 1 || kernel_w < 1) return "kernel_shape must be positive";
  if (stride_h < 1 || stride_w < 1) return "strides must be positive";
  if (dilation_h < 1 || dilation_w < 1) return "dilations must be positive";
  for (int64_t p : pads)
    if (p < 0) return "pads must be non-negative";
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

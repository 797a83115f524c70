// The Conv attributes both experimental ops read from their node (2-D only), the output size they imply,
// and the same attributes as Ort::OpAttr for creating ORT's own Conv through Ort::Op.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <string>
#include <vector>

namespace ort_invoke {

struct ConvGeometry {
  std::vector<int64_t> kernel_shape;  // empty: taken from W at run time
  std::vector<int64_t> strides{1, 1};
  std::vector<int64_t> pads{0, 0, 0, 0};  // top, left, bottom, right
  std::vector<int64_t> dilations{1, 1};
  int64_t group = 1;

  // Reads the node's attributes; explicit pads only (auto_pad other than NOTSET is refused).
  static ConvGeometry read(const Ort::ConstKernelInfo& info);

  // Output height/width for an input of h x w and a kernel of kh x kw.
  int64_t out_h(int64_t h, int64_t kh) const { return (h + pads[0] + pads[2] - (dilations[0] * (kh - 1) + 1)) / strides[0] + 1; }
  int64_t out_w(int64_t w, int64_t kw) const { return (w + pads[1] + pads[3] - (dilations[1] * (kw - 1) + 1)) / strides[1] + 1; }

  // The attributes as ORT's Conv takes them (int64 arrays: ORT reads the data as int64_t).
  std::vector<Ort::OpAttr> op_attributes() const;
};

std::string shape_string(const std::vector<int64_t>& shape);

}  // namespace ort_invoke

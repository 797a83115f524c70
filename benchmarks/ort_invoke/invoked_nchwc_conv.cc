#include "invoked_nchwc_conv.h"

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/aligned_scratch.h"
#include "status_guard.h"

namespace ort_invoke {

namespace {

constexpr const char* kNchwcDomain = "com.microsoft.nchwc";
constexpr int kNchwcVersion = 1;

using deltaonnx::AlignedScratch;
using deltaonnx::aligned_floats;

thread_local AlignedScratch t_blocked_input, t_blocked_output, t_band_input, t_band_output;

}  // namespace

InvokedNchwcConvKernel::InvokedNchwcConvKernel(const OrtApi&, const OrtKernelInfo* raw_info) {
  Ort::ConstKernelInfo info(raw_info);
  geometry_ = ConvGeometry::read(info);
  if (geometry_.group != 1) throw std::invalid_argument("group must be 1");
  const size_t inputs = info.GetInputCount();
  if (inputs < 2 || inputs > 3) throw std::invalid_argument("needs inputs X, W and optionally B");
  has_bias_ = inputs == 3;
  try {
    block_ = info.GetAttribute<int64_t>("block");
  } catch (const Ort::Exception&) {
  }
  if (block_ == 0) block_ = deltaonnx::mlas_nchwc_block_size();
  if (block_ == 0) block_ = 8;  // no NCHWc kernels here: the invocation fails with ORT's own error
  try {
    band_rows_ = info.GetAttribute<int64_t>("band_rows");
  } catch (const Ort::Exception&) {
  }
  if (band_rows_ < 0) throw std::invalid_argument("band_rows must be >= 0");
  if (block_ != 8 && block_ != 16) throw std::invalid_argument("block must be 8 or 16");

  int is_constant = 0;
  Ort::ConstValue w = info.GetTensorConstantInput(1, &is_constant);
  if (!is_constant) throw std::invalid_argument("W must be a constant initializer (its blocked copy is made once)");
  w_shape_ = w.GetTensorTypeAndShapeInfo().GetShape();
  if (w_shape_.size() != 4) throw std::invalid_argument("W must be 4-D");
  const int64_t M = w_shape_[0], C = w_shape_[1], kh = w_shape_[2], kw = w_shape_[3], b = block_;
  if (M % b != 0 || C % b != 0)
    throw std::invalid_argument("channels " + std::to_string(C) + " -> " + std::to_string(M) + " are not multiples of " +
                                std::to_string(b));
  const float* src = w.GetTensorData<float>();
  blocked_weights_ = aligned_floats(static_cast<size_t>(M * C * kh * kw));
  float* dst = blocked_weights_.get();
  for (int64_t ob = 0; ob < M / b; ++ob)
    for (int64_t ib = 0; ib < C / b; ++ib)
      for (int64_t y = 0; y < kh; ++y)
        for (int64_t x = 0; x < kw; ++x)
          for (int64_t i = 0; i < b; ++i)
            for (int64_t o = 0; o < b; ++o)
              *dst++ = src[(((ob * b + o) * C + ib * b + i) * kh + y) * kw + x];
  cpu_ = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeDefault);
  w_value_ = Ort::Value::CreateTensor<float>(cpu_, blocked_weights_.get(), static_cast<size_t>(M * C * kh * kw),
                                             w_shape_.data(), 4);

  const char* type_names[] = {"T"};
  const ONNXTensorElementDataType type_values[] = {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT};
  // No schema defaults for invoked nodes: every attribute the kernels read is given.
  const int64_t channels_last = 0;
  Ort::OpAttr reorder_in_attrs[] = {Ort::OpAttr("channels_last", &channels_last, 1, ORT_OP_ATTR_INT)};
  reorder_input_ = Ort::Op::Create(raw_info, "ReorderInput", kNchwcDomain, kNchwcVersion, type_names, type_values, 1,
                                   reorder_in_attrs, 1, 1, 1);
  std::vector<Ort::OpAttr> conv_attrs = geometry_.op_attributes();
  if (geometry_.kernel_shape.empty()) conv_attrs.emplace_back("kernel_shape", &w_shape_[2], 2, ORT_OP_ATTR_INTS);
  // A string's length is its character count (this runtime builds std::string(data, len)).
  static const std::string kNotSet = "NOTSET";
  conv_attrs.emplace_back("auto_pad", kNotSet.data(), static_cast<int>(kNotSet.size()), ORT_OP_ATTR_STRING);
  conv_ = Ort::Op::Create(raw_info, "Conv", kNchwcDomain, kNchwcVersion, type_names, type_values, 1, conv_attrs.data(),
                          conv_attrs.size(), has_bias_ ? 3 : 2, 1);
  if (band_rows_ > 0) {
    ConvGeometry band = geometry_;
    band.pads[0] = band.pads[2] = 0;
    std::vector<Ort::OpAttr> band_attrs = band.op_attributes();
    if (band.kernel_shape.empty()) band_attrs.emplace_back("kernel_shape", &w_shape_[2], 2, ORT_OP_ATTR_INTS);
    band_attrs.emplace_back("auto_pad", kNotSet.data(), static_cast<int>(kNotSet.size()), ORT_OP_ATTR_STRING);
    band_conv_ = Ort::Op::Create(raw_info, "Conv", kNchwcDomain, kNchwcVersion, type_names, type_values, 1,
                                 band_attrs.data(), band_attrs.size(), has_bias_ ? 3 : 2, 1);
  }
  Ort::OpAttr reorder_out_attrs[] = {Ort::OpAttr("channels_last", &channels_last, 1, ORT_OP_ATTR_INT),
                                     Ort::OpAttr("channels", &w_shape_[0], 1, ORT_OP_ATTR_INT)};
  reorder_output_ = Ort::Op::Create(raw_info, "ReorderOutput", kNchwcDomain, kNchwcVersion, type_names, type_values, 1,
                                    reorder_out_attrs, 2, 1, 1);
}

OrtStatusPtr InvokedNchwcConvKernel::ComputeV2(OrtKernelContext* context) {
  return guarded("InvokedNchwcConv", [&] { compute(context); });
}

void InvokedNchwcConvKernel::compute(OrtKernelContext* raw) {
  Ort::KernelContext ctx(raw);
  Ort::ConstValue x = ctx.GetInput(0);
  const std::vector<int64_t> xs = x.GetTensorTypeAndShapeInfo().GetShape();
  if (xs.size() != 4 || xs[1] != w_shape_[1])
    throw std::invalid_argument("X " + shape_string(xs) + " does not fit W " + shape_string(w_shape_));
  const int64_t N = xs[0], M = w_shape_[0];
  const int64_t Ho = geometry_.out_h(xs[2], w_shape_[2]), Wo = geometry_.out_w(xs[3], w_shape_[3]);
  if (Ho < 1 || Wo < 1) throw std::invalid_argument("input smaller than the kernel window");
  const std::vector<int64_t> ys{N, M, Ho, Wo};  // the channel counts are block multiples: no padding
  Ort::UnownedValue y = ctx.GetOutput(0, ys);

  if (band_rows_ > 0 && band_rows_ < Ho) {
    compute_bands(raw, x.GetTensorData<float>(), xs, y.GetTensorMutableData<float>(), Ho, Wo);
    return;
  }
  const size_t in_count = static_cast<size_t>(xs[0] * xs[1] * xs[2] * xs[3]);
  const size_t out_count = static_cast<size_t>(N * M * Ho * Wo);
  Ort::Value blocked_x = Ort::Value::CreateTensor<float>(cpu_, t_blocked_input.get(in_count), in_count, xs.data(), 4);
  Ort::Value blocked_y = Ort::Value::CreateTensor<float>(cpu_, t_blocked_output.get(out_count), out_count, ys.data(), 4);

  const OrtValue* reorder_in[] = {x};
  OrtValue* reorder_out[] = {blocked_x};
  reorder_input_.Invoke(raw, reorder_in, 1, reorder_out, 1);
  const OrtValue* conv_in[] = {blocked_x, w_value_, has_bias_ ? static_cast<const OrtValue*>(ctx.GetInput(2)) : nullptr};
  OrtValue* conv_out[] = {blocked_y};
  conv_.Invoke(raw, conv_in, has_bias_ ? 3 : 2, conv_out, 1);
  const OrtValue* back_in[] = {blocked_y};
  OrtValue* back_out[] = {y};
  reorder_output_.Invoke(raw, back_in, 1, back_out, 1);
}

void InvokedNchwcConvKernel::compute_bands(OrtKernelContext* raw, const float* x, const std::vector<int64_t>& xs,
                                           float* y, int64_t Ho, int64_t Wo) {
  Ort::KernelContext ctx(raw);
  const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3], M = w_shape_[0], kh = w_shape_[2];
  const int64_t sh = geometry_.strides[0], dh = geometry_.dilations[0], top = geometry_.pads[0];
  const OrtValue* bias = has_bias_ ? static_cast<const OrtValue*>(ctx.GetInput(2)) : nullptr;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t oy0 = 0; oy0 < Ho; oy0 += band_rows_) {
      const int64_t rows = std::min(band_rows_, Ho - oy0);
      const int64_t iy0 = oy0 * sh - top, in_rows = (rows - 1) * sh + dh * (kh - 1) + 1;
      // The band's input rows, with zero rows where they fall into the top/bottom padding.
      const std::vector<int64_t> band_in_shape{1, C, in_rows, W}, band_out_shape{1, M, rows, Wo};
      const size_t in_count = static_cast<size_t>(C * in_rows * W), out_count = static_cast<size_t>(M * rows * Wo);
      float* band_in = t_band_input.get(in_count);
      for (int64_t c = 0; c < C; ++c)
        for (int64_t r = 0; r < in_rows; ++r) {
          float* dst = band_in + (c * in_rows + r) * W;
          const int64_t iy = iy0 + r;
          if (iy < 0 || iy >= H)
            std::fill(dst, dst + W, 0.f);
          else
            std::copy_n(x + ((n * C + c) * H + iy) * W, W, dst);
        }
      Ort::Value plain_in = Ort::Value::CreateTensor<float>(cpu_, band_in, in_count, band_in_shape.data(), 4);
      Ort::Value blocked_in =
          Ort::Value::CreateTensor<float>(cpu_, t_blocked_input.get(in_count), in_count, band_in_shape.data(), 4);
      Ort::Value blocked_out =
          Ort::Value::CreateTensor<float>(cpu_, t_blocked_output.get(out_count), out_count, band_out_shape.data(), 4);
      float* band_out = t_band_output.get(out_count);
      Ort::Value plain_out = Ort::Value::CreateTensor<float>(cpu_, band_out, out_count, band_out_shape.data(), 4);
      const OrtValue* a_in[] = {plain_in};
      OrtValue* a_out[] = {blocked_in};
      reorder_input_.Invoke(raw, a_in, 1, a_out, 1);
      const OrtValue* b_in[] = {blocked_in, w_value_, bias};
      OrtValue* b_out[] = {blocked_out};
      band_conv_.Invoke(raw, b_in, has_bias_ ? 3 : 2, b_out, 1);
      const OrtValue* c_in[] = {blocked_out};
      OrtValue* c_out[] = {plain_out};
      reorder_output_.Invoke(raw, c_in, 1, c_out, 1);
      for (int64_t m = 0; m < M; ++m)  // the band's rows are contiguous in each output channel
        std::copy_n(band_out + m * rows * Wo, rows * Wo, y + ((n * M + m) * Ho + oy0) * Wo);
    }
  }
}

OrtStatusPtr InvokedNchwcConvOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
  return guarded("InvokedNchwcConv", [&] { *kernel = new InvokedNchwcConvKernel(api, info); });
}

}  // namespace ort_invoke

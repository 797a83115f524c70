#include "invoked_gemm_conv.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "status_guard.h"

namespace ort_invoke {

namespace {

constexpr int kGemmSinceVersion = 13;    // CPU Gemm<float>: 13 onward
constexpr int kMatMulSinceVersion = 13;  // CPU MatMul<float>: 13 onward

struct PatchSource {
  const float* x;  // one batch item, [C,H,W]
  int64_t channels, height, width, kernel_h, kernel_w, out_w;
  const ConvGeometry* g;
};

// Writes rows k = (c, ky, kx) of the patch matrix for output pixels [first, first + count) of the raster:
// col[k * count + j] = X[c, iy, ix] of pixel first + j (0 in the padding).
void gather_patches(const PatchSource& s, int64_t first, int64_t count, float* col) {
  const ConvGeometry& g = *s.g;
  const int64_t sh = g.strides[0], sw = g.strides[1], dh = g.dilations[0], dw = g.dilations[1];
  float* row = col;
  for (int64_t c = 0; c < s.channels; ++c) {
    const float* plane = s.x + c * s.height * s.width;
    for (int64_t ky = 0; ky < s.kernel_h; ++ky) {
      for (int64_t kx = 0; kx < s.kernel_w; ++kx, row += count) {
        int64_t j = 0;
        while (j < count) {  // one output-row segment at a time
          const int64_t p = first + j, oy = p / s.out_w, ox = p % s.out_w;
          const int64_t seg = std::min(s.out_w - ox, count - j);
          float* out = row + j;
          const int64_t iy = oy * sh - g.pads[0] + ky * dh;
          if (iy < 0 || iy >= s.height) {
            std::fill(out, out + seg, 0.f);
          } else {
            const float* in = plane + iy * s.width;
            const int64_t ix0 = ox * sw - g.pads[1] + kx * dw;
            // Columns t with 0 <= ix0 + t*sw < width form [lo, hi).
            const int64_t lo = std::min(seg, ix0 < 0 ? (-ix0 + sw - 1) / sw : int64_t{0});
            const int64_t hi = std::max(lo, std::min(seg, ix0 >= s.width ? int64_t{0} : (s.width - 1 - ix0) / sw + 1));
            std::fill(out, out + lo, 0.f);
            if (sw == 1) {
              std::memcpy(out + lo, in + ix0 + lo, static_cast<size_t>(hi - lo) * sizeof(float));
            } else {
              for (int64_t t = lo; t < hi; ++t) out[t] = in[ix0 + t * sw];
            }
            std::fill(out + hi, out + seg, 0.f);
          }
          j += seg;
        }
      }
    }
  }
}

// Scratch reused across runs by the calling thread (the kernel object stays immutable).
thread_local std::vector<float> t_patches;
thread_local std::vector<float> t_panel;

}  // namespace

InvokedGemmConvKernel::InvokedGemmConvKernel(const OrtApi&, const OrtKernelInfo* raw_info) {
  Ort::ConstKernelInfo info(raw_info);
  geometry_ = ConvGeometry::read(info);
  if (geometry_.group != 1) throw std::invalid_argument("group must be 1");
  const size_t inputs = info.GetInputCount();
  if (inputs < 2 || inputs > 3) throw std::invalid_argument("needs inputs X, W and optionally B");
  has_bias_ = inputs == 3;
  try {
    panel_ = info.GetAttribute<int64_t>("panel");
  } catch (const Ort::Exception&) {
  }
  if (panel_ < 0) throw std::invalid_argument("panel must be >= 0");
  std::string product = "Gemm";
  try {
    product = info.GetAttribute<std::string>("product");
  } catch (const Ort::Exception&) {
  }
  if (product != "Gemm" && product != "MatMul") throw std::invalid_argument("product must be Gemm or MatMul");
  use_gemm_ = product == "Gemm";
  cpu_ = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeDefault);

  const char* type_names[] = {"T"};
  const ONNXTensorElementDataType type_values[] = {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT};
  if (use_gemm_) {
    // An invoked kernel's node has no schema behind it, so ONNX defaults are not filled in: Gemm's
    // constructor requires transA/transB/alpha/beta to be given explicitly.
    const int64_t no_transpose = 0;
    const float one = 1.f;
    Ort::OpAttr attrs[] = {Ort::OpAttr("transA", &no_transpose, 1, ORT_OP_ATTR_INT),
                           Ort::OpAttr("transB", &no_transpose, 1, ORT_OP_ATTR_INT),
                           Ort::OpAttr("alpha", &one, 1, ORT_OP_ATTR_FLOAT),
                           Ort::OpAttr("beta", &one, 1, ORT_OP_ATTR_FLOAT)};
    product_ = Ort::Op::Create(raw_info, "Gemm", "", kGemmSinceVersion, type_names, type_values, 1, attrs, 4,
                               has_bias_ ? 3 : 2, 1);
  } else {
    product_ = Ort::Op::Create(raw_info, "MatMul", "", kMatMulSinceVersion, type_names, type_values, 1, nullptr, 0, 2, 1);
  }
}

OrtStatusPtr InvokedGemmConvKernel::ComputeV2(OrtKernelContext* context) {
  return guarded("InvokedGemmConv", [&] { compute(context); });
}

void InvokedGemmConvKernel::compute(OrtKernelContext* raw) {
  Ort::KernelContext ctx(raw);
  Ort::ConstValue x = ctx.GetInput(0);
  Ort::ConstValue w = ctx.GetInput(1);
  const std::vector<int64_t> xs = x.GetTensorTypeAndShapeInfo().GetShape();
  const std::vector<int64_t> ws = w.GetTensorTypeAndShapeInfo().GetShape();
  if (xs.size() != 4 || ws.size() != 4 || ws[1] != xs[1])
    throw std::invalid_argument("X [N,C,H,W] and W [M,C,kH,kW] do not fit: " + shape_string(xs) + ", " + shape_string(ws));
  const int64_t N = xs[0], C = xs[1], H = xs[2], Wd = xs[3], M = ws[0], kh = ws[2], kw = ws[3];
  const int64_t Ho = geometry_.out_h(H, kh), Wo = geometry_.out_w(Wd, kw);
  if (Ho < 1 || Wo < 1) throw std::invalid_argument("input smaller than the kernel window");
  Ort::UnownedValue y_value = ctx.GetOutput(0, {N, M, Ho, Wo});
  float* y = y_value.GetTensorMutableData<float>();
  const int64_t K = C * kh * kw, P = Ho * Wo;
  const int64_t panel = panel_ > 0 ? std::min(panel_, P) : P;

  const float* bias = nullptr;
  if (has_bias_) {
    Ort::ConstValue b = ctx.GetInput(2);
    if (b.GetTensorTypeAndShapeInfo().GetShape() != std::vector<int64_t>{M}) throw std::invalid_argument("B must be [M]");
    bias = b.GetTensorData<float>();
  }
  // ORT's CPU kernels only read their inputs; the C API wants non-const buffers all the same.
  const int64_t w_shape[] = {M, K}, bias_shape[] = {M, 1};
  Ort::Value w_matrix = Ort::Value::CreateTensor<float>(cpu_, const_cast<float*>(w.GetTensorData<float>()),
                                                        static_cast<size_t>(M * K), w_shape, 2);
  Ort::Value bias_column{nullptr};
  if (bias != nullptr && use_gemm_)
    bias_column = Ort::Value::CreateTensor<float>(cpu_, const_cast<float*>(bias), static_cast<size_t>(M), bias_shape, 2);

  // A 1x1, stride-1, unpadded window over whole items needs no gathering: X[n] already is [C, P].
  const ConvGeometry& g = geometry_;
  const bool pointwise = kh == 1 && kw == 1 && g.strides[0] == 1 && g.strides[1] == 1 && g.pads[0] == 0 &&
                         g.pads[1] == 0 && g.pads[2] == 0 && g.pads[3] == 0 && panel == P;
  if (!pointwise) t_patches.resize(static_cast<size_t>(K * panel));
  if (panel < P) t_panel.resize(static_cast<size_t>(M * panel));
  const float* x_data = x.GetTensorData<float>();
  for (int64_t n = 0; n < N; ++n) {
    const PatchSource src{x_data + n * C * H * Wd, C, H, Wd, kh, kw, Wo, &geometry_};
    float* y_item = y + n * M * P;
    for (int64_t first = 0; first < P; first += panel) {
      const int64_t count = std::min(panel, P - first);
      float* patches = pointwise ? const_cast<float*>(src.x) : t_patches.data();
      if (!pointwise) gather_patches(src, first, count, patches);
      float* out = panel < P ? t_panel.data() : y_item;
      const int64_t col_shape[] = {K, count}, out_shape[] = {M, count};
      Ort::Value col = Ort::Value::CreateTensor<float>(cpu_, patches, static_cast<size_t>(K * count), col_shape, 2);
      Ort::Value result = Ort::Value::CreateTensor<float>(cpu_, out, static_cast<size_t>(M * count), out_shape, 2);
      const OrtValue* inputs[3] = {w_matrix, col, bias_column};
      OrtValue* outputs[1] = {result};
      product_.Invoke(raw, inputs, use_gemm_ && has_bias_ ? 3 : 2, outputs, 1);
      for (int64_t m = 0; m < M; ++m) {
        float* dst = y_item + m * P + first;
        const float* row = out + m * count;
        const float add = (bias != nullptr && !use_gemm_) ? bias[m] : 0.f;
        if (out != y_item) {
          if (add != 0.f) {
            for (int64_t j = 0; j < count; ++j) dst[j] = row[j] + add;
          } else {
            std::memcpy(dst, row, static_cast<size_t>(count) * sizeof(float));
          }
        } else if (add != 0.f) {
          for (int64_t j = 0; j < count; ++j) dst[j] += add;
        }
      }
    }
  }
}

OrtStatusPtr InvokedGemmConvOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
  return guarded("InvokedGemmConv", [&] { *kernel = new InvokedGemmConvKernel(api, info); });
}

}  // namespace ort_invoke

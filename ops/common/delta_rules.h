// docs/design.md rules 2-4 and the per-output-element math of DeltaConv/DeltaPool/DeltaMapUnion, one value or one
// pixel at a time, written once for the CUDA kernels (each GPU thread calls one of these), the host emulation
// of those kernels that the tests drive, and any CPU code that wants the scalar definition.
//
// Layouts are the ops' own: one batch item of an activation is [C][H][W] (plane = H*W), a change map is
// [H][W] uint8 (nonzero = marked), conv weights are [M][C/group][kH][kW].
#pragma once
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "activation.h"
#include "geometry.h"
#include "host_device.h"

namespace deltaonnx {

// Rule 2 for one pixel of one batch item: some channel differs by more than tau, or is NaN/Inf on either side.
DELTA_HD bool pixel_changed(const float* x, const float* ref, int64_t channels, int64_t plane, int64_t pixel,
                            float tau) {
  for (int64_t c = 0; c < channels; ++c) {
    if (value_changed(x[c * plane + pixel], ref[c * plane + pixel], tau)) return true;
  }
  return false;
}

// Rule 3 for one pixel: the reference moves to x where the pixel changed. When ref_next is ref (the state
// bound in place) an unchanged pixel is not written at all.
DELTA_HD void update_reference_pixel(const float* x, const float* ref, float* ref_next, int64_t channels,
                                     int64_t plane, int64_t pixel, bool changed) {
  if (changed) {
    for (int64_t c = 0; c < channels; ++c) ref_next[c * plane + pixel] = x[c * plane + pixel];
  } else if (ref_next != ref) {
    for (int64_t c = 0; c < channels; ++c) ref_next[c * plane + pixel] = ref[c * plane + pixel];
  }
}

// Rule 4 for one output pixel: true iff a tap of its window that lies inside the input reads a marked pixel
// of `mask` ([y.in][x.in]). Exact, dilation included: taps between dilated taps are not read.
DELTA_HD bool window_reads_marked(const uint8_t* mask, const Axis& y, const Axis& x, int64_t oy, int64_t ox) {
  for (int64_t ky = 0; ky < y.kernel; ++ky) {
    int64_t iy = y.input_of(oy, ky);
    if (iy < 0 || iy >= y.in) continue;
    for (int64_t kx = 0; kx < x.kernel; ++kx) {
      int64_t ix = x.input_of(ox, kx);
      if (ix < 0 || ix >= x.in) continue;
      if (mask[iy * x.in + ix]) return true;
    }
  }
  return false;
}

// The dense rule: a batch item whose recomputed output pixels exceed dense_fraction of its output is
// recomputed everywhere (computing a dense block costs less than gathering most of it).
DELTA_HD bool recompute_densely(int64_t recomputed, int64_t total, float dense_fraction) {
  return total > 0 && static_cast<double>(recomputed) > static_cast<double>(dense_fraction) * static_cast<double>(total);
}

// The spatial shape of a grouped 2-D convolution over one input size.
struct ConvShape {
  int64_t channels = 0;      // C
  int64_t out_channels = 0;  // M
  int64_t group = 1;
  Axis y, x;                 // y.in = H, y.out = Ho, x.in = W, x.out = Wo; kernel = kH / kW
  DELTA_HD int64_t channels_per_group() const { return channels / group; }
  DELTA_HD int64_t out_channels_per_group() const { return out_channels / group; }
  DELTA_HD int64_t depth() const { return channels_per_group() * y.kernel * x.kernel; }  // K of the GEMM
};

// Tap k (in [0, depth)) of one output pixel whose window starts at input row iy0 = oy*stride - pad_begin and
// column ix0, over the input channels of one group (x_group = [C/group][H][W]): the input value, or 0 in the
// padding. k runs over (c, ky, kx), kx fastest, the weights' order. 32-bit index math: K and H*W fit easily.
DELTA_HD float conv_tap(const float* x_group, const ConvShape& s, int32_t k, int64_t iy0, int64_t ix0) {
  const int32_t kw = static_cast<int32_t>(s.x.kernel);
  const int32_t taps = static_cast<int32_t>(s.y.kernel) * kw;
  const int32_t c = k / taps;
  const int32_t t = k - c * taps;
  const int32_t ky = t / kw;
  const int32_t kx = t - ky * kw;
  const int64_t iy = iy0 + ky * s.y.dilation;
  const int64_t ix = ix0 + kx * s.x.dilation;
  if (iy < 0 || iy >= s.y.in || ix < 0 || ix >= s.x.in) return 0.f;
  return x_group[(c * s.y.in + iy) * s.x.in + ix];
}

// The convolution sum of output channel m at (oy, ox) without bias: one fused multiply-add per tap, k
// ascending, from 0, padding taps included as zeros. This fixes the rounding: the CUDA GEMM accumulates in
// exactly this order with fmaf, so its results equal this function's bit for bit.
DELTA_HD float conv_accumulate(const float* x_item, const float* weights, const ConvShape& s, int64_t m, int64_t oy,
                               int64_t ox) {
  const int64_t g = m / s.out_channels_per_group();
  const int32_t depth = static_cast<int32_t>(s.depth());
  const float* w = weights + m * depth;
  const float* x_group = x_item + g * s.channels_per_group() * s.y.in * s.x.in;
  const int64_t iy0 = s.y.input_of(oy, 0), ix0 = s.x.input_of(ox, 0);
  float acc = 0.f;
  for (int32_t k = 0; k < depth; ++k) acc = fmaf(w[k], conv_tap(x_group, s, k, iy0, ix0), acc);
  return acc;
}

// The fused epilogue of DeltaConv: act(sum + bias [+ z]), with PRelu's slope for channel m (one slope, or M).
DELTA_HD ActivationParams activation_for_channel(const ActivationParams& base, const float* slopes, int64_t num_slopes,
                                                 int64_t m) {
  ActivationParams p = base;
  if (base.kind == Activation::kPRelu && slopes != nullptr && num_slopes > 0) p.a = slopes[num_slopes == 1 ? 0 : m];
  return p;
}

// z: the value of DeltaConv's sum input at this output, added after the bias (docs/design.md#deltaconv), or nullptr.
DELTA_HD float conv_epilogue(float sum, const float* bias, int64_t m, const ActivationParams& act,
                             const float* z = nullptr) {
  const float biased = bias != nullptr ? sum + bias[m] : sum;
  return apply_activation(act, z != nullptr ? biased + *z : biased);
}

// MaxPool of one channel plane ([y.in][x.in]) at (oy, ox), as the CPU kernels' max_taps (docs/ops.md, "NaN
// and infinities"): NaN if any tap inside the input is NaN (a NaN never hides), else the max of ORT's initial
// value, the lowest finite float, and the taps inside the input (padding never wins; a window of -inf or wholly in
// the padding gives the lowest float). pixel_stride: floats from one pixel to the next (a lane of blocked lines:
// the block).
DELTA_HD float max_pool_window(const float* plane, const Axis& y, const Axis& x, int64_t oy, int64_t ox,
                               int64_t pixel_stride = 1) {
  float best = -FLT_MAX;
  for (int64_t ky = 0; ky < y.kernel; ++ky) {
    int64_t iy = y.input_of(oy, ky);
    if (iy < 0 || iy >= y.in) continue;
    for (int64_t kx = 0; kx < x.kernel; ++kx) {
      int64_t ix = x.input_of(ox, kx);
      if (ix < 0 || ix >= x.in) continue;
      const float v = plane[(iy * x.in + ix) * pixel_stride];
      if (v != v) return v;
      if (v > best) best = v;
    }
  }
  return best;
}

}  // namespace deltaonnx

// Receptive-field geometry of a 2-D sliding window (Conv or Pool), written once for the CPU kernels, the
// CUDA kernels and (mirrored in python/deltaonnx/reference/) the numpy reference.
//
// An output pixel (oy, ox) reads input rows oy*stride - pad_begin + k*dilation for k in [0, kernel).
// The change map of the output is the OR-pool of the input change map with the same window: exact, and
// separable into a horizontal then a vertical pass.
#pragma once
#include <cstdint>
#include "host_device.h"

namespace deltaonnx {

// One spatial axis of a window.
struct Axis {
  int64_t in = 0;         // input extent
  int64_t out = 0;        // output extent
  int64_t kernel = 1;
  int64_t stride = 1;
  int64_t dilation = 1;
  int64_t pad_begin = 0;
  int64_t pad_end = 0;

  // Input coordinate read by tap k of output position o (may fall in the padding: < 0 or >= in).
  DELTA_HD int64_t input_of(int64_t o, int64_t k) const { return o * stride - pad_begin + k * dilation; }

  // First and one-past-last output positions whose window contains input position i (may be empty).
  // A superset is never produced: every o in the range has at least one tap k with input_of(o,k)==i
  // when dilation == 1; with dilation > 1 the range is the bounding interval (a superset, allowed).
  DELTA_HD int64_t first_output_reading(int64_t i) const {
    // smallest o with o*stride - pad_begin + (kernel-1)*dilation >= i
    int64_t num = i + pad_begin - (kernel - 1) * dilation;
    int64_t o = num <= 0 ? -((-num) / stride) : (num + stride - 1) / stride;
    return o < 0 ? 0 : o;
  }
  DELTA_HD int64_t last_output_reading_plus1(int64_t i) const {
    // largest o with o*stride - pad_begin <= i, plus one
    int64_t num = i + pad_begin;
    if (num < 0) return 0;
    int64_t o = num / stride + 1;
    return o > out ? out : o;
  }
};

// Output extent of a window along one axis, ONNX rules (floor, or ceil for ceil_mode pools, where the
// last window must start inside the input or the begin padding).
DELTA_HD int64_t window_output_extent(int64_t in, int64_t kernel, int64_t stride, int64_t dilation,
                                      int64_t pad_begin, int64_t pad_end, bool ceil_mode) {
  int64_t span = in + pad_begin + pad_end - ((kernel - 1) * dilation + 1);
  if (span < 0) return 0;
  int64_t out = ceil_mode ? (span + stride - 1) / stride + 1 : span / stride + 1;
  if (ceil_mode && (out - 1) * stride >= in + pad_begin) --out;
  return out;
}

// auto_pad SAME_UPPER / SAME_LOWER: total padding so that out == ceil(in / stride); the odd pixel goes
// to the end (UPPER) or the beginning (LOWER).
DELTA_HD void same_padding(int64_t in, int64_t kernel, int64_t stride, int64_t dilation, bool upper,
                           int64_t* pad_begin, int64_t* pad_end) {
  int64_t out = (in + stride - 1) / stride;
  int64_t total = (out - 1) * stride + (kernel - 1) * dilation + 1 - in;
  if (total < 0) total = 0;
  *pad_begin = upper ? total / 2 : total - total / 2;
  *pad_end = total - *pad_begin;
}

// The change test of docs/design.md rule 2 for one value pair: true when |x - ref| > tau, and whenever either
// value is NaN or Inf. For a finite tau (the kernels refuse any other) the negated comparison covers all
// of it: a NaN on either side makes the difference NaN, Inf - finite is Inf > tau, Inf - Inf is NaN.
// SIMD variants use the same unordered "not less-or-equal" compare.
DELTA_HD bool value_changed(float x, float ref, float tau) {
  float d = x - ref;
  float a = d < 0.f ? -d : d;
  return !(a <= tau);
}

}  // namespace deltaonnx

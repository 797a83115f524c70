// Activations that DeltaConv fuses, one definition for the CPU kernels, the CUDA kernels and the host
// tests. The numpy reference (python/deltaonnx/reference/) follows the same formulas as ONNX defines them.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include "host_device.h"

namespace deltaonnx {

enum class Activation : int32_t {
  kNone = 0,
  kRelu,
  kLeakyRelu,    // params: alpha
  kClip,         // params: min, max (Relu6 is Clip 0..6)
  kSigmoid,
  kSiLU,         // x * sigmoid(x)
  kHardSigmoid,  // params: alpha, beta; max(0, min(1, alpha*x + beta))
  kHardSwish,    // x * max(0, min(1, x/6 + 1/2))
  kPRelu,        // params: one slope, or one per output channel
  kTanh,
  kSoftmax,      // over the output channels of each pixel (a channel Softmax after the Conv), or over each group of
                 // G consecutive channels (params: G): not per element, applied by softmax_channel_groups to each
                 // recomputed pixel once all its channels are stored
};

// Parses the `activation` attribute; returns false for an unknown name.
inline bool parse_activation(const std::string& name, Activation* out) {
  static const struct { const char* name; Activation act; } kNames[] = {
      {"", Activation::kNone},          {"None", Activation::kNone},
      {"Identity", Activation::kNone},  {"Relu", Activation::kRelu},
      {"LeakyRelu", Activation::kLeakyRelu}, {"Clip", Activation::kClip},
      {"Relu6", Activation::kClip},     {"Sigmoid", Activation::kSigmoid},
      {"SiLU", Activation::kSiLU},      {"Swish", Activation::kSiLU},
      {"HardSigmoid", Activation::kHardSigmoid}, {"HardSwish", Activation::kHardSwish},
      {"PRelu", Activation::kPRelu},    {"Tanh", Activation::kTanh},
      {"Softmax", Activation::kSoftmax},
  };
  for (const auto& entry : kNames) {
    if (name == entry.name) { *out = entry.act; return true; }
  }
  return false;
}

// Parameters resolved for one output channel (PRelu's slope differs per channel).
struct ActivationParams {
  Activation kind = Activation::kNone;
  float a = 0.f;  // alpha / min / slope
  float b = 0.f;  // beta / max
  int64_t softmax_group = 0;  // Softmax: the channels normalised together (a YOLO DFL head's 16); 0: all of them
};

DELTA_HD float sigmoid_of(float x) { return 1.f / (1.f + expf(-x)); }

// a * b rounded by itself, never contracted with a following add into one FMA (GCC contracts by default where the
// target has FMA). HardSigmoid and HardSwish multiply, then add, as ORT does (its standalone ops and MLAS's fused
// activation): contracted, 11% of values came out one ulp apart from dense ORT's.
DELTA_HD float rounded_product(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  float p = a * b;
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  __asm__("" : "+x"(p));  // the product must exist as a float: nothing fuses across it
#elif defined(__GNUC__) && defined(__aarch64__)
  __asm__("" : "+w"(p));
#endif
  return p;
#endif
}
DELTA_HD float hard_sigmoid_of(float x, float alpha, float beta) {
  const float v = rounded_product(alpha, x) + beta;
  return v < 0.f ? 0.f : (v > 1.f ? 1.f : v);  // NaN stays NaN
}
// PRelu and LeakyRelu: NaN and -0 kept as given (-0 >= 0). Shared with NchwcDenseConv's per-channel loop, which
// must write what apply_activation would.
DELTA_HD float prelu_of(float x, float slope) { return x >= 0.f ? x : slope * x; }

DELTA_HD float apply_activation(const ActivationParams& p, float x) {
  switch (p.kind) {
    case Activation::kNone: return x;
    case Activation::kRelu: return x > 0.f ? x : (x == x ? 0.f : x);  // keeps NaN visible
    case Activation::kLeakyRelu: return prelu_of(x, p.a);
    case Activation::kClip: return x < p.a ? p.a : (x > p.b ? p.b : x);
    case Activation::kSigmoid: return sigmoid_of(x);
    case Activation::kSiLU: return x * sigmoid_of(x);
    case Activation::kHardSigmoid: return hard_sigmoid_of(x, p.a, p.b);
    case Activation::kHardSwish: return x * hard_sigmoid_of(x, 1.f / 6.f, 0.5f);
    case Activation::kPRelu: return prelu_of(x, p.a);
    case Activation::kTanh: return tanhf(x);
    case Activation::kSoftmax: return x;  // per pixel, not per element: softmax_channels
  }
  return x;
}

// True for an activation that reads all output channels of a pixel (applied after the per-element epilogue).
DELTA_HD bool is_channel_activation(Activation kind) { return kind == Activation::kSoftmax; }

// Softmax over the `channels` values y[0], y[stride], ... of one pixel, in place, as ONNX and ORT compute it:
// exp(v - max) / sum. A NaN anywhere makes every channel NaN (the max and the sum carry it), as in ORT.
DELTA_HD void softmax_channels(float* y, int64_t stride, int64_t channels) {
  float top = y[0];
  for (int64_t c = 1; c < channels; ++c) {
    const float v = y[c * stride];
    top = (v > top || v != v) ? v : top;
  }
  float sum = 0.f;
  for (int64_t c = 0; c < channels; ++c) {
    const float e = expf(y[c * stride] - top);
    y[c * stride] = e;
    sum += e;
  }
  for (int64_t c = 0; c < channels; ++c) y[c * stride] /= sum;
}

// The channels one Softmax normalises together: the group of activation_params [G], else all `channels`.
DELTA_HD int64_t softmax_group_of(const ActivationParams& p, int64_t channels) {
  return p.softmax_group > 0 ? p.softmax_group : channels;
}

// softmax_channels over each group of `group` consecutive channels of one pixel (group divides channels).
DELTA_HD void softmax_channel_groups(float* y, int64_t stride, int64_t channels, int64_t group) {
  for (int64_t first = 0; first < channels; first += group) softmax_channels(y + first * stride, stride, group);
}

}  // namespace deltaonnx

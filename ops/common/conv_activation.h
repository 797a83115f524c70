// DeltaConv's `activation` / `activation_params` attributes resolved to what every epilogue reads (the CPU
// kernel table, the CUDA gather-GEMM, the host emulation): the kind with its scalar parameters, defaults
// filled in, and PRelu's slopes. Written once: the CPU and CUDA ops both resolve through this (docs/ops.md
// lists the defaults; python/deltaonnx/reference/ mirrors them).
#pragma once
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "common/activation.h"

namespace deltaonnx {

struct ConvActivation {
  ActivationParams params;    // kind, a, b with defaults resolved (Relu6: Clip 0..6)
  std::vector<float> slopes;  // PRelu: 1 slope, or M (checked against W where M is known)

  // The per-element epilogue of output channel m: PRelu's slope for m; a channel Softmax is applied per pixel
  // afterwards (softmax_channels), so its per-element part is the identity.
  ActivationParams for_channel(int64_t m) const {
    ActivationParams p = params;
    if (is_channel_activation(p.kind)) p.kind = Activation::kNone;
    if (p.kind == Activation::kPRelu && !slopes.empty()) p.a = slopes[slopes.size() == 1 ? 0 : m];
    return p;
  }
  bool channel_softmax() const { return is_channel_activation(params.kind); }
  // Empty when the activation fits M output channels, else what is wrong.
  std::string check_channels(int64_t out_channels) const {
    if (params.softmax_group > 0 && out_channels % params.softmax_group != 0)
      return "activation 'Softmax' has groups of " + std::to_string(params.softmax_group) +
             " channels (activation_params), which do not divide the " + std::to_string(out_channels) +
             " output channels";
    if (slopes.size() > 1 && static_cast<int64_t>(slopes.size()) != out_channels)
      return "activation 'PRelu' has " + std::to_string(slopes.size()) + " slopes for " + std::to_string(out_channels) +
             " output channels (give 1 or one per channel)";
    return "";
  }
};

// False with *error set when the name is unknown or the parameters do not fit the activation.
inline bool resolve_conv_activation(const std::string& name, const std::vector<float>& params, ConvActivation* out,
                                    std::string* error) {
  ConvActivation result;
  if (!parse_activation(name, &result.params.kind)) {
    *error = "attribute 'activation' has the unknown value '" + name + "'";
    return false;
  }
  auto count_is = [&](std::initializer_list<size_t> allowed) {
    for (size_t a : allowed)
      if (params.size() == a) return true;
    std::string list;
    for (size_t a : allowed) list += (list.empty() ? "" : " or ") + std::to_string(a);
    *error = "activation '" + name + "' takes " + list + " activation_params, got " + std::to_string(params.size());
    return false;
  };
  for (float p : params) {
    if (std::isnan(p)) {
      *error = "attribute 'activation_params' of activation '" + name + "' holds NaN";
      return false;
    }
  }
  switch (result.params.kind) {
    case Activation::kLeakyRelu:
      if (!count_is({0, 1})) return false;
      result.params.a = params.empty() ? 0.01f : params[0];
      break;
    case Activation::kClip:
      if (!count_is({0, 2})) return false;
      if (params.size() == 2) {
        result.params.a = params[0];
        result.params.b = params[1];
      } else if (name == "Relu6") {
        result.params.a = 0.f;
        result.params.b = 6.f;
      } else {
        result.params.a = -INFINITY;
        result.params.b = INFINITY;
      }
      if (!(result.params.a <= result.params.b)) {
        *error = "activation '" + name + "' needs min <= max in activation_params";
        return false;
      }
      break;
    case Activation::kHardSigmoid:
      if (!count_is({0, 2})) return false;
      result.params.a = params.empty() ? 0.2f : params[0];
      result.params.b = params.empty() ? 0.5f : params[1];
      break;
    case Activation::kPRelu:
      if (params.empty()) {
        *error = "activation 'PRelu' needs activation_params: one slope, or one per output channel";
        return false;
      }
      result.slopes = params;
      result.params.a = params[0];
      break;
    case Activation::kSoftmax:
      if (!count_is({0, 1})) return false;
      if (params.size() == 1) {  // G channels per group: a positive integer (M % G is checked against W)
        const float g = params[0];
        if (!(g >= 1.f && g <= 65536.f && g == std::floor(g))) {
          *error = "activation 'Softmax' takes activation_params [G], G a positive integer (channels per group) up to "
                   "65536, got " + std::to_string(g);
          return false;
        }
        result.params.softmax_group = static_cast<int64_t>(g);
      }
      break;
    default:
      if (!count_is({0})) return false;
      break;
  }
  *out = result;
  return true;
}

}  // namespace deltaonnx

// DeltaConv's `activation` / `activation_params` attributes resolved to what the epilogue reads: the kind with
// its scalar parameters (defaults of docs/ops.md), and PRelu's slopes. ORT-free, shared by the op and the host
// emulation bindings.
#pragma once
#include <cmath>
#include <string>
#include <vector>

#include "common/activation.h"

namespace deltaonnx {
namespace cuda {

struct ConvActivation {
  ActivationParams params;
  std::vector<float> slopes;  // PRelu: 1 slope, or M (checked against W at run time)
};

// False with *error set when the name is unknown or the parameter count does not fit the activation.
inline bool resolve_conv_activation(const std::string& name, const std::vector<float>& params, ConvActivation* out,
                                    std::string* error) {
  ConvActivation result;
  if (!parse_activation(name, &result.params.kind)) {
    *error = "unknown activation '" + name + "'";
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
    default:
      if (!count_is({0})) return false;
      break;
  }
  *out = result;
  return true;
}

}  // namespace cuda
}  // namespace deltaonnx

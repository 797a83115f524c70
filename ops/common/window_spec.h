// The window attributes that Conv and MaxPool share, as the ops receive them, and their resolution for an
// input size (auto_pad, ceil_mode) into the geometry of common/geometry.h.
#pragma once
#include <array>
#include <cstdint>
#include <string>

#include "common/change_map.h"

namespace deltaonnx {

enum class AutoPad { kNotSet, kSameUpper, kSameLower, kValid };

// Parses ONNX's auto_pad string; false when unknown.
bool parse_auto_pad(const std::string& s, AutoPad* out);

// The geometry attributes shared by Conv and Pool.
struct WindowSpec {
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t dilation_h = 1, dilation_w = 1;
  std::array<int64_t, 4> pads{0, 0, 0, 0};  // top, left, bottom, right
  AutoPad auto_pad = AutoPad::kNotSet;
  bool ceil_mode = false;

  // Empty when valid, else what is wrong (attribute names as in the ONNX node).
  std::string validate() const;

  // The window over an input of H x W (pads resolved for auto_pad). Output extents may be 0.
  Window2D resolve(int64_t H, int64_t W) const;
};

}  // namespace deltaonnx

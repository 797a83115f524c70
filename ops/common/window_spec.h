// The window attributes that Conv and MaxPool share, as the ops receive them, and their resolution for an
// input size (auto_pad, ceil_mode) into the geometry of common/geometry.h. ORT-free: the CPU engines, the CUDA
// ops, the host emulation and the pybind module all use this one definition.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "common/change_map.h"

namespace deltaonnx {

enum class AutoPad { kNotSet, kSameUpper, kSameLower, kValid };

// Parses ONNX's auto_pad string ("" is NOTSET); false when unknown.
bool parse_auto_pad(const std::string& s, AutoPad* out);

// The geometry attributes shared by Conv and Pool.
struct WindowSpec {
  int64_t kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, stride_w = 1;
  int64_t dilation_h = 1, dilation_w = 1;
  std::array<int64_t, 4> pads{0, 0, 0, 0};  // top, left, bottom, right
  AutoPad auto_pad = AutoPad::kNotSet;
  bool ceil_mode = false;

  // Empty when valid, else what is wrong (attribute names as in the ONNX node). Every extent must lie in
  // [1, kMaxWindowExtent] (pads in [0, kMaxWindowExtent]): no size computed from them can overflow.
  std::string validate() const;

  // Empty when an input of H x W can be read (extents within kMaxSpatialExtent and at least one output
  // pixel for a non-empty input), else what is wrong.
  std::string check_input(int64_t H, int64_t W) const;

  // The window over an input of H x W (pads resolved for auto_pad). Output extents may be 0.
  Window2D resolve(int64_t H, int64_t W) const;
};

// The window from its attribute lists (kernel_shape [kH, kW], strides [sH, sW], pads [top, left, bottom,
// right], dilations [dH, dW]) and auto_pad: the one place the lists become a WindowSpec, for the ops' attribute
// reading (op_definition/delta_attributes.cc) and the pybind modules. Empty when valid, else what is wrong.
std::string window_from_lists(const std::vector<int64_t>& kernel, const std::vector<int64_t>& strides,
                              const std::vector<int64_t>& pads, const std::vector<int64_t>& dilations,
                              const std::string& auto_pad, bool ceil_mode, WindowSpec* out);

}  // namespace deltaonnx

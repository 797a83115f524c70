// The window attributes of DeltaConv and DeltaPool (docs/ops.md), validated when the kernel is created, and
// resolved against an input size at run time into the Axis pairs the device code reads.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/geometry.h"
#include "cuda_common/conv_activation.h"
#include "cuda_common/ort_support.h"
#include "cuda_common/window_axis.h"

namespace deltaonnx {
namespace cuda {

struct WindowAttributes {
  std::vector<int64_t> kernel_shape;  // [kH, kW]; empty for a Conv that takes it from W
  int64_t strides[2] = {1, 1};
  int64_t dilations[2] = {1, 1};
  int64_t pads[4] = {0, 0, 0, 0};     // top, left, bottom, right
  PadMode pad_mode = PadMode::kNotSet;
  bool ceil_mode = false;
  float threshold = 0.f;
  float dense_fraction = 0.5f;

  // Spatial dimension `dim` (0 = rows, 1 = columns) over an input extent, for a kernel extent.
  Axis axis(int dim, int64_t in, int64_t kernel) const;
};

// Reads and validates kernel_shape, strides, dilations, pads, auto_pad, threshold, dense_fraction, and for
// pools ceil_mode and storage_order. Throws an error naming the node for any invalid value.
WindowAttributes read_window_attributes(const AttributeReader& attributes, bool pool);

// DeltaConv's fused activation (conv_activation.h), failing with the node's name.
ConvActivation read_conv_activation(const AttributeReader& attributes);

}  // namespace cuda
}  // namespace deltaonnx

// Resolving a Conv/Pool window attribute set against an input extent: auto_pad, pads and ceil_mode become
// the Axis the device code reads. Header-only and ORT-free, so the host emulation bindings share it.
#pragma once
#include <cstdint>

#include "common/geometry.h"

namespace deltaonnx {
namespace cuda {

enum class PadMode { kNotSet, kSameUpper, kSameLower, kValid };

// One spatial axis; pad_begin/pad_end are the attribute's pads (used only with kNotSet).
inline Axis resolve_window_axis(int64_t in, int64_t kernel, int64_t stride, int64_t dilation, int64_t pad_begin,
                                int64_t pad_end, PadMode mode, bool ceil_mode) {
  Axis a;
  a.in = in;
  a.kernel = kernel;
  a.stride = stride;
  a.dilation = dilation;
  switch (mode) {
    case PadMode::kNotSet:
      a.pad_begin = pad_begin;
      a.pad_end = pad_end;
      a.out = window_output_extent(in, kernel, stride, dilation, pad_begin, pad_end, ceil_mode);
      break;
    case PadMode::kValid:
      a.out = window_output_extent(in, kernel, stride, dilation, 0, 0, ceil_mode);
      break;
    case PadMode::kSameUpper:
    case PadMode::kSameLower:
      // ONNX: out = ceil(in / stride), the total padding split with the odd pixel at the end for SAME_UPPER.
      same_padding(in, kernel, stride, dilation, mode == PadMode::kSameUpper, &a.pad_begin, &a.pad_end);
      a.out = in > 0 ? (in + stride - 1) / stride : 0;
      break;
  }
  return a;
}

// Parses auto_pad; false when unknown. "" counts as NOTSET.
inline bool parse_pad_mode(const char* s, PadMode* out) {
  struct Entry {
    const char* name;
    PadMode mode;
  };
  static const Entry kModes[] = {{"NOTSET", PadMode::kNotSet},
                                 {"", PadMode::kNotSet},
                                 {"SAME_UPPER", PadMode::kSameUpper},
                                 {"SAME_LOWER", PadMode::kSameLower},
                                 {"VALID", PadMode::kValid}};
  for (const Entry& e : kModes) {
    const char* a = e.name;
    const char* b = s;
    while (*a != '\0' && *a == *b) ++a, ++b;
    if (*a == '\0' && *b == '\0') {
      *out = e.mode;
      return true;
    }
  }
  return false;
}

}  // namespace cuda
}  // namespace deltaonnx

// DeltaGate on the GPU as per-thread bodies (the CUDA kernels in gate_kernel.cu are grids of these calls, and
// cuda_common/host/host_emulation.h runs the same calls in loops, which is how the tests check them).
//   verdict step   one thread per (item, block): the block rule (rule 2b), or the pixel rule with k = 1 and
//                  tau_hard = tau; adds exactly as the CPU engine does (ops/delta_gate/gate_engine.cc):
//                  per column, rows top to bottom; then the columns left to right
//   apply step     one thread per (item, pixel): map_out and rule 3 on x_gated
// Without state the op copies X and fills map_out with 1 instead.
#pragma once
#include <cstdint>

#include "common/host_device.h"
#include "delta_gate/gate_spec.h"

namespace deltaonnx {
namespace cuda {

struct GateStep {
  const float* x = nullptr;         // [N][C][H][W]
  const float* x_ref = nullptr;     // [N][C][H][W]
  float* x_gated = nullptr;         // [N][C][H][W], may be x_ref (bound in place)
  const uint8_t* marks = nullptr;   // external map, nullptr: all marked
  bool marks_per_block = false;     // marks is [N][cells_h][cells_w] (else [N][H][W])
  uint8_t* verdicts = nullptr;      // [N][cells_h][cells_w]: 1 where the block changed
  uint8_t* map_out = nullptr;       // [N][H][W]
  int64_t batch = 0, channels = 0, height = 0, width = 0, block = 1;
  float tau = 0.f, hard = 0.f;
  bool block_rule = true;           // false: no block means (the pixel rule: k = 1, hard = tau)
  DELTA_HD int64_t cells_h() const { return (height + block - 1) / block; }
  DELTA_HD int64_t cells_w() const { return (width + block - 1) / block; }
  DELTA_HD int64_t verdict_threads() const { return batch * cells_h() * cells_w(); }
  DELTA_HD int64_t apply_threads() const { return batch * height * width; }
};

// A step for a batch of [batch, channels, height, width] with the node's spec; tensors and map still to set.
inline GateStep make_gate_step(const GateSpec& spec, int64_t batch, int64_t channels, int64_t height, int64_t width) {
  GateStep s;
  s.batch = batch;
  s.channels = channels;
  s.height = height;
  s.width = width;
  s.block = spec.block;
  s.tau = spec.tau;
  s.hard = spec.hard;
  s.block_rule = spec.block_rule;
  return s;
}

DELTA_HD bool gate_marked(const GateStep& s, int64_t n, int64_t y, int64_t x) {
  if (s.marks == nullptr) return true;
  if (s.marks_per_block) return s.marks[(n * s.cells_h() + y / s.block) * s.cells_w() + x / s.block] != 0;
  return s.marks[(n * s.height + y) * s.width + x] != 0;
}

DELTA_HD float gate_abs(float v) { return v < 0.f ? -v : v; }

// The verdict of block `index` = (n * cells_h + by) * cells_w + bx.
DELTA_HD void gate_verdict_thread(const GateStep& s, int64_t index) {
  const int64_t cells = s.cells_h() * s.cells_w();
  const int64_t n = index / cells, cell = index - n * cells;
  const int64_t by = cell / s.cells_w(), bx = cell - by * s.cells_w();
  const int64_t y0 = by * s.block, x0 = bx * s.block;
  const int64_t rows = s.height - y0 < s.block ? s.height - y0 : s.block;
  const int64_t cols = s.width - x0 < s.block ? s.width - x0 : s.block;
  const int64_t plane = s.height * s.width;
  bool changed = false;
  for (int64_t c = 0; c < s.channels && !changed; ++c) {
    const int64_t at = (n * s.channels + c) * plane;
    float sum = 0.f;
    for (int64_t j = 0; j < cols; ++j) {
      float column = 0.f;
      for (int64_t i = 0; i < rows; ++i) {
        const int64_t y = y0 + i, x = x0 + j;
        if (!gate_marked(s, n, y, x)) continue;  // unmarked: not compared (difference 0)
        const float d = s.x[at + y * s.width + x] - s.x_ref[at + y * s.width + x];
        if (!(gate_abs(d) <= s.hard)) changed = true;  // NaN/Inf included
        column += d;
      }
      sum = j == 0 ? column : sum + column;
    }
    if (s.block_rule && !(gate_abs(sum) <= s.tau * static_cast<float>(rows * cols))) changed = true;
  }
  s.verdicts[index] = changed ? 1 : 0;
}

// map_out and rule 3 for pixel `index` = (n * H + y) * W + x, given the verdicts.
DELTA_HD void gate_apply_thread(const GateStep& s, int64_t index) {
  const int64_t plane = s.height * s.width;
  const int64_t n = index / plane, p = index - n * plane, y = p / s.width, x = p - y * s.width;
  const bool changed = s.verdicts[(n * s.cells_h() + y / s.block) * s.cells_w() + x / s.block] != 0 &&
                       gate_marked(s, n, y, x);
  s.map_out[index] = changed ? 1 : 0;
  const bool in_place = s.x_gated == s.x_ref;
  for (int64_t c = 0; c < s.channels; ++c) {
    const int64_t at = (n * s.channels + c) * plane + p;
    if (changed) s.x_gated[at] = s.x[at];
    else if (!in_place) s.x_gated[at] = s.x_ref[at];
  }
}

}  // namespace cuda
}  // namespace deltaonnx

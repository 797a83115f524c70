// The steps every Delta op runs on the GPU before its own compute, as per-thread bodies: each CUDA kernel in
// pipeline_kernels.cu is a grid of calls to one of these, and host/host_emulation.cc runs the same calls in
// plain C++ loops over the same grid, which is how the tests check the device logic without a GPU.
//
// Per batch item n (a stream), in launch order:
//   change step      rule 2 on the (marked) input pixels, rule 3 on X_ref_next          [N][H*W] threads
//   recompute step   rule 4: OR-pool of the change mask with the op's window -> map_out,
//                    and the marked output pixels appended to the item's pixel list      [N][Ho*Wo] threads
//   densify step     the dense rule: an item over dense_fraction is recomputed whole      [N][Ho*Wo] threads
//   keep step        Y = Y_prev where not recomputed (skipped when Y is Y_prev)           [N*M*Ho*Wo] threads
// then the op's compute reads its pixels through PixelList. Without usable state (rule 1) the ops skip all
// four: X_ref_next = X, map_out = 1 and every item is dense.
#pragma once
#include <cstdint>

#include "common/delta_rules.h"
#include "common/geometry.h"
#include "common/host_device.h"

namespace deltaonnx {
namespace cuda {

constexpr int kWarpSize = 32;

// ---- change step --------------------------------------------------------------------------------------------
struct ChangeStep {
  const float* x = nullptr;       // [N][C][H*W]
  const float* x_ref = nullptr;   // [N][C][H*W]; nullptr: the reference is dropped (tau 0 with a map), the
                                  // map's marks are the changed pixels and nothing is compared or moved
  float* x_ref_next = nullptr;    // [N][C][H*W], may be x_ref (bound in place); nullptr when dropped
  const uint8_t* map_in = nullptr;  // [N][H*W] or nullptr: compare every pixel
  uint8_t* changed = nullptr;     // [N][H*W] out: 1 where the pixel changed
  int64_t batch = 0, channels = 0, plane = 0;
  float tau = 0.f;
  DELTA_HD int64_t threads() const { return batch * plane; }
};

// Rule 2 for thread `index` = n*plane + p: a pixel that the map leaves unmarked is not compared.
DELTA_HD bool change_step_detect(const ChangeStep& s, int64_t index) {
  if (s.map_in != nullptr && s.map_in[index] == 0) return false;
  if (s.x_ref == nullptr) return true;  // dropped reference: marked means changed
  const int64_t n = index / s.plane, p = index - n * s.plane;
  const int64_t item = n * s.channels * s.plane;
  return pixel_changed(s.x + item, s.x_ref + item, s.channels, s.plane, p, s.tau);
}

// Rule 3 for the same thread, given its rule-2 verdict.
DELTA_HD void change_step_update(const ChangeStep& s, int64_t index, bool changed) {
  if (s.x_ref == nullptr) return;  // dropped reference: nothing to move
  const int64_t n = index / s.plane, p = index - n * s.plane;
  const int64_t item = n * s.channels * s.plane;
  update_reference_pixel(s.x + item, s.x_ref + item, s.x_ref_next + item, s.channels, s.plane, p, changed);
}

// One thread of the change kernel: both rules, reading the pixel's values once from X and X_ref.
DELTA_HD void change_step_thread(const ChangeStep& s, int64_t index) {
  const bool changed = change_step_detect(s, index);
  change_step_update(s, index, changed);
  s.changed[index] = changed ? 1 : 0;
}

// ---- recompute step -----------------------------------------------------------------------------------------
struct RecomputeStep {
  const uint8_t* changed = nullptr;  // [N][H*W] from the change step
  uint8_t* map_out = nullptr;        // [N][Ho*Wo] out
  int32_t* counts = nullptr;         // [N], zeroed before the step; out: pixels in each item's list
  int32_t* pixel_list = nullptr;     // [N][Ho*Wo] out: the first counts[n] entries of row n, any order
  const uint8_t* sum_marks = nullptr;  // [N][Ho*Wo]: DeltaConv's map_z, recomputed too; nullptr: none
  int64_t batch = 0;
  Axis y, x;                         // the op's window; y.in*x.in = H*W, y.out*x.out = Ho*Wo
  DELTA_HD int64_t out_plane() const { return y.out * x.out; }
};

// Rule 4 (with the sum's marks) for output pixel q of item n; writes map_out and returns the flag (the thread's
// ballot vote).
DELTA_HD bool recompute_step_flag(const RecomputeStep& s, int64_t n, int64_t q) {
  const int64_t oy = q / s.x.out, ox = q - oy * s.x.out;
  const bool flag = (s.sum_marks != nullptr && s.sum_marks[n * s.out_plane() + q] != 0) ||
                    window_reads_marked(s.changed + n * s.y.in * s.x.in, s.y, s.x, oy, ox);
  s.map_out[n * s.out_plane() + q] = flag ? 1 : 0;
  return flag;
}

DELTA_HD int popcount32(uint32_t v) {
#if defined(__CUDA_ARCH__)
  return __popc(v);
#else
  return __builtin_popcount(v);
#endif
}

// Warp-aggregated append: the warp's leader reserves popcount(ballot) slots at `base` with one atomic add, and
// each voting lane takes the slot given by the voters below it. One atomic per warp instead of one per pixel.
DELTA_HD int32_t warp_append_slot(uint32_t ballot, int lane, int32_t base) {
  return base + popcount32(ballot & ((1u << lane) - 1u));
}

// ---- densify step and the pixel list the compute reads ------------------------------------------------------
// Which output pixels of each item the compute recomputes.
struct PixelList {
  const int32_t* pixels = nullptr;  // [N][total]; nullptr: every item is recomputed whole (no state)
  const int32_t* counts = nullptr;  // [N]
  int64_t total = 0;                // Ho*Wo
  float dense_fraction = 0.5f;
};

DELTA_HD bool item_dense(const PixelList& l, int64_t n) {
  return l.pixels == nullptr || recompute_densely(l.counts[n], l.total, l.dense_fraction);
}

// Number of output pixels item n recomputes (its list, or all of them when dense).
DELTA_HD int64_t item_length(const PixelList& l, int64_t n, bool dense) { return dense ? l.total : l.counts[n]; }

// Entry i of item n's list (i < item_length): an output pixel index in [0, total).
DELTA_HD int64_t item_pixel(const PixelList& l, int64_t n, int64_t i, bool dense) {
  return dense ? i : l.pixels[n * l.total + i];
}

// A dense item recomputes everything, so its map_out must say so.
DELTA_HD void densify_step_thread(const PixelList& l, uint8_t* map_out, int64_t n, int64_t q) {
  if (item_dense(l, n)) map_out[n * l.total + q] = 1;
}

// ---- keep step ----------------------------------------------------------------------------------------------
struct KeepStep {
  const float* y_prev = nullptr;  // [N][channels][plane]
  float* y = nullptr;             // same shape, a different buffer
  const uint8_t* map_out = nullptr;  // [N][plane], final (after densify)
  int64_t batch = 0, channels = 0, plane = 0;
  DELTA_HD int64_t threads() const { return batch * channels * plane; }
};

DELTA_HD void keep_step_thread(const KeepStep& s, int64_t index) {
  const int64_t n = index / (s.channels * s.plane);
  const int64_t q = index % s.plane;
  if (s.map_out[n * s.plane + q] == 0) s.y[index] = s.y_prev[index];
}

}  // namespace cuda
}  // namespace deltaonnx

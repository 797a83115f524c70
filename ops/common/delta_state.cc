#include "common/delta_state.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "common/aligned_scratch.h"
#include "common/change_map.h"
#include "common/delta_rules.h"
#include "common/kernel_table.h"
#include "delta_gate/gate_engine.h"

namespace deltaonnx {

InputState item_input(const DeltaRun& run, int64_t n, float tau, const GateSpec* block_gate, const KernelTable* kernels) {
  const int64_t item = run.channels * run.height * run.width;
  InputState st;
  st.x = run.x + n * item;
  st.x_ref = run.x_ref ? run.x_ref + n * item : nullptr;
  st.map_in = run.map_in ? run.map_in + n * run.height * run.width : nullptr;
  st.x_ref_next = run.x_ref_next ? run.x_ref_next + n * item : nullptr;
  st.has_state = run.has_state;
  st.reference_dropped = run.reference_dropped;
  st.channels = run.channels;
  st.height = run.height;
  st.width = run.width;
  st.tau = tau;
  st.block_gate = block_gate;
  st.kernels = kernels;
  st.block = run.block;
  return st;
}

ItemPlan plan_item(const DeltaRun& run, int64_t n, float tau, const GateSpec* block_gate, const KernelTable* kernels, const Window2D& w,
                   float dense_fraction, int64_t out_channels, std::vector<uint8_t>& in_flags,
                   std::vector<uint8_t>& scratch, RunStats* stats, const ParallelFor& parallel_for,
                   const uint8_t* sum_marks) {
  const int64_t out_plane = w.out_pixels();
  ItemPlan p;
  p.input = item_input(run, n, tau, block_gate, kernels);
  uint8_t* flags = grown(in_flags, static_cast<size_t>(w.in_pixels()));  // detection writes every flag
  const ChangedPixels changed_pixels = detect_and_update_reference(p.input, flags, parallel_for);
  const int64_t changed = changed_pixels.count;
  p.out_flags = run.map_out + n * out_plane;
  p.recompute =
      plan_recompute(changed_pixels.flags, changed, p.input.has_state, w, dense_fraction, p.out_flags, scratch, sum_marks);
  if (stats) {
    stats->changed_inputs += changed;
    stats->recomputed_outputs += p.recompute;
  }
  p.y = run.y + n * out_channels * out_plane;
  carry_previous_output(run.y_prev ? run.y_prev + n * out_channels * out_plane : nullptr, p.y, out_channels,
                        out_plane, p.recompute, parallel_for);
  return p;
}

namespace {

// Rules 2 and 3 on blocked lines (with state and a kept reference): flags[p] = 1 where pixel p changed (with a
// change map only marked pixels are compared: the others are unchanged by the map's promise), and x_ref_next
// takes X's lines there. Bands of rows share the pixels among threads; each band's flags and lines are its own.
int64_t detect_blocked_lines(const InputState& s, const KernelTable& k, uint8_t* flags, const ParallelFor& parallel_for) {
  const int64_t plane = s.height * s.width, blocks = s.channels / s.block, line_stride = plane * s.block;
  if (s.x_ref_next != s.x_ref)  // bound apart: the reference is carried, then moved where pixels changed
    std::memcpy(s.x_ref_next, s.x_ref, static_cast<size_t>(s.channels * plane) * sizeof(float));
  // The changed pixels' lines are compared with and moved into x_ref_next, which holds X_ref now.
  // At most 8 bands: ceil(plane / ceil(plane / 8)) <= 8.
  const int64_t band = std::max<int64_t>(1, (plane + 7) / 8), bands = (plane + band - 1) / band;
  std::array<int64_t, 8> counts{};
  parallel_for(bands, [&](int64_t i) {
    counts[i] = k.blocked_detect_update(s.x, s.x_ref_next, blocks, line_stride, s.block, i * band,
                                        std::min(plane, (i + 1) * band), s.map_in, s.tau, flags);
  });
  int64_t changed = 0;
  for (int64_t i = 0; i < bands; ++i) changed += counts[i];
  return changed;
}

// Inputs of at most this many channels are tested pixel by pixel, all channels at once (one pass over the
// planes); more channels are streamed plane by plane, except on runs short enough to stay in cache.
constexpr int64_t kFewChannels = 4;
constexpr int64_t kShortRun = 64;
}  // namespace

void take_whole_reference(const InputState& s, const ParallelFor& parallel_for) {
  const int64_t plane = s.height * s.width, C = s.channels;
  if (s.x_ref_next == nullptr || s.x_ref_next == s.x) return;  // dropped, or bound to the frame itself
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(C, 64));
  parallel_for(chunks, [&](int64_t i) {
    const int64_t c0 = C * i / chunks, c1 = C * (i + 1) / chunks;
    std::memcpy(s.x_ref_next + c0 * plane, s.x + c0 * plane, static_cast<size_t>((c1 - c0) * plane) * sizeof(float));
  });
}

ChangedPixels detect_and_update_reference(const InputState& s, uint8_t* flags, const ParallelFor& parallel_for) {
  const int64_t plane = s.height * s.width;
  const int64_t C = s.channels;
  if (!s.has_state) {  // rule 1: first frame or new resolution, everything changed
    std::memset(flags, 1, static_cast<size_t>(plane));
    take_whole_reference(s, parallel_for);
    return {flags, plane};
  }
  if (s.reference_dropped)  // the map's marks are the changes (tau = 0)
    return {s.map_in, count_marks(s.map_in, plane)};
  const KernelTable& k = s.kernels ? *s.kernels : kernels();
  if (s.block > 1) return {flags, detect_blocked_lines(s, k, flags, parallel_for)};  // the block rule is refused there
  if (s.block_gate != nullptr) {  // rule 2b: the gate engine decides and moves whole blocks' references
    GateItem item;
    item.x = s.x;
    item.x_ref = s.x_ref;
    item.marks = s.map_in;
    item.x_gated = s.x_ref_next;
    item.map_out = flags;
    item.channels = C;
    item.height = s.height;
    item.width = s.width;
    return {flags, run_gate_item(*s.block_gate, item, k)};
  }
  std::memset(flags, 0, static_cast<size_t>(plane));
  const bool in_place = s.x_ref_next == s.x_ref;
  const bool exact = s.tau == 0.f;  // channels decide independently: one fused pass
  // Bands of rows: each band detects over all channels, then moves its reference; bands are independent.
  // Bands of at most 16K pixels (their flags stay in L1) and at least 8 of them to share among threads.
  const int64_t band_rows = std::max<int64_t>(
      1, std::min<int64_t>(16384 / std::max<int64_t>(1, s.width), (s.height + 7) / 8));
  const int64_t bands = (s.height + band_rows - 1) / band_rows;
  parallel_for(bands, [&](int64_t b) {
    const int64_t y0 = b * band_rows, y1 = std::min(s.height, y0 + band_rows);
    if (s.map_in == nullptr) {
      // An RGB frame: one pass, every plane read once. Also at tau 0, where it moves all channels of a changed
      // pixel, the others being equal by value (rule 3): a stem's frame and reference come from memory, and six
      // streams read at once beat the channels one by one (3x224x224 71 -> 60 us, 3x320x320 153 -> 130 us; in
      // cache it is slower). One plane is one stream either way, and the exact kernel's loop is simpler.
      if (C <= kFewChannels && !(exact && C == 1)) {
        k.detect_update_pixels(s.x, s.x_ref, s.x_ref_next, C, plane, y0 * s.width, y1 * s.width, s.tau, flags);
        return;
      }
      if (exact) {
        k.detect_update_exact(s.x, s.x_ref, s.x_ref_next, C, plane, y0 * s.width, y1 * s.width, flags);
        return;
      }
      k.detect_changes(s.x, s.x_ref, C, plane, y0 * s.width, y1 * s.width, s.tau, flags);
      if (in_place) {
        for (int64_t y = y0; y < y1; ++y) {
          const uint8_t* row = flags + y * s.width;
          if (std::find(row, row + s.width, uint8_t{1}) != row + s.width)
            k.update_reference(s.x, s.x_ref, s.x_ref_next, C, plane, y * s.width, (y + 1) * s.width, flags);
        }
      } else {
        k.update_reference(s.x, s.x_ref, s.x_ref_next, C, plane, y0 * s.width, y1 * s.width, flags);
      }
      return;
    }
    // With a change map only the marked runs are read; the rest is unchanged by the map's promise. Runs a few
    // pixels apart are read as one range: the pixels between them compare as unchanged (they did not change
    // since the last run, which left them within tau of the reference), and one long range costs less.
    constexpr int64_t kGap = 16;
    for (int64_t y = y0; y < y1; ++y) {
      const uint8_t* m = s.map_in + y * s.width;
      int64_t x = 0;
      while (x < s.width) {
        while (x < s.width && !m[x]) ++x;
        if (x == s.width) break;
        const int64_t begin = x;
        int64_t end = x;
        while (x < s.width) {
          if (m[x]) {
            end = ++x;
          } else if (x - end < kGap) {
            ++x;
          } else {
            break;
          }
        }
        const int64_t p0 = y * s.width + begin, p1 = y * s.width + end;
        if (exact && in_place) {
          k.detect_update_exact(s.x, s.x_ref, s.x_ref_next, C, plane, p0, p1, flags);
          continue;
        }
        if (in_place && (C <= kFewChannels || p1 - p0 <= kShortRun)) {  // one pass, channels inner
          k.detect_update_pixels(s.x, s.x_ref, s.x_ref_next, C, plane, p0, p1, s.tau, flags);
          continue;
        }
        k.detect_changes(s.x, s.x_ref, C, plane, p0, p1, s.tau, flags);
        if (in_place) k.update_reference(s.x, s.x_ref, s.x_ref_next, C, plane, p0, p1, flags);
      }
    }
    if (!in_place) k.update_reference(s.x, s.x_ref, s.x_ref_next, C, plane, y0 * s.width, y1 * s.width, flags);
  });
  int64_t changed = 0;
  for (int64_t p = 0; p < plane; ++p) changed += flags[p];
  return {flags, changed};
}

namespace {

// Along one axis: the outputs whose every tap reads inside the input, the fewest taps of any output's window that
// do (0 when some window lies wholly in the padding or steps over the input), and the most windows one input
// position is a tap of (a tap per window at most, and the outputs reading a position lie within
// ((kernel - 1) * dilation + 1) / stride).
struct AxisCover {
  int64_t full_windows = 0;
  int64_t fewest_taps_inside = 0;
  int64_t most_windows_per_input = 0;
};

AxisCover axis_cover(const Axis& a) {
  AxisCover cover{0, a.kernel, std::min(a.kernel, ((a.kernel - 1) * a.dilation + a.stride) / a.stride)};
  // The windows wholly inside are the outputs [full_lo, full_hi) (first tap >= 0, last < in); only the others are
  // counted tap by tap (a loop over every output ran each plan: 0.1-0.3% of a frame).
  const int64_t last_tap = (a.kernel - 1) * a.dilation;
  const int64_t full_lo = a.pad_begin <= 0 ? 0 : (a.pad_begin + a.stride - 1) / a.stride;
  const int64_t last_start = a.in - 1 - last_tap + a.pad_begin;  // the largest o * stride whose window ends inside
  const int64_t full_hi = std::max(full_lo, std::min(a.out, last_start < 0 ? int64_t{0} : last_start / a.stride + 1));
  cover.full_windows = full_hi - full_lo;
  auto count_partial = [&](int64_t o) {
    int64_t inside = 0;
    for (int64_t k = 0; k < a.kernel; ++k) {
      const int64_t i = a.input_of(o, k);
      inside += i >= 0 && i < a.in;
    }
    cover.fewest_taps_inside = std::min(cover.fewest_taps_inside, inside);
  };
  for (int64_t o = 0; o < std::min(full_lo, a.out); ++o) count_partial(o);
  for (int64_t o = full_hi; o < a.out; ++o) count_partial(o);
  return cover;
}

// Whether the dense rule holds whatever the OR-pool would find. An output keeps its value only if every tap it
// reads inside the input is unchanged (rule 4), and an input is a tap of at most `most` windows: so at most
// unchanged * most / (kH * kW) of the windows wholly inside keep theirs, and of all, at most unchanged * most /
// (the fewest taps inside). Where nearly every input changed (a moving camera: the few pixels of a frame equal to
// the last's), this spares the OR-pool over the input.
bool dense_rule_certain(int64_t changed_inputs, const Window2D& w, const AxisCover& y, const AxisCover& x,
                        float dense_fraction) {
  const int64_t unchanged = w.in_pixels() - changed_inputs, out = w.out_pixels();
  const int64_t most = y.most_windows_per_input * x.most_windows_per_input;
  int64_t kept_at_most = out;
  if (const int64_t fewest = y.fewest_taps_inside * x.fewest_taps_inside; fewest > 0)
    kept_at_most = std::min(kept_at_most, unchanged * most / fewest);
  const int64_t full = y.full_windows * x.full_windows;  // the others may all keep theirs
  kept_at_most = std::min(kept_at_most, out - full + unchanged * most / (w.y.kernel * w.x.kernel));
  return recompute_densely(out - kept_at_most, out, dense_fraction);
}

}  // namespace

int64_t plan_recompute(const uint8_t* in_flags, int64_t changed_inputs, bool has_state, const Window2D& w,
                       float dense_fraction, uint8_t* out_flags, std::vector<uint8_t>& scratch,
                       const uint8_t* sum_marks) {
  const int64_t out_plane = w.out_pixels();
  int64_t recompute = 0;
  const bool most_changed = has_state && 2 * changed_inputs >= w.in_pixels();
  const AxisCover cover_y = most_changed ? axis_cover(w.y) : AxisCover{}, cover_x = most_changed ? axis_cover(w.x) : AxisCover{};
  if (most_changed && changed_inputs == w.in_pixels() && cover_y.fewest_taps_inside > 0 && cover_x.fewest_taps_inside > 0) {
    // Every input changed (a producer that recomputed everything, or noise): rule 4 marks every output
    // whose window reads the input, here all of them, without the OR-pool's passes over the maps.
    std::memset(out_flags, 1, static_cast<size_t>(out_plane));
    return out_plane;
  }
  if (most_changed && dense_rule_certain(changed_inputs, w, cover_y, cover_x, dense_fraction)) {
    std::memset(out_flags, 1, static_cast<size_t>(out_plane));
    return out_plane;
  }
  if (has_state && changed_inputs > 0) {
    // The OR-pool stops once the dense rule holds (the marks only grow): a moving camera's stem, whose frame keeps
    // too many pixels for dense_rule_certain, still recomputes 60-85% of its outputs.
    // (dense_fraction lies in [0, 1]: the op definition checks it.)
    const auto stop_above = static_cast<int64_t>(std::floor(static_cast<double>(dense_fraction) * static_cast<double>(out_plane)));
    recompute = or_pool_mask(in_flags, w, out_flags, scratch, stop_above);
  } else {
    std::memset(out_flags, 0, static_cast<size_t>(out_plane));
  }
  if (has_state && sum_marks != nullptr && !recompute_densely(recompute, out_plane, dense_fraction))  // where the sum changed the output changes too (docs/design.md#rule-4)
    for (int64_t p = 0; p < out_plane; ++p)
      if (sum_marks[p] != 0 && out_flags[p] == 0) {
        out_flags[p] = 1;
        ++recompute;
      }
  if (!has_state || recompute_densely(recompute, out_plane, dense_fraction)) {  // the dense rule, as on CUDA
    std::memset(out_flags, 1, static_cast<size_t>(out_plane));
    recompute = out_plane;
  }
  return recompute;
}

void carry_previous_output(const float* y_prev, float* y, int64_t channels, int64_t plane, int64_t recomputed,
                           const ParallelFor& parallel_for) {
  if (recomputed >= plane || y_prev == nullptr || y_prev == y) return;
  parallel_for(channels, [&](int64_t c) {
    std::memcpy(y + c * plane, y_prev + c * plane, static_cast<size_t>(plane) * sizeof(float));
  });
}

}  // namespace deltaonnx

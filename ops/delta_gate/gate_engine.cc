#include "delta_gate/gate_engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>

namespace deltaonnx {

namespace {

int64_t count_marked(const uint8_t* flags, int64_t n) {  // flags are 0/1
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) count += flags[i];
  return count;
}

// Without state every pixel changed and the gated frame is X.
int64_t pass_through(const GateItem& it) {
  const int64_t plane = it.height * it.width;
  if (it.x_gated && it.x_gated != it.x) std::memcpy(it.x_gated, it.x, sizeof(float) * it.channels * plane);
  std::memset(it.map_out, 1, plane);
  return plane;
}

// The pixel rule: changed iff some channel has !(|X - X_ref| <= tau), and marked.
int64_t pixel_gate(const GateSpec& spec, const GateItem& it, const KernelTable& k) {
  const int64_t plane = it.height * it.width;
  std::memset(it.map_out, 0, plane);
  k.detect_changes(it.x, it.x_ref, it.channels, plane, 0, plane, spec.tau, it.map_out);
  if (it.marks)
    for (int64_t p = 0; p < plane; ++p) it.map_out[p] &= static_cast<uint8_t>(it.marks[p] != 0);
  const int64_t changed = count_marked(it.map_out, plane);
  if (it.x_gated) k.update_reference(it.x, it.x_ref, it.x_gated, it.channels, plane, 0, plane, it.map_out);
  return changed;
}

struct GateScratch {
  std::vector<float> sums, block_sums;
  std::vector<uint8_t> moved, hot_columns, verdict;
};

// The block rule, one row of blocks at a time: per channel, the rows' differences summed column by column
// (kernel table), then each block's columns left to right (blocks side by side, so the adds of different
// blocks overlap); the hard bound per pixel; the verdict written to the marked pixels of the block row.
int64_t block_gate(const GateSpec& spec, const GateItem& it, const KernelTable& k) {
  const int64_t h = it.height, w = it.width, plane = h * w, kb = spec.block;
  const int64_t cells_w = (w + kb - 1) / kb, last_cols = w - (cells_w - 1) * kb;
  // The running thread's scratch, reused item after item (the sizes change only with the frame), read through
  // plain pointers: a thread_local named inside a loop is looked up again on every pass (__tls_get_addr per byte
  // in the hot-column loop: ~20% of a 640x640 gate's time).
  thread_local GateScratch thread_scratch;
  GateScratch& scratch = thread_scratch;
  scratch.sums.resize(static_cast<size_t>(w));
  scratch.block_sums.resize(static_cast<size_t>(cells_w));
  scratch.moved.resize(static_cast<size_t>(cells_w));
  scratch.hot_columns.resize(static_cast<size_t>(w));
  scratch.verdict.resize(static_cast<size_t>(w));
  float* const sums = scratch.sums.data();
  float* const block_sums = scratch.block_sums.data();
  uint8_t* const moved = scratch.moved.data();
  uint8_t* const hot_columns = scratch.hot_columns.data();
  uint8_t* const verdict = scratch.verdict.data();
  int64_t changed = 0;
  for (int64_t y0 = 0; y0 < h; y0 += kb) {
    const int64_t rows = std::min(kb, h - y0);
    const float limit_full = spec.tau * static_cast<float>(rows * kb);
    const float limit_last = spec.tau * static_cast<float>(rows * last_cols);
    std::fill(moved, moved + cells_w, 0);
    for (int64_t c = 0; c < it.channels; ++c) {
      std::fill(sums, sums + w, 0.f);
      for (int64_t y = y0; y < y0 + rows; ++y) {
        const int64_t at = c * plane + y * w;
        k.gate_column_sums(it.x + at, it.x_ref + at, it.marks ? it.marks + y * w : nullptr, w, sums);
      }
      for (int64_t cx = 0; cx < cells_w; ++cx) block_sums[cx] = sums[cx * kb];
      for (int64_t j = 1; j < kb; ++j) {
        const int64_t cells = j < last_cols ? cells_w : cells_w - 1;  // the last block may be narrower
        for (int64_t cx = 0; cx < cells; ++cx) block_sums[cx] += sums[cx * kb + j];
      }
      for (int64_t cx = 0; cx < cells_w; ++cx) {
        const float limit = cx == cells_w - 1 ? limit_last : limit_full;
        moved[cx] |= static_cast<uint8_t>(!(std::fabs(block_sums[cx]) <= limit));
      }
    }
    // The hard bound, per pixel (NaN/Inf included: they also make the sums fail); unmarked pixels are not
    // compared, so their flags do not count.
    uint8_t* flags = it.map_out + y0 * w;
    std::memset(flags, 0, rows * w);
    k.detect_changes(it.x, it.x_ref, it.channels, plane, y0 * w, (y0 + rows) * w, spec.hard, it.map_out);
    std::fill(hot_columns, hot_columns + w, 0);
    for (int64_t y = 0; y < rows; ++y) {
      const uint8_t* row = flags + y * w;
      const uint8_t* marks = it.marks ? it.marks + (y0 + y) * w : nullptr;
      if (marks)
        for (int64_t x = 0; x < w; ++x) hot_columns[x] |= static_cast<uint8_t>(row[x] & (marks[x] != 0));
      else
        for (int64_t x = 0; x < w; ++x) hot_columns[x] |= row[x];
    }
    for (int64_t cx = 0; cx < cells_w; ++cx) {
      const int64_t x0 = cx * kb, cols = std::min(kb, w - x0);
      uint8_t hot = moved[cx];
      for (int64_t j = 0; j < cols; ++j) hot |= hot_columns[x0 + j];
      std::memset(verdict + x0, hot, cols);
    }
    // The verdict, row by row; an external map keeps its unmarked pixels out.
    for (int64_t y = 0; y < rows; ++y) {
      uint8_t* row = flags + y * w;
      std::memcpy(row, verdict, w);
      if (it.marks) {
        const uint8_t* marks = it.marks + (y0 + y) * w;
        for (int64_t x = 0; x < w; ++x) row[x] &= static_cast<uint8_t>(marks[x] != 0);
      }
    }
    changed += count_marked(flags, rows * w);
    // The block row's reference moved while its rows are still in cache (a pass over the whole frame after the
    // last block row read X and X_ref from memory again: ~10% of a 640x640 gate). A block row reads only its own
    // rows, so the rows above, already moved in place, are not read again.
    if (it.x_gated)
      k.update_reference(it.x, it.x_ref, it.x_gated, it.channels, plane, y0 * w, (y0 + rows) * w, it.map_out);
  }
  return changed;
}

}  // namespace

int64_t run_gate_item(const GateSpec& spec, const GateItem& item, const KernelTable& kernels) {
  if (!item.x_ref) return pass_through(item);
  return spec.block_rule ? block_gate(spec, item, kernels) : pixel_gate(spec, item, kernels);
}

int64_t run_gate(const GateSpec& spec, const GateRun& run, const KernelTable& kernels, const ParallelFor& parallel_for) {
  const int64_t plane = run.height * run.width, volume = run.channels * plane;
  const int64_t cells = ((run.height + spec.block - 1) / spec.block) * ((run.width + spec.block - 1) / spec.block);
  thread_local std::vector<int64_t> changed_per_item;  // the calling thread's; the bodies write through `changed`
  std::vector<int64_t>& changed = changed_per_item;
  changed.assign(static_cast<size_t>(run.batch), 0);
  parallel_for(run.batch, [&](int64_t n) {
    GateItem it;
    it.x = run.x + n * volume;
    it.x_ref = run.x_ref ? run.x_ref + n * volume : nullptr;
    it.x_gated = run.x_gated ? run.x_gated + n * volume : nullptr;
    it.map_out = run.map_out + n * plane;
    it.channels = run.channels;
    it.height = run.height;
    it.width = run.width;
    thread_local std::vector<uint8_t> spread;  // the running thread's
    if (run.map_in && run.map_per_block) {
      spread.resize(plane);
      spread_block_map(run.map_in + n * cells, run.height, run.width, spec.block, spread.data());
      it.marks = spread.data();
    } else if (run.map_in) {
      it.marks = run.map_in + n * plane;
    }
    changed[n] = run_gate_item(spec, it, kernels);
  });
  int64_t total = 0;
  for (int64_t c : changed) total += c;
  return total;
}

}  // namespace deltaonnx

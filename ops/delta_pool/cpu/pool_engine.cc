#include "delta_pool/cpu/pool_engine.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "common/aligned_scratch.h"
#include "common/checked_size.h"

namespace deltaonnx {

static_assert(kLowestFloat == std::numeric_limits<float>::lowest(), "a window reading no input gives lowest()");

std::string PoolSpec::validate() const {
  std::string e = window.validate();
  if (!e.empty()) return e;
  if (!(threshold >= 0.f) || !std::isfinite(threshold)) return "threshold must be finite and >= 0";
  if (!(dense_fraction >= 0.f) || !(dense_fraction <= 1.f)) return "dense_fraction must be in [0, 1]";
  if (gate.block_rule && gate.tau != threshold) return "the block gate's threshold must be the node's threshold";
  return "";
}

namespace {

// Tap k of the outputs [o0, o0 + n) along one axis: input position read by output o0 (may lie in the padding)
// and the outputs j in [begin, end) (relative to o0) whose read lies inside the input.
PoolTap axis_tap(const Axis& a, int64_t o0, int64_t n, int64_t k) {
  const int64_t first = a.input_of(o0, k);
  int64_t begin = first >= 0 ? 0 : (-first + a.stride - 1) / a.stride;
  int64_t end = a.in - first <= 0 ? 0 : (a.in - first + a.stride - 1) / a.stride;
  begin = std::min(begin, n);
  end = std::max(begin, std::min(end, n));
  return {first, begin, end};
}

bool row_inside(const Axis& a, int64_t o, int64_t k) {
  const int64_t i = a.input_of(o, k);
  return i >= 0 && i < a.in;
}

// How one batch item's recomputed outputs (rows of runs) are pooled. Separable: a row pass takes the max over
// the window's columns for every input row the runs read, over the column span [x_begin, x_begin + span) of
// all runs, into a buffer; a column pass takes the max of the buffer's rows for each run. Direct: each run reads
// its whole window from the input. The cheaper by the kernels' vector loads (of `vec` lanes) is taken: whole
// planes and wide runs go separable (kw + kh loads per output vector instead of kw * kh), short scattered runs
// in a wide span may not.
struct PoolWork {
  bool separable = false;
  bool flat_rows = false;  // the row pass reads bands of whole input rows as one flat range
  int64_t x_begin = 0, span = 0;
  std::vector<uint8_t> rows_read;  // [H]: input rows the row pass computes
};

void plan_work(const Window2D& w, const std::vector<RowRun>& runs, int64_t vec, PoolWork& work) {
  const Axis &ay = w.y, &ax = w.x;
  auto vectors = [vec](int64_t n) { return static_cast<double>((n + vec - 1) / vec); };
  work.rows_read.assign(static_cast<size_t>(ay.in), 0);
  int64_t x0 = ax.out, x1 = 0, last_y = -1;
  double column_loads = 0, direct_loads = 0;
  const double load = ax.stride == 1 ? 1.0 : 2.0;  // a strided vector takes two loads
  for (const RowRun& r : runs) {
    x0 = std::min(x0, r.x_begin);
    x1 = std::max(x1, r.x_end);
    int64_t inside = 0;
    for (int64_t ky = 0; ky < ay.kernel; ++ky) {
      if (!row_inside(ay, r.y, ky)) continue;
      ++inside;
      if (r.y != last_y) work.rows_read[static_cast<size_t>(ay.input_of(r.y, ky))] = 1;
    }
    last_y = r.y;
    column_loads += vectors(r.x_end - r.x_begin) * static_cast<double>(inside);
    direct_loads += vectors(r.x_end - r.x_begin) * static_cast<double>(inside * ax.kernel) * load;
  }
  work.x_begin = x0;
  work.span = std::max<int64_t>(0, x1 - x0);
  work.flat_rows = ax.stride == 1 && x0 == 0 && work.span == ax.in;
  double row_loads = 0;  // the row pass, and its stores
  for (int64_t iy = 0; iy < ay.in;) {
    if (!work.rows_read[static_cast<size_t>(iy)]) {
      ++iy;
      continue;
    }
    int64_t iy1 = iy + 1;
    while (work.flat_rows && iy1 < ay.in && work.rows_read[static_cast<size_t>(iy1)]) ++iy1;
    row_loads += vectors((iy1 - iy) * work.span) * (static_cast<double>(ax.kernel) * load + 1.0);
    iy = iy1;
  }
  work.separable = ax.kernel > 1 && ay.kernel > 1 && row_loads + column_loads < direct_loads;
}

// Pools channels [0, channels) of x into y (planes of w.in_pixels() / w.out_pixels()) at the runs' outputs.
void pool_channels(const KernelTable& k, const Window2D& w, const PoolWork& work, const std::vector<RowRun>& runs,
                   const float* x, float* y, int64_t channels, std::vector<float>& buffer, std::vector<PoolTap>& taps) {
  const Axis &ay = w.y, &ax = w.x;
  const int64_t W = ax.in, Wo = ax.out, in_plane = w.in_pixels(), out_plane = w.out_pixels();
  if (!work.separable) {
    for (const RowRun& r : runs) {
      const int64_t n = r.x_end - r.x_begin;
      taps.clear();
      for (int64_t ky = 0; ky < ay.kernel; ++ky) {
        if (!row_inside(ay, r.y, ky)) continue;
        const int64_t row = ay.input_of(r.y, ky) * W;
        for (int64_t kx = 0; kx < ax.kernel; ++kx) {
          PoolTap t = axis_tap(ax, r.x_begin, n, kx);
          t.offset += row;
          if (t.end > t.begin) taps.push_back(t);
        }
      }
      k.max_taps(x, in_plane, ax.stride, taps.data(), static_cast<int64_t>(taps.size()), n, channels, n,
                 y + r.y * Wo + r.x_begin, out_plane);
    }
    return;
  }
  // Row pass: buffer[c][iy][j] = max over kx of x[c][iy][input column of output x_begin + j, tap kx].
  const int64_t span = work.span, H = ay.in, buffer_plane = checked_product({H, span}, "the row-pass buffer");
  buffer.resize(checked_count({channels, buffer_plane}, "the row-pass buffer"));
  float* rows = buffer.data();
  taps.clear();
  for (int64_t kx = 0; kx < ax.kernel; ++kx) {
    const PoolTap t = axis_tap(ax, work.x_begin, span, kx);
    if (t.end > t.begin) taps.push_back(t);
  }
  // At stride 1 over the whole width of an input as wide as the output, consecutive input rows are one flat
  // range (the kernel keeps each tap inside its row): one call per band instead of per row.
  const bool flat_rows = work.flat_rows;
  for (int64_t iy = 0; iy < H;) {
    if (!work.rows_read[static_cast<size_t>(iy)]) {
      ++iy;
      continue;
    }
    int64_t iy1 = iy + 1;
    while (flat_rows && iy1 < H && work.rows_read[static_cast<size_t>(iy1)]) ++iy1;
    k.max_taps(x + iy * W, in_plane, ax.stride, taps.data(), static_cast<int64_t>(taps.size()), span, channels,
               (iy1 - iy) * span, rows + iy * span, buffer_plane);
    iy = iy1;
  }
  // Column pass, run by run. Whole output rows whose window rows all lie inside the input, at vertical stride
  // 1 and over a buffer as wide as the output, are one flat range of the buffer: consecutive ones go in one call.
  const bool flat = ay.stride == 1 && work.x_begin == 0 && span == Wo;
  auto whole_inside = [&](const RowRun& r) {
    return r.x_begin == 0 && r.x_end == Wo && row_inside(ay, r.y, 0) && row_inside(ay, r.y, ay.kernel - 1);
  };
  for (size_t i = 0; i < runs.size();) {
    const RowRun& r = runs[i];
    taps.clear();
    if (flat && whole_inside(r)) {
      size_t j = i + 1;
      while (j < runs.size() && runs[j].y == runs[j - 1].y + 1 && whole_inside(runs[j])) ++j;
      const int64_t n = static_cast<int64_t>(j - i) * Wo;
      for (int64_t ky = 0; ky < ay.kernel; ++ky) taps.push_back({ay.input_of(r.y, ky) * span, 0, Wo});
      k.max_taps(rows, buffer_plane, 1, taps.data(), ay.kernel, Wo, channels, n, y + r.y * Wo, out_plane);
      i = j;
      continue;
    }
    const int64_t n = r.x_end - r.x_begin;
    for (int64_t ky = 0; ky < ay.kernel; ++ky)
      if (row_inside(ay, r.y, ky)) taps.push_back({ay.input_of(r.y, ky) * span + r.x_begin - work.x_begin, 0, n});
    k.max_taps(rows, buffer_plane, 1, taps.data(), static_cast<int64_t>(taps.size()), n, channels, n,
               y + r.y * Wo + r.x_begin, out_plane);
    ++i;
  }
}

// Blocked memory [C/b][H][W][b] with a horizontal stride of 1: an image row of lines is a row of W*b floats
// under a window whose x axis is measured in floats (taps b apart per pixel, padding b per pixel), so
// pool_channels runs on it unchanged over C/b planes of H x W*b.
Window2D window_over_lines(const Window2D& w, int64_t b) {
  Window2D lines = w;
  Axis& x = lines.x;
  x.in *= b;
  x.out *= b;
  x.dilation *= b;
  x.pad_begin *= b;
  x.pad_end *= b;
  return lines;
}

// Blocked memory at any stride: the window's taps inside the input as lines of b floats. A run's outputs whose
// taps all lie inside the row take one call per channel block, a line per output (rows of the kernel call, the
// input advancing stride * b floats per output); the others one pixel at a time, all C/b blocks in one call. The
// taps are taken in the same order either way (ky, then kx), so the max and its NaN are the same.
void pool_pixels_by_lines(const KernelTable& k, const Window2D& w, const std::vector<RowRun>& runs, int64_t b,
                          const float* x, float* y, int64_t blocks, const ParallelFor& parallel_for) {
  const int64_t in_plane = w.in_pixels() * b, out_plane = w.out_pixels() * b;
  parallel_for(static_cast<int64_t>(runs.size()), [&](int64_t i) {
    thread_local std::vector<PoolTap> taps;
    const RowRun& r = runs[static_cast<size_t>(i)];
    // The taps of output ox that read inside the input, ky then kx.
    const auto gather_taps = [&](int64_t ox) {
      taps.clear();
      for (int64_t ky = 0; ky < w.y.kernel; ++ky) {
        if (!row_inside(w.y, r.y, ky)) continue;
        for (int64_t kx = 0; kx < w.x.kernel; ++kx)
          if (row_inside(w.x, ox, kx)) taps.push_back({(w.y.input_of(r.y, ky) * w.x.in + w.x.input_of(ox, kx)) * b, 0, b});
      }
    };
    const auto one_output = [&](int64_t ox) {
      gather_taps(ox);
      k.max_taps(x, in_plane, 1, taps.data(), static_cast<int64_t>(taps.size()), b, blocks, b,
                 y + (r.y * w.x.out + ox) * b, out_plane);
    };
    // [lo, hi): the run's outputs whose every horizontal tap reads inside the row (then lo's taps are all of
    // them, and each next output's are lo's moved stride * b floats on)
    int64_t lo = r.x_begin, hi = r.x_end;
    while (lo < hi && !row_inside(w.x, lo, 0)) ++lo;
    while (hi > lo && !row_inside(w.x, hi - 1, w.x.kernel - 1)) --hi;
    if (hi - lo < 2) lo = hi = r.x_end;  // every output one at a time
    for (int64_t ox = r.x_begin; ox < lo; ++ox) one_output(ox);
    if (hi > lo) {
      gather_taps(lo);
      for (int64_t block = 0; block < blocks; ++block)
        k.max_taps(x + block * in_plane, w.x.stride * b, 1, taps.data(), static_cast<int64_t>(taps.size()), b,
                   hi - lo, b, y + block * out_plane + (r.y * w.x.out + lo) * b, b);
    }
    for (int64_t ox = hi; ox < r.x_end; ++ox) one_output(ox);
  });
}

// An item recomputed everywhere on blocked lines: the kernel table's blocked_max_pool over each channel block's
// output rows, with no runs to plan (every output row whole) and the NaN kept beside a plain max
// (common/blocked_pool_lines.h). Bands of rows of every block share the threads; each task's column scratch is
// its thread's, reused run after run.
void pool_whole_item_by_lines(const KernelTable& k, const Window2D& w, int64_t b, const float* x, float* y,
                              int64_t blocks, const ParallelFor& parallel_for) {
  const int64_t in_plane = w.in_pixels() * b, out_plane = w.out_pixels() * b;
  const int64_t bands = std::min(w.y.out, std::max<int64_t>(1, (8 + blocks - 1) / blocks));  // >= 8 tasks if rows allow
  const int64_t band_rows = (w.y.out + bands - 1) / bands;
  parallel_for(blocks * bands, [&](int64_t i) {
    thread_local std::vector<float> columns;  // written before read by the kernel
    float* column_maxima = grown(columns, static_cast<size_t>(w.x.in * b));
    const int64_t block = i / bands, oy0 = (i % bands) * band_rows, oy1 = std::min(w.y.out, oy0 + band_rows);
    if (oy0 < oy1)
      k.blocked_max_pool(x + block * in_plane, w.y, w.x, b, oy0, oy1, y + block * out_plane, column_maxima);
  });
}

struct PoolRunScratch {
  std::vector<uint8_t> in_flags, scratch;
  std::vector<RowRun> runs;
  PoolWork work;
};

}  // namespace

void run_delta_pool(const PoolSpec& spec, const PoolRun& run, const ParallelFor& parallel_for, RunStats* stats) {
  const Window2D w = spec.window.resolve(run.height, run.width);
  const KernelTable& k = run.kernels ? *run.kernels : kernels();
  const int64_t b = run.block, C = run.channels, out_plane = w.out_pixels();
  // What pool_channels walks: C planes of the window, or C/b planes of lines (window_over_lines).
  const bool by_lines = b > 1 && w.x.stride == 1;
  const Window2D pw = by_lines ? window_over_lines(w, b) : w;
  const int64_t planes = b > 1 ? C / b : C, in_plane = pw.in_pixels(), pool_plane = pw.out_pixels();
  // The calling thread's, reused run after run; the loop bodies reach it only through these references.
  thread_local PoolRunScratch run_scratch;
  std::vector<uint8_t>& in_flags = run_scratch.in_flags;
  std::vector<uint8_t>& scratch = run_scratch.scratch;
  std::vector<RowRun>& runs = run_scratch.runs;
  PoolWork& work = run_scratch.work;
  for (int64_t n = 0; n < run.batch; ++n) {
    const ItemPlan item = plan_item(run, n, spec.threshold, block_rule_of(spec.gate), run.kernels, w, spec.dense_fraction, C, in_flags, scratch,
                                    stats, parallel_for);
    if (item.recompute == 0) continue;
    const float* src = recompute_source(item.input);  // rule 4: recompute from the moved reference
    if (b > 1 && item.recompute == out_plane) {
      pool_whole_item_by_lines(k, w, b, src, item.y, planes, parallel_for);
      continue;
    }
    runs.clear();
    if (item.recompute == out_plane) {
      for (int64_t oy = 0; oy < w.y.out; ++oy) runs.push_back({oy, 0, w.x.out});
    } else {
      mask_runs(item.out_flags, w.y.out, w.x.out, runs);
    }
    if (b > 1 && !by_lines) {
      pool_pixels_by_lines(k, w, runs, b, src, item.y, planes, parallel_for);
      continue;
    }
    if (by_lines)
      for (RowRun& r : runs) r = {r.y, r.x_begin * b, r.x_end * b};
    plan_work(pw, runs, k.gemm_vec, work);
    // Chunks of channels: a chunk's row-pass buffer stays in L2; up to four chunks share the threads, unless
    // that leaves fewer than 16 channels to a kernel call (a call sorts out its taps once for all of them).
    constexpr int64_t kBufferFloats = int64_t{1} << 15;
    const int64_t buffer_plane = work.separable ? pw.y.in * work.span : 0;
    int64_t chunk = std::max((planes + 3) / 4, std::min<int64_t>(planes, 16));
    if (buffer_plane > 0) chunk = std::min(chunk, std::max<int64_t>(1, kBufferFloats / buffer_plane));
    const int64_t chunks = (planes + chunk - 1) / chunk;
    parallel_for(chunks, [&](int64_t i) {
      thread_local std::vector<float> buffer;
      thread_local std::vector<PoolTap> taps;
      const int64_t c0 = i * chunk, c1 = std::min(planes, c0 + chunk);
      pool_channels(k, pw, work, runs, src + c0 * in_plane, item.y + c0 * pool_plane, c1 - c0, buffer, taps);
    });
  }
}

}  // namespace deltaonnx

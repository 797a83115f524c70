#include "delta_pool/cpu/pool_engine.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace deltaonnx {

std::string PoolSpec::validate() const {
  std::string e = window.validate();
  if (!e.empty()) return e;
  if (!(threshold >= 0.f) || !std::isfinite(threshold)) return "threshold must be finite and >= 0";
  if (!(dense_fraction >= 0.f) || !(dense_fraction <= 1.f)) return "dense_fraction must be in [0, 1]";
  return "";
}

namespace {

// NaN-propagating max: once either side is NaN the result is NaN (no NaN may hide a change downstream).
inline float max_nan(float acc, float v) { return (v > acc || v != v) ? v : acc; }

// Max of one channel over the output pixels of a row run [x0, x1) of row oy: tap by tap, each a pass over
// the run's columns whose tap lies inside the input (contiguous for stride 1, so it vectorises).
void pool_run(const float* in, const Window2D& w, int64_t oy, int64_t x0, int64_t x1, float* out_row) {
  const int64_t H = w.y.in, W = w.x.in, sx = w.x.stride;
  float* acc = out_row + x0;
  const int64_t n = x1 - x0;
  for (int64_t j = 0; j < n; ++j) acc[j] = std::numeric_limits<float>::lowest();
  for (int64_t ky = 0; ky < w.y.kernel; ++ky) {
    const int64_t iy = w.y.input_of(oy, ky);
    if (iy < 0 || iy >= H) continue;
    const float* row = in + iy * W;
    for (int64_t kx = 0; kx < w.x.kernel; ++kx) {
      const int64_t ix0 = w.x.input_of(x0, kx);  // input column of the run's first pixel
      int64_t lo = ix0 >= 0 ? 0 : (-ix0 + sx - 1) / sx;
      int64_t hi = W - ix0 <= 0 ? 0 : (W - ix0 + sx - 1) / sx;
      lo = std::min(lo, n);
      hi = std::max(lo, std::min(hi, n));
      const float* src = row + ix0;
      if (sx == 1) {
        for (int64_t j = lo; j < hi; ++j) acc[j] = max_nan(acc[j], src[j]);
      } else {
        for (int64_t j = lo; j < hi; ++j) acc[j] = max_nan(acc[j], src[j * sx]);
      }
    }
  }
}

}  // namespace

void run_delta_pool(const PoolSpec& spec, const PoolRun& run, const ParallelFor& parallel_for, RunStats* stats) {
  const Window2D w = spec.window.resolve(run.height, run.width);
  const int64_t C = run.channels, in_plane = w.in_pixels(), out_plane = w.out_pixels();
  std::vector<uint8_t> in_flags, scratch;
  std::vector<RowRun> runs;
  for (int64_t n = 0; n < run.batch; ++n) {
    const ItemPlan item = plan_item(run, n, spec.threshold, run.kernels, w, spec.dense_fraction, C, in_flags, scratch,
                                    stats, parallel_for);
    const InputState& st = item.input;
    float* y = item.y;
    uint8_t* out_flags = item.out_flags;
    const int64_t recompute = item.recompute;
    if (recompute == 0) continue;
    runs.clear();
    mask_runs(out_flags, w.y.out, w.x.out, runs);
    const float* src = recompute_source(st);  // rule 4: recompute from the moved reference
    parallel_for(C, [&](int64_t c) {
      for (const RowRun& r : runs)
        pool_run(src + c * in_plane, w, r.y, r.x_begin, r.x_end, y + c * out_plane + r.y * w.x.out);
    });
  }
}

}  // namespace deltaonnx

#include "delta_resize/cpu/resize_engine.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace deltaonnx {
namespace {

// A run of marked pixels [x0, x1) of source row `row`.
struct PixelRun {
  int64_t row, x0, x1;
};

// The outputs of source pixels [x0, x1) of row sy of one plane: each pixel's `lane` floats written fw times into
// the first output row (L > 0: a compile-time count, so a copy is a few vector moves), that span then copied to
// the fh - 1 rows below.
template <int L>
void resize_run(const ResizeStep& s, const float* x, float* y, const PixelRun& run) {
  if (run.x1 <= run.x0) return;  // a row of no pixels (a side of 0): its buffers may be null, and memcpy wants them not
  const int64_t lane = L > 0 ? L : s.lane, row = s.out_width() * lane;
  float* first = y + run.row * s.factor_h * row + run.x0 * s.factor_w * lane;
  const float* source = x + (run.row * s.width + run.x0) * lane;
  const int64_t count = run.x1 - run.x0;
  if (L == 1 && s.factor_w == 2) {  // NCHW x2 (an FPN's): one loop the compiler vectorises as interleaved stores
    for (int64_t sx = 0; sx < count; ++sx) first[2 * sx] = first[2 * sx + 1] = source[sx];
  } else {
    for (int64_t sx = 0; sx < count; ++sx)
      for (int64_t dx = 0; dx < s.factor_w; ++dx)
        std::memcpy(first + (sx * s.factor_w + dx) * lane, source + sx * lane, static_cast<size_t>(lane) * sizeof(float));
  }
  const size_t span = static_cast<size_t>(count * s.factor_w * lane) * sizeof(float);
  for (int64_t dy = 1; dy < s.factor_h; ++dy) std::memcpy(first + dy * row, first, span);
}

template <int L>
void resize_runs(const ResizeStep& s, const float* x, float* y, const std::vector<PixelRun>& runs) {
  for (const PixelRun& run : runs) resize_run<L>(s, x, y, run);
}

template <int L>
void resize_plane(const ResizeStep& s, const float* x, float* y) {
  for (int64_t sy = 0; sy < s.height; ++sy) resize_run<L>(s, x, y, {sy, 0, s.width});
}

// The variants for a lane count: 16 and 8 (blocked at AVX-512's and AVX2's b) and 1 (NCHW) with the copy's size known
// when compiled, any other at run time.
struct LaneKernels {
  void (*plane)(const ResizeStep&, const float*, float*);
  void (*runs)(const ResizeStep&, const float*, float*, const std::vector<PixelRun>&);
};
template <int L>
constexpr LaneKernels kLaneKernels{resize_plane<L>, resize_runs<L>};

LaneKernels lane_kernels(int64_t lane) {
  switch (lane) {
    case 16: return kLaneKernels<16>;
    case 8: return kLaneKernels<8>;
    case 1: return kLaneKernels<1>;
    default: return kLaneKernels<0>;
  }
}

void fill_map(const ResizeStep& s, int64_t n) {
  if (s.map_out == nullptr) return;
  for (int64_t q = n * s.out_pixels(); q < (n + 1) * s.out_pixels(); ++q) resize_map_thread(s, q);
}

}  // namespace

void resize_whole(const ResizeStep& s, const ParallelFor& parallel_for) {
  ResizeStep whole = s;
  whole.map_in = nullptr;  // map_out all 1
  const int64_t in_plane = s.pixels() * s.lane, out_plane = s.out_pixels() * s.lane;
  const auto plane = lane_kernels(s.lane).plane;
  parallel_for(s.batch * s.planes, [&](int64_t i) { plane(s, s.x + i * in_plane, s.y + i * out_plane); });
  for (int64_t n = 0; n < s.batch; ++n) fill_map(whole, n);
}

void resize_marked(const ResizeStep& s, const ParallelFor& parallel_for) {
  const int64_t in_plane = s.pixels() * s.lane, out_plane = s.out_pixels() * s.lane;
  const auto resize = lane_kernels(s.lane).runs;
  thread_local std::vector<PixelRun> listed;  // the calling thread's, read by the loop bodies through `runs`
  std::vector<PixelRun>& runs = listed;
  for (int64_t n = 0; n < s.batch; ++n) {
    fill_map(s, n);
    runs.clear();  // the item's runs of marked pixels, listed once for all its planes
    const uint8_t* marks = s.map_in + n * s.pixels();
    for (int64_t sy = 0; sy < s.height; ++sy) {
      const uint8_t* row = marks + sy * s.width;
      for (int64_t sx = 0; sx < s.width;) {
        if (row[sx] == 0) {
          ++sx;
          continue;
        }
        const int64_t x0 = sx;
        while (sx < s.width && row[sx] != 0) ++sx;
        runs.push_back({sy, x0, sx});
      }
    }
    if (runs.empty()) continue;
    parallel_for(s.planes, [&](int64_t c) {
      const int64_t i = n * s.planes + c;
      resize(s, s.x + i * in_plane, s.y + i * out_plane, runs);
    });
  }
}

}  // namespace deltaonnx

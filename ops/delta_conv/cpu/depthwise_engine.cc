#include "delta_conv/cpu/depthwise_engine.h"

#include <algorithm>
#include <cstring>

#include "common/checked_size.h"
#include "common/kernel_table.h"

namespace deltaonnx {

bool depthwise_applies(const ConvSpec& spec, const PackedConvWeights& weights) {
  return spec.in_channels_per_group == 1 && spec.out_channels == spec.group && weights.row_layout();
}

namespace {

// A ring slot: the input row whose phases it holds (-1: none), built over phase columns [begin, end).
struct Slot {
  int64_t row = -1, begin = 0, end = 0;
};

// Per-thread buffers of one unit of work (a group of channels over a band of runs).
struct DepthwiseScratch {
  std::vector<const float*> taps;    // the taps of one run (first channel of the group), for depthwise_run
  std::vector<int64_t> tap_offsets;  // per kx: where it reads its row's phases, from the run's first column
  // Zero-padded stride phases of the input rows one output row reads, in a ring of `ring` row slots (rows are
  // visited in increasing order, so a slot is reused only once its row has left the window). Channel c of the
  // group holds phase q of slot i's row at c*ring_stride + (i*sx + q)*span, phase columns from 0.
  std::vector<float> phases;
  std::vector<Slot> slots;
  std::vector<float> zeros;  // the bias of a conv without one
};

DepthwiseScratch& depthwise_scratch() {
  thread_local DepthwiseScratch s;
  return s;
}

// Short runs (fewer than kShortRun vectors on average) are computed kChannelGroup channels together, run by
// run: the run's setup is shared and the kernel gets independent FMA chains. Long runs go channel by channel:
// a channel's rows then stream from one plane (measured, 1 thread: 3x3 64x120x160 and 3x3 s2 96x120x160 dense
// take 1.1-1.4x as long in groups of 8; 3x3 s2 96x60x80 and 5x5 64x60x80 gain ~15% from them).
constexpr int64_t kChannelGroup = 8;
constexpr int64_t kShortRun = 4;
// Units of work to offer the thread pool at least (groups cut into bands of runs when there are fewer).
constexpr int64_t kMinUnits = 16;
// Stride-2 phase columns below this many are split by a plain loop rather than a deinterleave2 call.
constexpr int64_t kShortSplit = 16;

// What every unit of one batch item shares.
struct DepthwiseItem {
  const KernelTable& k;
  const Window2D& w;
  const PackedConvWeights& weights;
  const float* src;  // [C, H, W]
  float* y;          // [C, Ho, Wo]
  const float* bias;
  const std::vector<ActivationParams>& acts;
  const std::vector<RowRun>& runs;  // recomputed pixels, rows in increasing order
  // Stride 1: the output columns [inner_lo, inner_hi) whose windows lie inside the input columns; runs within
  // them read the source itself.
  int64_t inner_lo = 0, inner_hi = 0;
  bool reads_source(const RowRun& r) const { return r.x_begin >= inner_lo && r.x_end <= inner_hi; }
};

// The phase columns [begin, end) whose input columns v*sx + q - pad (q < sx) all lie inside the row; the
// others touch the padding.
struct PhaseInterior {
  int64_t begin = 0, end = 0;
  explicit PhaseInterior(const Axis& ax) {
    const int64_t last = ax.in + ax.pad_begin - ax.stride;  // v*sx + sx-1 - pad <= in-1  <=>  v*sx <= last
    begin = (ax.pad_begin + ax.stride - 1) / ax.stride;
    end = last < 0 ? begin : std::max(begin, last / ax.stride + 1);
  }
};

// Phase columns [v0, v1) of padded input row iy: dst[q*span + v] = the input at padded column v*sx + q (phase
// q), zero in the padding. Stride 1 copies; stride 2 deinterleaves the columns inside the row straight from
// it (the kernel table's deinterleave2), the few at the padding one by one.
void build_phases(const DepthwiseItem& it, const PhaseInterior& interior, const float* in, int64_t iy, int64_t v0,
                  int64_t v1, int64_t span, float* dst) {
  const Axis& ax = it.w.x;
  const int64_t sx = ax.stride, W = ax.in, pad = ax.pad_begin;
  const float* row = in + iy * W;
  const int64_t inner0 = std::min(v1, std::max(v0, interior.begin));
  const int64_t inner1 = std::max(inner0, std::min(v1, interior.end));
  auto one_by_one = [&](int64_t a, int64_t b) {
    for (int64_t q = 0; q < sx; ++q)
      for (int64_t v = a; v < b; ++v) {
        const int64_t ix = v * sx + q - pad;
        dst[q * span + v] = ix >= 0 && ix < W ? row[ix] : 0.f;
      }
  };
  one_by_one(v0, inner0);
  if (sx == 1) {
    std::memcpy(dst + inner0, row + inner0 - pad, static_cast<size_t>(inner1 - inner0) * sizeof(float));
  } else if (sx == 2 && inner1 - inner0 >= kShortSplit) {
    it.k.deinterleave2(row + 2 * inner0 - pad, inner1 - inner0, dst + inner0, dst + span + inner0);
  } else if (sx == 2) {  // a few columns (a short run of a sparse map): no call
    for (int64_t v = inner0; v < inner1; ++v) {
      dst[v] = row[2 * v - pad];
      dst[span + v] = row[2 * v + 1 - pad];
    }
  } else {
    one_by_one(inner0, inner1);
  }
  one_by_one(inner1, v1);
}

// The input rows the next output row adds to the window (stride rows past this row's last), over input columns
// [col0, col1), for every channel of a group: requested while this row computes, they arrive in time for the
// next (the hardware prefetchers alone leave 3x3 64x120x160 dense ~1.2x as long, sparse maps up to 1.5x).
void prefetch_next_rows(const Window2D& w, const float* in, int64_t plane, int64_t channels, const RowRun& run,
                        int64_t col0, int64_t col1) {
  const int64_t first = w.y.input_of(run.y, w.y.kernel - 1) + 1, last = std::min(w.y.in, first + w.y.stride);
  col0 = std::max<int64_t>(0, col0);
  col1 = std::min(w.x.in, col1);
  constexpr int64_t kLine = 64 / sizeof(float);
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t iy = first; iy < last; ++iy) {
      const float* row = in + c * plane + iy * w.x.in;
      for (int64_t x = col0; x < col1; x += kLine) __builtin_prefetch(row + x, 0, 3);
      if (col1 > col0) __builtin_prefetch(row + col1 - 1, 0, 3);
    }
}

// The runs [r0, r1) of channels [c0, c0 + channels), all channels of a run in one kernel call. A stride-1 run
// whose windows stay inside the input columns reads the source rows directly (tap kx: the row from column
// x - pad + kx*dilation). The others read zero-padded stride phases of their input rows (a padded copy for
// stride 1): tap kx is phase (kx*dilation) % sx, (kx*dilation) / sx columns on. Either way every tap of a run
// is one contiguous read, with no border case. The phases of a row are built once, over the columns the runs
// read (a slot keeps its row's built range and extends it).
void run_unit(const DepthwiseItem& it, int64_t c0, int64_t channels, size_t r0, size_t r1) {
  const Window2D& w = it.w;
  const int64_t H = w.y.in, W = w.x.in, Wo = w.x.out, kh = w.y.kernel, kw = w.x.kernel;
  const int64_t sx = w.x.stride, dx = w.x.dilation, reach = (kw - 1) * dx / sx;
  const float* in = it.src + c0 * H * W;
  float* out = it.y + c0 * w.out_pixels();
  DepthwiseScratch& s = depthwise_scratch();
  const float* bias = it.bias;
  if (bias == nullptr) {
    s.zeros.assign(static_cast<size_t>(channels), 0.f);
    bias = s.zeros.data() - c0;
  }
  s.taps.resize(checked_count({kh, kw}, "the depthwise taps"));
  const float** taps = s.taps.data();
  // Output columns [x, x_end) read phase columns [x, x_end + reach) of each phase of span columns; a channel's
  // ring takes ring_stride floats.
  const int64_t span = Wo + reach, ring = (kh - 1) * w.y.dilation + 1;
  const int64_t ring_stride = checked_product({ring, sx, span}, "a depthwise row ring");
  s.phases.resize(checked_count({channels, ring_stride}, "the depthwise row rings"));
  s.slots.assign(static_cast<size_t>(ring), Slot{});
  // Tap kx of a row: phase (kx*dx) % sx, (kx*dx) / sx columns on (the source row itself when sx is 1).
  s.tap_offsets.resize(static_cast<size_t>(kw));
  int64_t* tap_offsets = s.tap_offsets.data();
  for (int64_t kx = 0; kx < kw; ++kx) tap_offsets[kx] = kx * dx % sx * span + kx * dx / sx;
  float* phases = s.phases.data();
  Slot* slots = s.slots.data();
  const PhaseInterior interior(w.x);
  auto build = [&](int64_t iy, float* row_phases, int64_t v0, int64_t v1) {  // columns [v0, v1), every channel
    for (int64_t c = 0; c < channels; ++c)
      build_phases(it, interior, in + c * H * W, iy, v0, v1, span, row_phases + c * ring_stride);
  };
  const float* weights = it.weights.row(c0);
  const int64_t dy = w.y.dilation, out_plane = w.out_pixels();
  for (size_t r = r0; r < r1; ++r) {
    const RowRun& run = it.runs[r];
    const bool direct = sx == 1 && it.reads_source(run);
    // The rows inside the input: a contiguous range of ky (the taps in the padding add nothing).
    int64_t ky0 = 0, ky1 = kh;
    while (ky0 < kh && w.y.input_of(run.y, ky0) < 0) ++ky0;
    while (ky1 > ky0 && w.y.input_of(run.y, ky1 - 1) >= H) --ky1;
    if (ky0 == ky1) {  // the window lies in the vertical padding: act(bias)
      it.k.depthwise_run(0, taps, 0, weights, kh * kw, bias + c0, it.acts.data() + c0, channels,
                         run.x_end - run.x_begin, out + run.y * Wo + run.x_begin, out_plane);
      continue;
    }
    const int64_t v0 = run.x_begin, v1 = run.x_end + reach;  // the phase columns the run reads
    int64_t iy = w.y.input_of(run.y, ky0), slot = direct ? 0 : iy % ring;
    const float** tap = taps;
    for (int64_t ky = ky0; ky < ky1; ++ky, iy += dy) {
      const float* base;  // tap kx of the first channel reads base + tap_offsets[kx]
      if (direct) {
        base = in + iy * W + w.x.input_of(run.x_begin, 0);
      } else {
        Slot& sl = slots[slot];
        float* row_phases = phases + slot * sx * span;
        if (sl.row != iy) {
          build(iy, row_phases, v0, v1);
          sl = Slot{iy, v0, v1};
        } else if (v0 < sl.begin || v1 > sl.end) {  // extend the built range, contiguous: a gap is built too
          if (v0 < sl.begin) build(iy, row_phases, v0, sl.begin);
          if (v1 > sl.end) build(iy, row_phases, sl.end, v1);
          sl.begin = std::min(sl.begin, v0);
          sl.end = std::max(sl.end, v1);
        }
        base = row_phases + run.x_begin;
        slot += dy;  // the next row's slot: dy < ring whenever there is a next row
        if (slot >= ring) slot -= ring;
      }
      for (int64_t kx = 0; kx < kw; ++kx) *tap++ = base + tap_offsets[kx];
    }
    prefetch_next_rows(w, in, H * W, channels, run, v0 * sx - w.x.pad_begin, v1 * sx - w.x.pad_begin);
    it.k.depthwise_run((ky1 - ky0) * kw, taps, direct ? H * W : ring_stride, weights + ky0 * kw, kh * kw, bias + c0,
                       it.acts.data() + c0, channels, run.x_end - run.x_begin, out + run.y * Wo + run.x_begin,
                       out_plane);
  }
}

}  // namespace

bool run_depthwise_item(const ConvSpec& spec, const PackedConvWeights& weights, const Window2D& w, const float* src,
                        const uint8_t* out_flags, float* y, const float* bias,
                        const std::vector<ActivationParams>& acts, const ParallelFor& parallel_for) {
  if (!depthwise_applies(spec, weights)) return false;
  const int64_t C = spec.out_channels;
  thread_local std::vector<RowRun> runs;  // the caller's thread; units only read it
  runs.clear();
  mask_runs(out_flags, w.y.out, w.x.out, runs);
  if (runs.empty()) return true;

  DepthwiseItem it{weights.kernels(), w, weights, src, y, bias, acts, runs};
  if (w.x.stride == 1) {  // x - pad + kx*dilation inside [0, W) for every kx
    it.inner_lo = std::min(w.x.out, w.x.pad_begin);
    const int64_t last = w.x.in + w.x.pad_begin - (w.x.kernel - 1) * w.x.dilation;  // first x reading past the row
    it.inner_hi = std::max(it.inner_lo, std::min(w.x.out, last));
  }
  // Units: groups of channels, each cut into bands of runs when there are too few groups to share among threads.
  const int64_t nruns = static_cast<int64_t>(runs.size());
  int64_t covered = 0;
  for (const RowRun& r : runs) covered += r.x_end - r.x_begin;
  const int64_t group = covered < kShortRun * it.k.gemm_vec * nruns ? kChannelGroup : 1;
  const int64_t groups = (C + group - 1) / group;
  const int64_t bands = std::max<int64_t>(1, std::min<int64_t>(nruns, (kMinUnits + groups - 1) / groups));
  parallel_for(groups * bands, [&](int64_t u) {
    const int64_t g = u / bands, band = u % bands;
    const size_t r0 = static_cast<size_t>(nruns * band / bands), r1 = static_cast<size_t>(nruns * (band + 1) / bands);
    const int64_t c0 = g * group;
    if (r0 < r1) run_unit(it, c0, std::min(group, C - c0), r0, r1);
  });
  return true;
}

}  // namespace deltaonnx

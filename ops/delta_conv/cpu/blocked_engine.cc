#include "delta_conv/cpu/blocked_engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/checked_size.h"
#include "common/change_map.h"
#include "common/delta_state.h"

namespace deltaonnx {

BlockedConvWeights::BlockedConvWeights(const ConvSpec& spec, const float* weights, int64_t block)
    : block_(block), out_(spec.out_channels) {
  const int64_t C = spec.in_channels_per_group, taps = spec.window.kernel_h * spec.window.kernel_w;
  lines_ = C / block * taps;
  data_.assign(checked_count({lines_, block, out_}, "the blocked weights"), 0.f);
  for (int64_t m = 0; m < out_; ++m)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < taps; ++t)
        data_[(((c / block) * taps + t) * block + c % block) * out_ + m] = weights[(m * C + c) * taps + t];
}

namespace {

// Pixels per gathered tile, the unit of work handed to the thread pool: a multiple of the tile GEMM's register
// blocks (24 accumulators on AVX-512, 12 on AVX2), so a weight vector loaded feeds 6 to 24 pixels.
constexpr int64_t kTilePixels = 24;

struct TileContext {
  const KernelTable& k;
  const ConvSpec& spec;
  const BlockedConvWeights& weights;
  const Window2D& w;
  const std::vector<ActivationParams>& acts;
  const float* bias;           // M values (zeros when the node has none)
  const float* src;            // [C/b][H][W][b]: what recomputed outputs read
  float* y;                    // [M/b][Ho][Wo][b]
  const std::vector<int64_t>& gathered;  // recomputed outputs gathered into tiles, raster order
};

// Per thread: a gathered tile and the line pointers handed to the tile GEMM.
struct TileScratch {
  std::vector<float> tile;
  std::vector<const float*> lines;
};

// One line of B floats: B is a constant, so the copy is inlined (a call to memcpy per 64-byte line cost as much as
// the tile GEMM).
template <int B>
inline void copy_line(float* dst, const float* src) {
  std::memcpy(dst, src, B * sizeof(float));
}

// kTilePixels outputs of one row from `first` (a pixel index), every window inside the input: the GEMM reads
// their lines where they lie, pixel p of line (cb, ky, kx) stride * b floats after pixel 0's. No copy.
template <int B>
void compute_row_in_place(const TileContext& ctx, int64_t first, TileScratch& scratch) {
  const Window2D& w = ctx.w;
  const int64_t lines = ctx.weights.lines(), kW = w.x.kernel, taps = w.y.kernel * kW;
  const int64_t H = w.y.in, W = w.x.in, in_lines = H * W * B, oy = first / w.x.out, ox = first % w.x.out;
  scratch.lines.resize(static_cast<size_t>(lines));
  for (int64_t cb = 0; cb < lines / taps; ++cb)
    for (int64_t ky = 0; ky < w.y.kernel; ++ky)
      for (int64_t kx = 0; kx < kW; ++kx)
        scratch.lines[(cb * taps + ky * kW + kx)] =
            ctx.src + cb * in_lines + (w.y.input_of(oy, ky) * W + w.x.input_of(ox, kx)) * B;
  float* outs[kTilePixels];
  for (int64_t p = 0; p < kTilePixels; ++p) outs[p] = ctx.y + (first + p) * B;
  ctx.k.blocked_tile_gemm(scratch.lines.data(), lines, w.x.stride * B, kTilePixels, B, ctx.weights.row(0, 0),
                          ctx.spec.out_channels, ctx.bias, ctx.acts.data(), outs, kTilePixels, w.out_pixels() * B);
}

// One tile: the patches of up to kTilePixels listed outputs from gathered[first] copied as lines
// tile[line][pixel][lane] (zeros where a tap falls off the input, and in the padding columns of the last tile),
// times the blocked weights with bias and activation applied at the store (the kernel table's
// blocked_tile_gemm). Every line of the tile is written once: copied, or zeroed where it has nothing to read.
template <int B>
void compute_gathered_tile(const TileContext& ctx, int64_t first, TileScratch& scratch) {
  const int64_t lines = ctx.weights.lines();
  const int64_t count = std::min<int64_t>(kTilePixels, static_cast<int64_t>(ctx.gathered.size()) - first);
  const Window2D& w = ctx.w;
  const int64_t H = w.y.in, W = w.x.in, kW = w.x.kernel, taps = w.y.kernel * kW, in_lines = H * W * B;
  const int64_t blocks = lines / taps;
  scratch.tile.resize(static_cast<size_t>(lines * kTilePixels * B));
  scratch.lines.resize(static_cast<size_t>(lines));
  float* t = scratch.tile.data();
  const int64_t line_step = kTilePixels * B;  // from one tile line to the next (cb, tap) of the same pixel
  for (int64_t l = 0; l < lines; ++l) scratch.lines[l] = t + l * line_step;
  float* outs[kTilePixels];
  for (int64_t p = 0; p < kTilePixels; ++p) {
    float* column = t + p * B;
    if (p >= count) {  // a padding column of the last tile: computed, never stored
      for (int64_t l = 0; l < lines; ++l) std::memset(column + l * line_step, 0, B * sizeof(float));
      continue;
    }
    const int64_t o = ctx.gathered[first + p], oy = o / w.x.out, ox = o % w.x.out;
    outs[p] = ctx.y + o * B;
    for (int64_t ky = 0; ky < w.y.kernel; ++ky) {
      const int64_t iy = w.y.input_of(oy, ky);
      const bool row_inside = iy >= 0 && iy < H;
      for (int64_t kx = 0; kx < kW; ++kx) {
        const int64_t ix = w.x.input_of(ox, kx);
        float* dst = column + (ky * kW + kx) * line_step;
        if (!row_inside || ix < 0 || ix >= W) {
          for (int64_t cb = 0; cb < blocks; ++cb) std::memset(dst + cb * taps * line_step, 0, B * sizeof(float));
          continue;
        }
        const float* line = ctx.src + (iy * W + ix) * B;
        for (int64_t cb = 0; cb < blocks; ++cb) copy_line<B>(dst + cb * taps * line_step, line + cb * in_lines);
      }
    }
  }
  ctx.k.blocked_tile_gemm(scratch.lines.data(), lines, B, kTilePixels, B, ctx.weights.row(0, 0),
                          ctx.spec.out_channels, ctx.bias, ctx.acts.data(), outs, count, w.out_pixels() * B);
}

// The two kinds of work for the block size b, resolved once per run.
using TileFunction = void (*)(const TileContext&, int64_t, TileScratch&);
struct TileFunctions {
  TileFunction in_place, gathered;
};
TileFunctions tile_functions(int64_t b) {
  switch (b) {
    case 16: return {compute_row_in_place<16>, compute_gathered_tile<16>};
    case 8: return {compute_row_in_place<8>, compute_gathered_tile<8>};
    case 4: return {compute_row_in_place<4>, compute_gathered_tile<4>};
    default: return {compute_row_in_place<1>, compute_gathered_tile<1>};
  }
}

// Splits the recomputed outputs (out_flags) into rows read in place, each kTilePixels consecutive outputs of a
// row whose windows all lie inside the input (stride 1 or 2: the GEMM's pixel strides in registers), listed by
// first pixel in `in_place`, and the rest, listed one by one in `gathered`. Both in raster order.
void plan_tiles(const Window2D& w, const uint8_t* out_flags, std::vector<RowRun>& runs,
                std::vector<int64_t>& in_place, std::vector<int64_t>& gathered) {
  runs.clear();
  in_place.clear();
  gathered.clear();
  mask_runs(out_flags, w.y.out, w.x.out, runs);
  int64_t x_lo = 0, x_hi = w.x.out;  // outputs [x_lo, x_hi) of a row read no padding column
  while (x_lo < w.x.out && w.x.input_of(x_lo, 0) < 0) ++x_lo;
  while (x_hi > x_lo && w.x.input_of(x_hi - 1, w.x.kernel - 1) >= w.x.in) --x_hi;
  const bool strided_ok = w.x.stride <= 2;
  for (const RowRun& r : runs) {
    const int64_t row = r.y * w.x.out;
    const bool row_inside = w.y.input_of(r.y, 0) >= 0 && w.y.input_of(r.y, w.y.kernel - 1) < w.y.in;
    int64_t x = r.x_begin;
    if (strided_ok && row_inside) {
      const int64_t begin = std::max(r.x_begin, x_lo), end = std::min(r.x_end, x_hi);
      for (; x < begin; ++x) gathered.push_back(row + x);
      for (; x + kTilePixels <= end; x += kTilePixels) in_place.push_back(row + x);
    }
    for (; x < r.x_end; ++x) gathered.push_back(row + x);
  }
}

}  // namespace

void run_blocked_delta_conv(const ConvSpec& spec, const BlockedConvWeights& weights, const ConvRun& run,
                            const ParallelFor& parallel_for, RunStats* stats, const DenseItemConv* dense) {
  const Window2D w = spec.window.resolve(run.height, run.width);
  const int64_t M = spec.out_channels, out_plane = w.out_pixels(), b = weights.block();
  std::vector<ActivationParams> acts(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m) acts[m] = spec.activation_for(m);
  std::vector<float> bias(static_cast<size_t>(M), 0.f);
  if (run.bias != nullptr) std::copy_n(run.bias, M, bias.data());
  std::vector<uint8_t> in_flags(static_cast<size_t>(w.in_pixels())), scratch;
  std::vector<int64_t> in_place, gathered;
  std::vector<RowRun> runs;
  for (int64_t n = 0; n < run.batch; ++n) {
    InputState st = item_input(run, n, spec.threshold, nullptr, nullptr);
    st.block = b;
    const int64_t changed = detect_and_update_reference(st, in_flags.data(), parallel_for);
    uint8_t* out_flags = run.map_out + n * out_plane;
    const int64_t recompute =
        plan_recompute(in_flags.data(), changed, st.has_state, w, spec.dense_fraction, out_flags, scratch);
    if (stats) {
      stats->changed_inputs += changed;
      stats->recomputed_outputs += recompute;
    }
    float* y = run.y + n * M * out_plane;
    // Whole-item copies: the layout does not matter to them.
    carry_previous_output(run.y_prev ? run.y_prev + n * M * out_plane : nullptr, y, M, out_plane, recompute,
                          parallel_for);
    if (recompute == 0) continue;
    const float* src = recompute_source(st);
    if (recompute == out_plane && dense != nullptr && *dense && (*dense)(src, y)) continue;
    plan_tiles(w, out_flags, runs, in_place, gathered);
    const TileContext ctx{kernels(), spec, weights, w, acts, bias.data(), src, y, gathered};
    const TileFunctions fn = tile_functions(b);
    const int64_t rows = static_cast<int64_t>(in_place.size());
    const int64_t tiles = (static_cast<int64_t>(gathered.size()) + kTilePixels - 1) / kTilePixels;
    parallel_for(rows + tiles, [&](int64_t i) {
      thread_local TileScratch tile_scratch;
      if (i < rows) fn.in_place(ctx, in_place[i], tile_scratch);
      else fn.gathered(ctx, (i - rows) * kTilePixels, tile_scratch);
    });
  }
}

}  // namespace deltaonnx

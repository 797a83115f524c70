#include "delta_conv/cpu/blocked_engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/aligned_scratch.h"
#include "common/channel_block.h"
#include "common/checked_size.h"
#include "common/change_map.h"
#include "common/delta_state.h"

namespace deltaonnx {

BlockedConvWeights::BlockedConvWeights(const ConvSpec& spec, const float* weights, int64_t block,
                                       int64_t real_in_channels)
    : block_(block), out_(spec.out_channels), depthwise_(spec.group > 1) {
  const int64_t C = spec.in_channels_per_group, taps = spec.window.kernel_h * spec.window.kernel_w;
  if (depthwise_) {  // group = C = M (the op definition admits no other grouped conv): [M/b][taps][b]
    lines_ = out_ / block * taps;
    data_.assign(checked_count({lines_, block}, "the blocked depthwise weights"), 0.f);
    for (int64_t m = 0; m < out_; ++m)
      for (int64_t t = 0; t < taps; ++t) data_[((m / block) * taps + t) * block + m % block] = weights[m * taps + t];
    return;
  }
  lines_ = C / block * taps;
  if (real_in_channels > 0 && real_in_channels < C) {  // a padded block: its pad lanes' rows are zero, skipped
    tail_lines_ = taps;
    tail_lanes_ = real_in_channels - (C - block);
  }
  data_.assign(checked_count({lines_, block, out_}, "the blocked weights"), 0.f);
  for (int64_t m = 0; m < out_; ++m)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t t = 0; t < taps; ++t)
        data_[(((c / block) * taps + t) * block + c % block) * out_ + m] = weights[(m * C + c) * taps + t];
}

ConvSpec padded_conv_spec(const ConvSpec& spec, int64_t block) {
  ConvSpec p = spec;
  const bool depthwise = spec.group > 1;  // group = C = M: each filter stays one input channel wide
  p.out_channels = padded_channels(spec.out_channels, block);
  p.in_channels_per_group = depthwise ? 1 : padded_channels(spec.in_channels_per_group, block);
  if (depthwise) p.group = p.out_channels;
  if (p.activation.slopes.size() > 1) p.activation.slopes.resize(static_cast<size_t>(p.out_channels), 0.f);
  return p;
}

PaddedConv pad_conv_channels(const ConvSpec& spec, const float* weights, int64_t block) {
  PaddedConv p{padded_conv_spec(spec, block), {}};
  const int64_t M = spec.out_channels, Cg = spec.in_channels_per_group, taps = spec.window.kernel_h * spec.window.kernel_w;
  const int64_t Mp = p.spec.out_channels, Cgp = p.spec.in_channels_per_group;
  p.weights.assign(checked_count({Mp, Cgp, taps}, "the padded weights"), 0.f);
  for (int64_t m = 0; m < M; ++m)
    std::copy_n(weights + m * Cg * taps, Cg * taps, p.weights.data() + m * Cgp * taps);
  return p;
}

namespace {

// Recomputed outputs per unit of work handed to the thread pool: whose windows lie inside the input (read
// where they lie, in raster order whatever their rows), and whose windows leave it (gathered into a tile).
// Inside units are multiples of the GEMM's pixel groups (12 and 6 on AVX-512 and AVX2), so only an item's last
// unit has a tail, and long: a unit's first group has nothing prefetched (192 pixels measured 5-9% faster than
// 48 on the stem's 3x3 s2 16->32 at 10-50%), short enough to leave about 8 units per item to the threads.
constexpr int64_t kInsideGroup = 48, kInsideUnitMax = 4 * kInsideGroup;
constexpr int64_t kBorderPixels = 24;

struct TileContext {
  const KernelTable& k;
  const ConvSpec& spec;
  const BlockedConvWeights& weights;
  const Window2D& w;
  const std::vector<ActivationParams>& acts;
  const float* bias;                         // M values (zeros when the node has none)
  const float* src;                          // [C/b][H][W][b]: what recomputed outputs read
  float* y;                                  // [M/b][Ho][Wo][b]
  const float* z;                            // the sum input, as y, added at the store; nullptr: none
  const std::vector<int64_t>& window_lines;  // line (cb, ky, kx) of a window from its first line, in floats
  const std::vector<int64_t>& inside;        // recomputed outputs whose windows lie inside the input, raster order
  const std::vector<int64_t>& border;        // the other recomputed outputs, raster order
  int64_t inside_unit;                       // inside outputs per unit of work
};

// Per thread: the pixels handed to the GEMM (where their windows start, where they store) and, for border
// pixels, their gathered tile and its line offsets.
struct TileScratch {
  std::vector<const float*> pixels;
  std::vector<float*> outs;
  std::vector<const float*> sums;  // where each output's sum lies (with a sum input)
  std::vector<float> tile;
  std::vector<int64_t> tile_lines;
};

// One line of B floats: B is a constant, so the copy is inlined (a call to memcpy per 64-byte line cost as much as
// the tile GEMM).
template <int B>
inline void copy_line(float* dst, const float* src) {
  std::memcpy(dst, src, B * sizeof(float));
}

// The outputs of `count` pixels whose line l is pixels[p] + line_offsets[l] (l < weights.lines(), in the order
// (cb, ky, kx)): the pixel GEMM (adding sums[p] before the activation when given), or for a depthwise conv
// block cb of each pixel from its own lines alone (never with a sum: the op definition refuses it).
template <int B>
inline void multiply(const TileContext& ctx, const float* const* pixels, const int64_t* line_offsets, int64_t count,
                     float* const* outs, const float* const* sums) {
  const int64_t out_line_stride = ctx.w.out_pixels() * B, lines = ctx.weights.lines();
  if (ctx.weights.depthwise()) {
    const int64_t taps = ctx.w.y.kernel * ctx.w.x.kernel;
    ctx.k.blocked_depthwise_pixels(pixels, line_offsets, taps, lines / taps, count, B, ctx.weights.row(0, 0),
                                   ctx.bias, ctx.acts.data(), outs, out_line_stride);
    return;
  }
  ctx.k.blocked_pixel_gemm(pixels, line_offsets, lines, ctx.weights.tail_lines(), ctx.weights.tail_lanes(), count, B,
                           ctx.weights.row(0, 0), ctx.spec.out_channels, ctx.bias, ctx.acts.data(), outs,
                           out_line_stride, sums);
}

// Up to ctx.inside_unit outputs from inside[first]: the GEMM reads their windows' lines where they lie in X, pixel
// p's line l at (its window's first line) + window_lines[l]. No copy.
template <int B>
void compute_inside(const TileContext& ctx, int64_t first, TileScratch& scratch) {
  const Window2D& w = ctx.w;
  const int64_t count = std::min<int64_t>(ctx.inside_unit, static_cast<int64_t>(ctx.inside.size()) - first);
  grown(scratch.pixels, static_cast<size_t>(count));  // grow-only (all written below): tiles of many sizes share them
  grown(scratch.outs, static_cast<size_t>(count));
  grown(scratch.sums, static_cast<size_t>(count));
  for (int64_t p = 0; p < count; ++p) {
    const int64_t o = ctx.inside[first + p], oy = o / w.x.out, ox = o % w.x.out;
    scratch.pixels[p] = ctx.src + (w.y.input_of(oy, 0) * w.x.in + w.x.input_of(ox, 0)) * B;
    scratch.outs[p] = ctx.y + o * B;
    if (ctx.z != nullptr) scratch.sums[p] = ctx.z + o * B;
  }
  multiply<B>(ctx, scratch.pixels.data(), ctx.window_lines.data(), count, scratch.outs.data(),
              ctx.z != nullptr ? scratch.sums.data() : nullptr);
}

// Up to kBorderPixels outputs from border[first], whose windows leave the input: their patches copied as lines
// tile[line][pixel][lane] (zeros where a tap falls off the input), times the blocked weights. Every line of the
// tile is written once: copied, or zeroed where it has nothing to read.
template <int B>
void compute_border(const TileContext& ctx, int64_t first, TileScratch& scratch) {
  const int64_t lines = ctx.weights.lines();
  const int64_t count = std::min<int64_t>(kBorderPixels, static_cast<int64_t>(ctx.border.size()) - first);
  const Window2D& w = ctx.w;
  const int64_t H = w.y.in, W = w.x.in, kW = w.x.kernel, taps = w.y.kernel * kW, in_lines = H * W * B;
  const int64_t blocks = lines / taps;
  const int64_t line_step = kBorderPixels * B;  // from one tile line to the next (cb, tap) of the same pixel
  grown(scratch.tile, static_cast<size_t>(lines * line_step));  // grow-only: the lines of `count` pixels are written below
  grown(scratch.tile_lines, static_cast<size_t>(lines));
  grown(scratch.pixels, static_cast<size_t>(kBorderPixels));
  grown(scratch.outs, static_cast<size_t>(kBorderPixels));
  grown(scratch.sums, static_cast<size_t>(kBorderPixels));
  for (int64_t l = 0; l < lines; ++l) scratch.tile_lines[l] = l * line_step;
  for (int64_t p = 0; p < count; ++p) {
    float* column = scratch.tile.data() + p * B;
    const int64_t o = ctx.border[first + p], oy = o / w.x.out, ox = o % w.x.out;
    scratch.pixels[p] = column;
    scratch.outs[p] = ctx.y + o * B;
    if (ctx.z != nullptr) scratch.sums[p] = ctx.z + o * B;
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
  multiply<B>(ctx, scratch.pixels.data(), scratch.tile_lines.data(), count, scratch.outs.data(),
              ctx.z != nullptr ? scratch.sums.data() : nullptr);
}

// The two kinds of work for the block size b, resolved once per run.
using TileFunction = void (*)(const TileContext&, int64_t, TileScratch&);
struct TileFunctions {
  TileFunction inside, border;
};
TileFunctions tile_functions(int64_t b) {
  switch (b) {
    case 16: return {compute_inside<16>, compute_border<16>};
    case 8: return {compute_inside<8>, compute_border<8>};
    case 4: return {compute_inside<4>, compute_border<4>};
    default: return {compute_inside<1>, compute_border<1>};
  }
}

// What one run needs besides the tiles' own scratch, kept by the calling thread across runs.
struct BlockedRunScratch {
  std::vector<ActivationParams> acts;
  std::vector<float> bias;
  std::vector<uint8_t> in_flags, scratch;
  std::vector<int64_t> inside, border, window_lines;
  std::vector<RowRun> runs;
};

// Line (cb, ky, kx) of a window from the window's first line (cb 0, tap 0), in floats: the order in which the
// blocked weights list their rows (into `offsets`, returned).
const std::vector<int64_t>& window_line_offsets(const Window2D& w, int64_t blocks, int64_t b,
                                                std::vector<int64_t>& offsets) {
  offsets.clear();
  for (int64_t cb = 0; cb < blocks; ++cb)
    for (int64_t ky = 0; ky < w.y.kernel; ++ky)
      for (int64_t kx = 0; kx < w.x.kernel; ++kx)
        offsets.push_back((cb * w.y.in * w.x.in + ky * w.y.dilation * w.x.in + kx * w.x.dilation) * b);
  return offsets;
}

// Splits the recomputed outputs (out_flags) into those whose windows lie inside the input and the others (the
// border), both in raster order.
void plan_pixels(const Window2D& w, const uint8_t* out_flags, std::vector<RowRun>& runs, std::vector<int64_t>& inside,
                 std::vector<int64_t>& border) {
  runs.clear();
  inside.clear();
  border.clear();
  mask_runs(out_flags, w.y.out, w.x.out, runs);
  int64_t x_lo = 0, x_hi = w.x.out;  // outputs [x_lo, x_hi) of a row read no padding column
  while (x_lo < w.x.out && w.x.input_of(x_lo, 0) < 0) ++x_lo;
  while (x_hi > x_lo && w.x.input_of(x_hi - 1, w.x.kernel - 1) >= w.x.in) --x_hi;
  for (const RowRun& r : runs) {
    const int64_t row = r.y * w.x.out;
    const bool row_inside = w.y.input_of(r.y, 0) >= 0 && w.y.input_of(r.y, w.y.kernel - 1) < w.y.in;
    const int64_t begin = row_inside ? std::max(r.x_begin, x_lo) : r.x_end;
    const int64_t end = row_inside ? std::max(begin, std::min(r.x_end, x_hi)) : r.x_end;
    for (int64_t x = r.x_begin; x < begin; ++x) border.push_back(row + x);
    for (int64_t x = begin; x < end; ++x) inside.push_back(row + x);
    for (int64_t x = end; x < r.x_end; ++x) border.push_back(row + x);
  }
}

}  // namespace

void run_blocked_delta_conv(const ConvSpec& spec, const BlockedConvWeights& weights, const ConvRun& run,
                            const ParallelFor& parallel_for, RunStats* stats, const DenseItemConv* dense) {
  const Window2D w = spec.window.resolve(run.height, run.width);
  // The calling thread's, reused run after run; the loop bodies reach it through the TileContext's references.
  thread_local BlockedRunScratch run_scratch;
  BlockedRunScratch& rs = run_scratch;
  if (!run.has_state && dense != nullptr &&
      run_items_whole(spec, w, run, weights.block(), spec.out_channels, parallel_for, stats, *dense))
    return;
  const int64_t M = spec.out_channels, out_plane = w.out_pixels(), b = weights.block();
  std::vector<ActivationParams>& acts = rs.acts;
  acts.resize(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m) acts[m] = spec.activation_for(m);
  std::vector<float>& bias = rs.bias;
  bias.assign(static_cast<size_t>(M), 0.f);
  if (run.bias != nullptr) std::copy_n(run.bias, M, bias.data());
  std::vector<uint8_t>& in_flags = rs.in_flags;
  grown(in_flags, static_cast<size_t>(w.in_pixels()));  // detection writes every flag
  std::vector<uint8_t>& scratch = rs.scratch;
  std::vector<int64_t>& inside = rs.inside;
  std::vector<int64_t>& border = rs.border;
  std::vector<RowRun>& runs = rs.runs;
  const int64_t C = spec.in_channels_per_group * spec.group;
  const std::vector<int64_t>& window_lines = window_line_offsets(w, C / b, b, rs.window_lines);
  for (int64_t n = 0; n < run.batch; ++n) {
    InputState st = item_input(run, n, spec.threshold, nullptr, nullptr);
    st.block = b;
    const ChangedPixels changed_pixels = detect_and_update_reference(st, in_flags.data(), parallel_for);
    const int64_t changed = changed_pixels.count;
    uint8_t* out_flags = run.map_out + n * out_plane;
    const int64_t recompute =
        plan_recompute(changed_pixels.flags, changed, st.has_state, w, spec.dense_fraction, out_flags, scratch,
                       run.map_z != nullptr ? run.map_z + n * out_plane : nullptr);
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
    const float* z = run.z != nullptr ? run.z + n * M * out_plane : nullptr;
    if (recompute == out_plane && dense != nullptr && (*dense)(src, z, y)) continue;
    plan_pixels(w, out_flags, runs, inside, border);
    const int64_t inside_count = static_cast<int64_t>(inside.size());
    const int64_t unit = std::clamp<int64_t>(inside_count / 8 / kInsideGroup * kInsideGroup, kInsideGroup,
                                             kInsideUnitMax);
    const TileContext ctx{kernels(), spec, weights, w, acts, bias.data(), src, y, z, window_lines, inside, border, unit};
    const TileFunctions fn = tile_functions(b);
    const int64_t inside_units = (inside_count + unit - 1) / unit;
    const int64_t border_units = (static_cast<int64_t>(border.size()) + kBorderPixels - 1) / kBorderPixels;
    parallel_for(inside_units + border_units, [&](int64_t i) {
      thread_local TileScratch tile_scratch;
      if (i < inside_units) fn.inside(ctx, i * unit, tile_scratch);
      else fn.border(ctx, (i - inside_units) * kBorderPixels, tile_scratch);
    });
  }
}

}  // namespace deltaonnx

#include "delta_conv/cpu/blocked_engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/checked_size.h"
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

// Pixels per gathered tile: the unit of work handed to the thread pool.
constexpr int64_t kTilePixels = 8;

struct TileContext {
  const KernelTable& k;
  const ConvSpec& spec;
  const BlockedConvWeights& weights;
  const Window2D& w;
  const std::vector<ActivationParams>& acts;
  const float* bias;           // M values (zeros when the node has none)
  const float* src;            // [C/b][H][W][b]: what recomputed outputs read
  float* y;                    // [M/b][Ho][Wo][b]
  const std::vector<int64_t>& outputs;  // recomputed output pixels, raster order
};

// One tile: the patches of up to kTilePixels listed outputs gathered as lines tile[line][pixel][lane] (zeros
// where a tap falls off the input, and in the padding columns of the last tile), times the blocked weights with
// bias and activation applied at the store (the kernel table's blocked_tile_gemm).
void compute_tile(const TileContext& ctx, int64_t first, std::vector<float>& tile) {
  const int64_t b = ctx.weights.block(), lines = ctx.weights.lines();
  const int64_t count = std::min<int64_t>(kTilePixels, static_cast<int64_t>(ctx.outputs.size()) - first);
  const Window2D& w = ctx.w;
  const int64_t H = w.y.in, W = w.x.in, taps = w.y.kernel * w.x.kernel, in_lines = H * W * b;
  tile.assign(static_cast<size_t>(lines * kTilePixels * b), 0.f);
  float* outs[kTilePixels];
  for (int64_t p = 0; p < count; ++p) {
    const int64_t o = ctx.outputs[first + p], oy = o / w.x.out, ox = o % w.x.out;
    outs[p] = ctx.y + o * b;
    for (int64_t ky = 0; ky < w.y.kernel; ++ky) {
      const int64_t iy = w.y.input_of(oy, ky);
      if (iy < 0 || iy >= H) continue;
      for (int64_t kx = 0; kx < w.x.kernel; ++kx) {
        const int64_t ix = w.x.input_of(ox, kx);
        if (ix < 0 || ix >= W) continue;
        const float* line = ctx.src + (iy * W + ix) * b;
        for (int64_t cb = 0; cb < lines / taps; ++cb)
          std::memcpy(tile.data() + ((cb * taps + ky * w.x.kernel + kx) * kTilePixels + p) * b, line + cb * in_lines,
                      static_cast<size_t>(b) * sizeof(float));
      }
    }
  }
  ctx.k.blocked_tile_gemm(tile.data(), lines, kTilePixels, b, ctx.weights.row(0, 0), ctx.spec.out_channels, ctx.bias,
                          ctx.acts.data(), outs, count, w.out_pixels() * b);
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
  std::vector<int64_t> outputs;
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
    outputs.clear();
    for (int64_t o = 0; o < out_plane; ++o)
      if (out_flags[o]) outputs.push_back(o);
    const TileContext ctx{kernels(), spec, weights, w, acts, bias.data(), src, y, outputs};
    const int64_t tiles = (static_cast<int64_t>(outputs.size()) + kTilePixels - 1) / kTilePixels;
    parallel_for(tiles, [&](int64_t t) {
      thread_local std::vector<float> tile;
      compute_tile(ctx, t * kTilePixels, tile);
    });
  }
}

}  // namespace deltaonnx

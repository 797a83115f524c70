#include "delta_conv/cpu/conv_engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/aligned_scratch.h"
#include "common/channel_block.h"
#include "common/checked_size.h"
#include "common/delta_state.h"
#include "common/sum_epilogue.h"
#include "delta_conv/cpu/depthwise_engine.h"
#include "delta_conv/cpu/panel_plan.h"
#include "delta_conv/cpu/phase_split.h"
#include "delta_reorder/cpu/reorder_engine.h"

namespace deltaonnx {

std::string ConvSpec::validate() const {
  std::string window_error = window.validate();
  if (!window_error.empty()) return window_error;
  if (group < 1) return "attribute 'group' must be positive";
  if (out_channels < 1 || out_channels % group != 0) return "attribute 'group' must divide the output channels of W";
  if (!(threshold >= 0.f) || !std::isfinite(threshold)) return "attribute 'threshold' must be finite and >= 0";
  if (!(dense_fraction >= 0.f) || !(dense_fraction <= 1.f)) return "attribute 'dense_fraction' must lie in [0, 1]";
  if (gate.block_rule && gate.tau != threshold) return "the block gate's threshold must be the node's threshold";
  return activation.check_channels(out_channels);
}

PackedConvWeights::PackedConvWeights(const ConvSpec& spec, const float* weights, const KernelTable& k)
    : kernels_(&k) {
  const int64_t Mg = spec.out_channels / spec.group;
  depth_ = spec.in_channels_per_group * spec.window.kernel_h * spec.window.kernel_w;
  mr_ = k.gemm_mr;
  row_layout_ = Mg == 1;  // one channel per group (depthwise): a row each; short panels use row-count variants
  if (row_layout_) {  // W is already [M][K] with k = (c, ky, kx)
    data_.assign(weights, weights + checked_product({spec.out_channels, depth_}, "the packed weights"));
    return;
  }
  panels_ = (Mg + mr_ - 1) / mr_;
  data_.assign(checked_count({spec.group, panels_, depth_, mr_}, "the packed weights"), 0.f);
  for (int64_t g = 0; g < spec.group; ++g)
    for (int64_t p = 0; p < panels_; ++p) {
      float* dst = data_.data() + (g * panels_ + p) * depth_ * mr_;
      for (int64_t r = 0; r < mr_ && p * mr_ + r < Mg; ++r) {
        const float* src = weights + (g * Mg + p * mr_ + r) * depth_;
        for (int64_t kk = 0; kk < depth_; ++kk) dst[kk * mr_ + r] = src[kk];
      }
    }
}

namespace {

constexpr int64_t kMaxNR = 64;
constexpr int64_t kMaxMR = 16;

struct Scratch {
  std::vector<const float*> rows;
  std::vector<float> tile;
  std::vector<float> packed;
};

Scratch& thread_scratch() {
  thread_local Scratch s;
  return s;
}

// Writes the computed values of the pixels marked for recompute; the others (computed only because they sit
// between recomputed ones) keep their value, so map_out stays exactly the recomputed set.
void store_recomputed(const KernelTable& k, float* dst, const float* vals, const uint8_t* flags, int64_t n) {
  if (std::memchr(flags, 0, static_cast<size_t>(n)) == nullptr) {
    std::memcpy(dst, vals, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  k.store_flagged(dst, vals, flags, n);
}

// Where panels read: raster position p (oy * width + ox) or a gathered piece's PackPiece::src, and tap k of a
// group's first channel at base + p + offsets[k]; the next group's channels group_stride further. Either a phase
// split, or the input itself (stride 1 with the output no wider than the input: the interior outputs, the only
// ones rastered, read inside it; gathered pieces from their window's origin).
struct Raster {
  const float* base = nullptr;
  int64_t width = 0, group_stride = 0;
  const int64_t* offsets = nullptr;
};

struct ItemContext {
  const ConvSpec& spec;
  const PackedConvWeights& weights;
  const KernelTable& k;
  const Window2D& w;
  const std::vector<ActivationParams>& acts;
  const float* bias;
  float* y;              // [M, Ho, Wo]
  const uint8_t* flags;  // [Ho, Wo]: recomputed output pixels
  const float* src;      // [C, H, W]: what recomputed outputs read (border pieces)
  Raster raster;         // what raster panels read
  Raster gather;         // what gathered pieces read (PackPiece::src + offsets; width unused)
  const PanelPlan& plan;
};

// Packs the patches of border pieces (outputs whose window leaves the input) side by side: dst[k*ld + dst + j] for
// tap k = (c, ky, kx), zero where the tap falls in the padding. Per tap the valid pixels of a piece form one range.
void pack_border_pieces(const float* src, int64_t Cg, const Window2D& w, const PackPiece* pieces,
                        const int64_t* out_pos, int64_t count, int64_t ld, float* dst) {
  const int64_t H = w.y.in, W = w.x.in, Wo = w.x.out, kh = w.y.kernel, kw = w.x.kernel, sx = w.x.stride;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t oy = out_pos[i] / Wo, ox = out_pos[i] % Wo, len = pieces[i].len;
    for (int64_t kx = 0; kx < kw; ++kx) {
      // pixel j reads column first + j * sx: inside the row for j in [j0, j1)
      const int64_t first = w.x.input_of(ox, kx);
      const int64_t j0 = std::min(len, first >= 0 ? int64_t{0} : (-first + sx - 1) / sx);
      const int64_t j1 = std::max(j0, std::min(len, W - first <= 0 ? int64_t{0} : (W - first + sx - 1) / sx));
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t ky = 0; ky < kh; ++ky) {
          float* d = dst + ((c * kh + ky) * kw + kx) * ld + pieces[i].dst;
          const int64_t iy = w.y.input_of(oy, ky);
          if (iy < 0 || iy >= H) {
            std::fill(d, d + len, 0.f);
            continue;
          }
          const float* row = src + (c * H + iy) * W;
          std::fill(d, d + j0, 0.f);
          if (sx == 1) std::copy(row + first + j0, row + first + j1, d + j0);  // top and bottom rows: long runs
          else for (int64_t j = j0; j < j1; ++j) d[j] = row[first + j * sx];
          std::fill(d + j1, d + len, 0.f);
        }
    }
  }
}

void compute_panel(const ItemContext& ctx, const Panel& panel) {
  const ConvSpec& spec = ctx.spec;
  const KernelTable& k = ctx.k;
  const int64_t nr = k.gemm_nr, n = panel.n, K = ctx.weights.depth();
  const int64_t Wo = ctx.w.x.out, out_plane = ctx.w.y.out * Wo, width = ctx.raster.width;
  const int64_t Mg = spec.out_channels / spec.group, Cg = spec.in_channels_per_group;
  Scratch& s = thread_scratch();
  s.rows.resize(static_cast<size_t>(K));
  s.tile.resize(checked_count({k.gemm_mr, nr}, "a GEMM tile"));
  const bool gathered = panel.kind != PanelKind::kRaster;
  const PackPiece* pieces = ctx.plan.pieces.data() + panel.piece_begin;
  const int64_t* piece_out = ctx.plan.out_pos.data() + panel.piece_begin;
  const int64_t piece_count = panel.piece_end - panel.piece_begin;
  if (gathered) s.packed.resize(checked_count({K, nr}, "a GEMM panel"));
  // A raster panel within one output row with every pixel recomputed is written by the micro kernel itself
  // (bias and activation in registers); others go through the tile and store_recomputed.
  const int64_t oy = panel.p0 / width, ox = panel.p0 % width;
  float* direct = nullptr;
  if (!gathered && (ctx.plan.flat || ox + n <= Wo) &&
      std::memchr(ctx.flags + oy * Wo + ox, 0, static_cast<size_t>(n)) == nullptr)
    direct = ctx.y + oy * Wo + ox;

  // Stores the values of output channel m (activated: bias and activation already applied).
  auto store = [&](int64_t m, float* vals, bool activated) {
    if (!activated) k.bias_activate(vals, n, ctx.bias ? ctx.bias[m] : 0.f, ctx.acts[m]);
    float* out = ctx.y + m * out_plane;
    if (gathered) {  // pieces are short where changes are scattered: masked vector copies, no memcpy call each
      k.scatter_pieces(vals, pieces, piece_out, piece_count, out);
      return;
    }
    for (int64_t j = 0; j < n;) {  // row by row; positions past the output width are padding columns
      const int64_t pos = panel.p0 + j, ry = pos / width, rx = pos % width;
      const int64_t len = std::min(n - j, width - rx), valid = std::max<int64_t>(0, std::min(len, Wo - rx));
      if (valid > 0) store_recomputed(k, out + ry * Wo + rx, vals + j, ctx.flags + ry * Wo + rx, valid);
      j += len;
    }
  };

  if (gathered)  // scattered outputs: their lines are requested now, arriving while the GEMM runs
    for (int64_t i = 0; i < piece_count; ++i)
      for (int64_t m = 0; m < spec.out_channels; ++m) __builtin_prefetch(ctx.y + m * out_plane + piece_out[i], 1, 2);
  for (int64_t g = 0; g < spec.group; ++g) {
    if (gathered) {  // patches side by side
      if (panel.kind == PanelKind::kBorder)
        pack_border_pieces(ctx.src + g * Cg * ctx.w.in_pixels(), Cg, ctx.w, pieces, piece_out, piece_count, nr,
                           s.packed.data());
      else  // one contiguous copy per tap and piece
        k.pack_pieces(K, ctx.gather.base + g * ctx.gather.group_stride, ctx.gather.offsets, pieces, piece_count, nr,
                      s.packed.data());
      for (int64_t kk = 0; kk < K; ++kk) s.rows[kk] = s.packed.data() + kk * nr;
    } else {
      const float* base = ctx.raster.base + g * ctx.raster.group_stride + panel.p0;
      for (int64_t kk = 0; kk < K; ++kk) s.rows[kk] = base + ctx.raster.offsets[kk];
    }
    if (ctx.weights.row_layout()) {
      for (int64_t r = 0; r < Mg; ++r) {
        const int64_t m = g * Mg + r;
        k.gemm_row(K, ctx.weights.row(m), s.rows.data(), n, s.tile.data());
        store(m, s.tile.data(), false);
      }
      continue;
    }
    for (int64_t p = 0; p < ctx.weights.panels_per_group(); ++p) {
      const int64_t m0 = g * Mg + p * k.gemm_mr, rows = std::min<int64_t>(k.gemm_mr, Mg - p * k.gemm_mr);
      if (direct != nullptr) {
        float* outs[kMaxMR];
        for (int64_t r = 0; r < rows; ++r) outs[r] = direct + (m0 + r) * out_plane;
        k.gemm_tile_store(K, ctx.weights.panel(g, p), s.rows.data(), n, outs, rows,
                          ctx.bias ? ctx.bias + m0 : nullptr, ctx.acts.data() + m0);
        continue;
      }
      // Only the panel's rows (kernels with row-count variants skip the zero rows of a short last panel), the
      // epilogue applied in registers.
      float* tile_rows[kMaxMR];
      for (int64_t r = 0; r < rows; ++r) tile_rows[r] = s.tile.data() + r * nr;
      k.gemm_tile_store(K, ctx.weights.panel(g, p), s.rows.data(), n, tile_rows, rows, ctx.bias ? ctx.bias + m0 : nullptr,
                        ctx.acts.data() + m0);
      for (int64_t r = 0; r < rows; ++r) store(m0 + r, tile_rows[r], true);
    }
  }
}

// Marks the padded rows (input row + pad_begin) that the recomputed outputs read; returns false when there are none.
bool mark_needed_rows(const Window2D& w, const uint8_t* flags, std::vector<uint8_t>& needed) {
  const int64_t padded = (w.y.out - 1) * w.y.stride + (w.y.kernel - 1) * w.y.dilation + 1;
  needed.assign(static_cast<size_t>(padded + w.y.stride), 0);
  bool any = false;
  for (int64_t oy = 0; oy < w.y.out; ++oy) {
    if (std::memchr(flags + oy * w.x.out, 1, static_cast<size_t>(w.x.out)) == nullptr) continue;
    any = true;
    for (int64_t ky = 0; ky < w.y.kernel; ++ky) needed[oy * w.y.stride + ky * w.y.dilation] = 1;
  }
  return any;
}

// Marks the padded rows (input row + pad_begin) that the raster panels read; returns false when there are none.
bool mark_raster_rows(const Window2D& w, const PanelPlan& plan, int64_t width, std::vector<uint8_t>& needed) {
  const int64_t padded = (w.y.out - 1) * w.y.stride + (w.y.kernel - 1) * w.y.dilation + 1;
  needed.assign(static_cast<size_t>(padded + w.y.stride), 0);
  bool any = false;
  int64_t next = 0;  // output rows above this are marked (panels come in raster order)
  for (const Panel& p : plan.panels) {
    if (p.kind != PanelKind::kRaster) continue;
    any = true;
    const int64_t last = (p.p0 + p.n - 1) / width;
    for (int64_t oy = std::max(next, p.p0 / width); oy <= last; ++oy)
      for (int64_t ky = 0; ky < w.y.kernel; ++ky) needed[oy * w.y.stride + ky * w.y.dilation] = 1;
    next = std::max(next, last + 1);
  }
  return any;
}

// Scratch of compute_item kept across the batch items of one run (the tap offsets depend on the window only).
struct ItemWork {
  std::vector<uint8_t> needed_rows;
  PanelPlan plan;
  std::vector<int64_t> src_offsets, input_raster_offsets, split_offsets;
  void reset() {  // a new run (another window, maybe): the offsets are made again, the capacity kept
    src_offsets.clear();
    input_raster_offsets.clear();
    split_offsets.clear();
  }
};

// What one run of run_delta_conv needs besides the items' own work.
struct RunScratch {
  std::vector<ActivationParams> activations, no_activation, padded_activations;
  std::vector<uint8_t> in_flags, scratch;
  ItemWork work;
};

// Writes act(conv(source) + bias) at the `recompute` pixels flagged in out_flags of one batch item (per-element
// activation only: a channel activation follows in run_delta_conv). True when the dense engine did it, with the
// item's sum z added before the activation (z nullptr: none).
bool compute_item(const ConvSpec& spec, const PackedConvWeights& weights, const ConvRun& run, const Window2D& w,
                  const InputState& st, const uint8_t* out_flags, float* y, int64_t recompute,
                  const std::vector<ActivationParams>& acts, const ParallelFor& parallel_for,
                  const DenseItemConv* dense, ItemWork& work, const float* z) {
  const KernelTable& k = weights.kernels();
  const int64_t C = spec.in_channels_per_group * spec.group, out_plane = w.out_pixels();
  const float* src = recompute_source(st);
  if (recompute == out_plane && dense != nullptr && (*dense)(src, z, y)) return true;
  // Depthwise (one input and one output channel per group): the direct engine, not the GEMM.
  if (run_depthwise_item(spec, weights, w, src, out_flags, y, run.bias, acts, parallel_for)) return false;

  // Few recomputed outputs are read straight from the input: gathered pieces pack their windows from it (single
  // pixels at a column stride above 1), stride-1 raster panels read it in place, strided ones a phase split
  // filled only at their rows, and the border ring is packed with bounds checks. Many are read through a split
  // of every row they need (one sequential copy): past kSplitShare of the output, the per-pixel reads of the
  // input cost more than the copy (bench_ops --yolo: 10-20% lower at 10% redone, 10-17% higher at 50%).
  // A stride-1 conv whose windows all lie inside the input (1x1, unpadded) needs neither: it reads the input.
  constexpr int64_t kSplitShare = 4;  // a quarter
  const bool stride_one = w.y.stride == 1 && w.x.stride == 1 && w.x.out <= w.x.in;
  const InteriorRange iy = interior_of(w.y), ix = interior_of(w.x);
  const bool all_inside = stride_one && iy.lo == 0 && iy.hi == w.y.out && ix.lo == 0 && ix.hi == w.x.out;
  const bool through_split = !all_inside && recompute * kSplitShare > out_plane;
  PhaseSplit split = phase_split_geometry(C, w);
  const bool on_input = stride_one && !through_split;
  const int64_t W = w.x.in, HW = w.in_pixels(), Cg = spec.in_channels_per_group;
  if (work.src_offsets.empty()) {  // per tap (c, ky, kx) of a group
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t ky = 0; ky < w.y.kernel; ++ky)
        for (int64_t kx = 0; kx < w.x.kernel; ++kx) {
          const int64_t ty = ky * w.y.dilation, tx = kx * w.x.dilation;
          work.src_offsets.push_back(c * HW + ty * W + tx);
          work.input_raster_offsets.push_back(c * HW + (ty - w.y.pad_begin) * W + tx - w.x.pad_begin);
          // the split: plane (c, ty % sy, tx % sx) at (ty / sy) * width + tx / sx
          work.split_offsets.push_back(((c * split.sy + ty % split.sy) * split.sx + tx % split.sx) * split.plane +
                                       (ty / split.sy) * split.width + tx / split.sx);
        }
  }
  const int64_t raster_width = on_input ? W : split.width;
  plan_panels(w, out_flags, k.gemm_nr, k.gemm_vec, raster_width, through_split, work.plan);
  Raster raster{src, W, Cg * HW, work.input_raster_offsets.data()};
  Raster gather{src, W, Cg * HW, work.src_offsets.data()};
  const bool all_rows = recompute == out_plane;
  if (!on_input && (through_split ? (all_rows || mark_needed_rows(w, out_flags, work.needed_rows))
                                  : mark_raster_rows(w, work.plan, split.width, work.needed_rows))) {
    fill_phase_split(split, src, C, w, all_rows ? nullptr : work.needed_rows.data(), k, parallel_for);
    raster = {split.base, split.width, Cg * split.sy * split.sx * split.plane, work.split_offsets.data()};
    if (through_split) gather = raster;
  }
  const ItemContext ctx{spec, weights, k, w, acts, run.bias, y, out_flags, src, raster, gather, work.plan};
  parallel_for(static_cast<int64_t>(work.plan.panels.size()), [&](int64_t i) { compute_panel(ctx, work.plan.panels[i]); });
  return false;
}

// A channel Softmax over the recomputed pixels of one item (y [M, plane]), over each group of G channels (G = M
// without groups): every pixel when recompute == plane, else run by run of flagged pixels (the plane taken as
// one row: a run may cross image rows).
void softmax_recomputed(const KernelTable& k, float* y, int64_t M, int64_t G, int64_t plane, const uint8_t* flags,
                        int64_t recompute, const ParallelFor& parallel_for, std::vector<RowRun>& runs) {
  const int64_t groups = M / G;
  if (recompute == plane) {
    constexpr int64_t kChunk = 4096;
    const int64_t chunks = (plane + kChunk - 1) / kChunk;
    parallel_for(chunks * groups, [&](int64_t i) {
      const int64_t begin = (i % chunks) * kChunk;
      k.softmax_run(y + (i / chunks) * G * plane + begin, plane, G, std::min(kChunk, plane - begin));
    });
    return;
  }
  runs.clear();
  mask_runs(flags, 1, plane, runs);
  parallel_for(static_cast<int64_t>(runs.size()), [&](int64_t i) {
    for (int64_t g = 0; g < groups; ++g)
      k.softmax_run(y + g * G * plane + runs[i].x_begin, plane, G, runs[i].x_end - runs[i].x_begin);
  });
}

// The window as the engines use it. An axis with one output reads the same inputs whatever its stride, so its
// stride is taken as 1: the stride phases (sy * sx planes per channel) then stay the size of the input instead
// of growing with a stride far beyond it (up to kMaxWindowExtent, 2^16: 2^32 planes ran out of memory).
Window2D engine_window(const WindowSpec& spec, int64_t H, int64_t W) {
  Window2D w = spec.resolve(H, W);
  if (w.y.out == 1) w.y.stride = 1;
  if (w.x.out == 1) w.x.stride = 1;
  return w;
}

}  // namespace

bool run_items_whole(const ConvSpec& spec, const Window2D& w, const ConvRun& run, int64_t block, int64_t y_channels,
                     const ParallelFor& parallel_for, RunStats* stats, const DenseItemConv& dense) {
  const int64_t out_plane = w.out_pixels(), in_plane = w.in_pixels();
  for (int64_t n = 0; n < run.batch; ++n) {
    InputState st = item_input(run, n, spec.threshold, nullptr, nullptr);
    st.block = block;
    take_whole_reference(st, parallel_for);  // no flags: nothing plans (a 224 x 224 frame's were 50 KB of stores)
    std::memset(run.map_out + n * out_plane, 1, static_cast<size_t>(out_plane));
    if (!dense(recompute_source(st), run.z != nullptr ? run.z + n * y_channels * out_plane : nullptr,
               run.y + n * y_channels * out_plane))
      return false;
    if (stats) {
      stats->changed_inputs += in_plane;
      stats->recomputed_outputs += out_plane;
    }
  }
  return true;
}

void run_delta_conv(const ConvSpec& spec, const PackedConvWeights& weights, const ConvRun& run,
                    const ParallelFor& parallel_for, RunStats* stats, const DenseItemConv* dense) {
  const KernelTable& k = weights.kernels();
  const Window2D w = engine_window(spec.window, run.height, run.width);
  // blocked_out without state (a stem in a stateless run): the dense Conv writes each item whole into the blocked Y
  if (!run.has_state && run.out_block > 1 && dense != nullptr &&
      run_items_whole(spec, w, run, run.block, padded_channels(spec.out_channels, run.out_block), parallel_for, stats,
                      *dense))
    return;
  const int64_t M = spec.out_channels, out_plane = w.out_pixels();
  // The calling thread's, reused run after run (a run allocated all of it before); loop bodies reach it only
  // through the references below.
  thread_local RunScratch run_scratch;
  RunScratch& rs = run_scratch;
  rs.work.reset();
  // With a sum the kernels store conv + bias and add_sum_activate applies the activation after adding Z.
  std::vector<ActivationParams>& activations = rs.activations;
  activations.resize(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m) activations[m] = spec.activation_for(m);
  rs.no_activation.assign(run.z != nullptr ? static_cast<size_t>(M) : 0, ActivationParams{});
  const std::vector<ActivationParams>& acts = run.z != nullptr ? rs.no_activation : activations;

  std::vector<uint8_t>& in_flags = rs.in_flags;
  std::vector<uint8_t>& scratch = rs.scratch;
  ItemWork& work = rs.work;
  // blocked_out: the recomputed outputs are computed in NCHW here, then their lines moved into the blocked Y of
  // roundup(M, b) channels, pad lanes zero (an item recomputed everywhere goes straight to Y through the dense
  // engine instead).
  thread_local AlignedScratch nchw_scratch;
  const int64_t y_channels = run.out_block > 1 ? padded_channels(M, run.out_block) : M;
  // The sum's activations over Y's padded channels: the pad lanes hold 0 + Z's 0, and a padded output's activation
  // keeps 0 (the op refuses the others), so they take channel 0's and a uniform activation stays one run. Built
  // only with a sum on a blocked output (this runs on every call).
  std::vector<ActivationParams>& padded_activations = rs.padded_activations;
  if (run.z != nullptr && run.out_block > 1) {
    padded_activations = activations;
    padded_activations.resize(static_cast<size_t>(y_channels), activations.empty() ? ActivationParams{} : activations[0]);
  }
  for (int64_t n = 0; n < run.batch; ++n) {
    const ItemPlan item = plan_item(run, n, spec.threshold, block_rule_of(spec.gate), &k, w, spec.dense_fraction,
                                    y_channels, in_flags, scratch, stats, parallel_for,
                                    run.map_z != nullptr ? run.map_z + n * out_plane : nullptr);
    const InputState& st = item.input;
    uint8_t* out_flags = item.out_flags;
    float* y = item.y;
    const int64_t recompute = item.recompute;
    if (recompute == 0) continue;
    const float* z = run.z != nullptr ? run.z + n * y_channels * out_plane : nullptr;  // Z has Y's shape
    if (run.out_block > 1) {
      if (recompute == out_plane && dense != nullptr && (*dense)(recompute_source(st), z, y)) continue;
      float* nchw = nchw_scratch.get(checked_count({M, out_plane}, "the blocked_out scratch"));
      compute_item(spec, weights, run, w, st, out_flags, nchw, recompute, acts, parallel_for, nullptr, work, nullptr);
      ReorderShape shape;
      shape.batch = 1;
      shape.channels = M;
      shape.pixels = out_plane;
      shape.block = run.out_block;
      reorder_marked_pixels(shape, /*to_blocked=*/true, nchw, out_flags, y, parallel_for, k, /*x_unmarked_unset=*/true);
      if (z != nullptr)
        add_sum_activate(k, y, z, out_flags, y_channels, out_plane, run.out_block, padded_activations.data(),
                         recompute, parallel_for, work.plan.runs);
      continue;
    }
    const bool dense_done =
        compute_item(spec, weights, run, w, st, out_flags, y, recompute, acts, parallel_for, dense, work, z);
    if (z != nullptr && !dense_done)
      add_sum_activate(k, y, z, out_flags, M, out_plane, 1, activations.data(), recompute, parallel_for,
                       work.plan.runs);
    if (spec.activation.channel_softmax())
      softmax_recomputed(k, y, M, softmax_group_of(spec.activation.params, M), out_plane, out_flags, recompute,
                         parallel_for, work.plan.runs);
  }
}

}  // namespace deltaonnx

#include "delta_conv/cpu/conv_engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/checked_size.h"
#include "common/delta_state.h"
#include "delta_conv/cpu/depthwise_engine.h"

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

// The input of one batch item, zero-padded and split into stride phases (space-to-depth): tap (ky, kx) of
// output (oy, ox) is element (oy + qy) * width + ox + qx of phase plane (c, py, px), with py, qy the remainder
// and quotient of ky*dilation by the stride. Every conv becomes stride 1 over these planes, and a run of
// output pixels of one row reads, for each tap, one contiguous run of a plane: no gathers, no border cases.
// A stride-1 conv without begin padding whose windows stay inside the input needs no copy: the input planes
// themselves serve (rows of width W, the columns past the output width being ignored).
struct PhaseSplit {
  int64_t sy = 1, sx = 1, rows = 0, width = 0, plane = 0;
  const float* base = nullptr;
  const float* at(int64_t c, int64_t py, int64_t px) const { return base + ((c * sy + py) * sx + px) * plane; }
};

struct Scratch {
  std::vector<const float*> rows;
  std::vector<float> tile;
  std::vector<float> packed;
};

Scratch& thread_scratch() {
  thread_local Scratch s;
  return s;
}

std::vector<float>& thread_phase_buffer() {
  thread_local std::vector<float> b;
  return b;
}

// Builds the phase split of src [C, H, W]. Only the padded rows some recomputed output reads are filled
// (needed_rows[r] for padded row r = input row + pad_begin; nullptr: all): rows never read stay stale.
PhaseSplit build_phase_split(const float* src, int64_t C, const Window2D& w, const uint8_t* needed_rows,
                             const KernelTable& k, const ParallelFor& parallel_for) {
  PhaseSplit ps;
  ps.sy = w.y.stride;
  ps.sx = w.x.stride;
  const int64_t need_h = (w.y.out - 1) * w.y.stride + (w.y.kernel - 1) * w.y.dilation + 1;
  const int64_t need_w = (w.x.out - 1) * w.x.stride + (w.x.kernel - 1) * w.x.dilation + 1;
  const int64_t H = w.y.in, W = w.x.in;
  if (ps.sy == 1 && ps.sx == 1 && w.y.pad_begin == 0 && w.x.pad_begin == 0 && need_h <= H && need_w <= W) {
    ps.rows = H;
    ps.width = W;
    ps.plane = H * W;
    ps.base = src;
    return ps;
  }
  ps.rows = (need_h + ps.sy - 1) / ps.sy;
  ps.width = (need_w + ps.sx - 1) / ps.sx;
  // slack: panels at the end read past the last row
  ps.plane = checked_product({ps.rows + 1, ps.width}, "a stride phase") + kMaxNR;
  std::vector<float>& buffer = thread_phase_buffer();
  buffer.resize(checked_count({C, ps.sy, ps.sx, ps.plane}, "the stride phases"));
  ps.base = buffer.data();
  parallel_for(C, [&](int64_t c) {
    const float* in = src + c * H * W;
    if (ps.sx == 2) {  // both column phases of a row in one pass: even[v] = in[2v - pad], odd[v] = in[2v + 1 - pad]
      const int64_t pad = w.x.pad_begin;
      // Columns v whose two source columns are both inside the row go through the vector kernel; the few at
      // the borders are set one by one (zero outside the input).
      const int64_t v_lo = std::min(ps.width, (pad + 1) / 2);
      const int64_t v_hi = std::max(v_lo, std::min(ps.width, W + pad >= 2 ? (W + pad - 2) / 2 + 1 : int64_t{0}));
      for (int64_t py = 0; py < ps.sy; ++py) {
        float* even = const_cast<float*>(ps.at(c, py, 0));
        float* odd = const_cast<float*>(ps.at(c, py, 1));
        for (int64_t u = 0; u < ps.rows + 1; ++u) {
          const int64_t r = u * ps.sy + py, iy = r - w.y.pad_begin;
          if (needed_rows != nullptr && (u == ps.rows || !needed_rows[r])) continue;
          float* e = even + u * ps.width;
          float* o = odd + u * ps.width;
          if (iy < 0 || iy >= H || u == ps.rows) {
            std::memset(e, 0, static_cast<size_t>(ps.width) * sizeof(float));
            std::memset(o, 0, static_cast<size_t>(ps.width) * sizeof(float));
            continue;
          }
          const float* row = in + iy * W;
          auto at = [&](int64_t col) { return col >= 0 && col < W ? row[col] : 0.f; };
          for (int64_t v = 0; v < v_lo; ++v) e[v] = at(2 * v - pad), o[v] = at(2 * v + 1 - pad);
          if (v_hi > v_lo) k.deinterleave2(row + 2 * v_lo - pad, v_hi - v_lo, e + v_lo, o + v_lo);
          for (int64_t v = v_hi; v < ps.width; ++v) e[v] = at(2 * v - pad), o[v] = at(2 * v + 1 - pad);
        }
        std::memset(even + (ps.rows + 1) * ps.width, 0, kMaxNR * sizeof(float));
        std::memset(odd + (ps.rows + 1) * ps.width, 0, kMaxNR * sizeof(float));
      }
      return;
    }
    for (int64_t py = 0; py < ps.sy; ++py)
      for (int64_t px = 0; px < ps.sx; ++px) {
        float* out = const_cast<float*>(ps.at(c, py, px));
        for (int64_t u = 0; u < ps.rows + 1; ++u) {
          const int64_t r = u * ps.sy + py;  // padded row
          if (needed_rows != nullptr && (u == ps.rows || !needed_rows[r])) continue;
          float* dst = out + u * ps.width;
          const int64_t iy = r - w.y.pad_begin;
          if (iy < 0 || iy >= H || u == ps.rows) {
            std::memset(dst, 0, static_cast<size_t>(ps.width) * sizeof(float));
            continue;
          }
          // Columns v read input column v*sx + px - pad: zeros outside [lo, hi), a (strided) copy inside.
          const int64_t off = px - w.x.pad_begin;
          const int64_t lo = std::min(ps.width, off >= 0 ? int64_t{0} : (-off + ps.sx - 1) / ps.sx);
          const int64_t hi = std::max(lo, std::min(ps.width, W - off <= 0 ? int64_t{0} : (W - off + ps.sx - 1) / ps.sx));
          const float* row = in + iy * W + off;
          std::memset(dst, 0, static_cast<size_t>(lo) * sizeof(float));
          if (ps.sx == 1) {
            std::memcpy(dst + lo, row + lo, static_cast<size_t>(hi - lo) * sizeof(float));
          } else if (ps.sx == 2) {
            for (int64_t v = lo; v < hi; ++v) dst[v] = row[2 * v];
          } else {
            for (int64_t v = lo; v < hi; ++v) dst[v] = row[v * ps.sx];
          }
          std::memset(dst + hi, 0, static_cast<size_t>(ps.width - hi) * sizeof(float));
        }
        std::memset(out + (ps.rows + 1) * ps.width, 0, kMaxNR * sizeof(float));
      }
  });
  return ps;
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

// A unit of compute work: flat positions [p0, p0 + n) of the phase split's raster (output row p0 / width;
// columns at or past the output width are padding and never stored); or, for a narrow map, the pieces
// [piece_begin, piece_end) of recomputed runs (PackPiece: src is the run's flat position in the raster),
// whose patches are packed side by side (n pixels).
struct Panel {
  int64_t p0, n;
  int64_t piece_begin = 0, piece_end = 0;
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
  const PhaseSplit& split;
  const std::vector<int64_t>& tap_offsets;  // per tap (c, ky, kx) of a group: offset from the split's base
  const std::vector<PackPiece>& pieces;
};

void compute_panel(const ItemContext& ctx, const Panel& panel) {
  const ConvSpec& spec = ctx.spec;
  const KernelTable& k = ctx.k;
  const int64_t nr = k.gemm_nr, n = panel.n, K = ctx.weights.depth();
  const int64_t Wo = ctx.w.x.out, out_plane = ctx.w.y.out * Wo, width = ctx.split.width;
  const int64_t Mg = spec.out_channels / spec.group, Cg = spec.in_channels_per_group;
  Scratch& s = thread_scratch();
  s.rows.resize(static_cast<size_t>(K));
  s.tile.resize(checked_count({k.gemm_mr, nr}, "a GEMM tile"));
  const int64_t oy = panel.p0 / width, ox = panel.p0 % width;
  const bool gathered = panel.piece_end > panel.piece_begin;
  if (gathered) s.packed.resize(checked_count({K, nr}, "a GEMM panel"));
  // A panel within one output row with every pixel recomputed is written by the micro kernel itself
  // (bias and activation in registers); others go through the tile and store_recomputed.
  float* direct = nullptr;
  if (!gathered && (width == Wo || ox + n <= Wo) && std::memchr(ctx.flags + oy * Wo + ox, 0, static_cast<size_t>(n)) == nullptr)
    direct = ctx.y + oy * Wo + ox;

  // A gathered panel's pieces in the output plane (at most nr pieces, each at least one pixel).
  int64_t piece_out[kMaxNR];
  if (gathered)
    for (int64_t i = panel.piece_begin; i < panel.piece_end; ++i) {
      const int64_t src = ctx.pieces[i].src;
      piece_out[i - panel.piece_begin] = (src / width) * Wo + src % width;
    }

  // Stores the values of output channel m (activated: bias and activation already applied).
  auto store = [&](int64_t m, float* vals, bool activated) {
    if (!activated) k.bias_activate(vals, n, ctx.bias ? ctx.bias[m] : 0.f, ctx.acts[m]);
    float* out = ctx.y + m * out_plane;
    if (gathered) {  // pieces are short where changes are scattered: masked vector copies, no memcpy call each
      k.scatter_pieces(vals, ctx.pieces.data() + panel.piece_begin, piece_out, panel.piece_end - panel.piece_begin, out);
      return;
    }
    for (int64_t j = 0; j < n;) {  // row by row; positions past the output width are padding columns
      const int64_t pos = panel.p0 + j, ry = pos / width, rx = pos % width;
      const int64_t len = std::min(n - j, width - rx), valid = std::max<int64_t>(0, std::min(len, Wo - rx));
      if (valid > 0) store_recomputed(k, out + ry * Wo + rx, vals + j, ctx.flags + ry * Wo + rx, valid);
      j += len;
    }
  };

  for (int64_t g = 0; g < spec.group; ++g) {
    const int64_t* off = ctx.tap_offsets.data();
    if (gathered) {  // patches side by side: one contiguous copy per tap and piece (the split has no borders)
      k.pack_pieces(K, ctx.split.at(g * Cg, 0, 0), off, ctx.pieces.data() + panel.piece_begin,
                    panel.piece_end - panel.piece_begin, nr, s.packed.data());
      for (int64_t kk = 0; kk < K; ++kk) s.rows[kk] = s.packed.data() + kk * nr;
    } else {
      const float* base = ctx.split.at(g * Cg, 0, 0) + panel.p0;
      for (int64_t kk = 0; kk < K; ++kk) s.rows[kk] = base + off[kk];
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

// Splits [0, width) into chunks of at most nr pixels made of whole vectors where possible, spread evenly
// (160 pixels with 48-pixel tiles of 16-pixel vectors: 48, 48, 32, 32 rather than 48, 48, 48, 16).
template <typename Emit>
void split_even(int64_t width, int64_t nr, int64_t vec, Emit emit) {
  const int64_t vectors = (width + vec - 1) / vec, per_tile = std::max<int64_t>(1, nr / vec);
  const int64_t tiles = (vectors + per_tile - 1) / per_tile;
  int64_t x = 0;
  for (int64_t t = 0; t < tiles && x < width; ++t) {
    const int64_t v = vectors / tiles + (t < vectors % tiles ? 1 : 0);
    const int64_t n = std::min(width - x, v * vec);
    emit(x, n);
    x += n;
  }
}

// A map narrower than a tile: its recomputed pixels are always gathered into panels of whole vectors (tiles
// over the split's raster would spend a tile's columns on the padding columns and on a short last panel:
// 12-17% of the work on 20x15 maps; and on the pixels between scattered changes).
bool narrow_map(const Window2D& w, int64_t nr) { return w.x.out < nr; }

// Plans the panels of one batch item over the split's raster (rows of `width` positions): raster panels
// (long runs of recomputed pixels, tiled where they lie) and gathered panels (short runs, and every run of a
// narrow map, packed side by side nr pixels at a time as pieces). A raster as wide as the output (1-wide
// kernels) has no padding columns: its runs are taken over the whole plane.
void plan_panels(const Window2D& w, const uint8_t* flags, int64_t nr, int64_t vec, int64_t width,
                 std::vector<RowRun>& runs, std::vector<Panel>& panels, std::vector<PackPiece>& pieces) {
  runs.clear();
  panels.clear();
  pieces.clear();
  const int64_t Ho = w.y.out, Wo = w.x.out;
  // Gathered panels: runs packed side by side, nr pixels per panel (a run may span two panels).
  int64_t used = 0;
  size_t first = 0;
  auto close = [&] {
    panels.push_back({0, used, static_cast<int64_t>(first), static_cast<int64_t>(pieces.size())});
    first = pieces.size();
    used = 0;
  };
  auto gather = [&](int64_t p, int64_t len) {
    while (len > 0) {
      const int64_t take = std::min(len, nr - used);
      pieces.push_back({p, take, used});
      used += take;
      p += take;
      len -= take;
      if (used == nr) close();
    }
  };
  auto raster = [&](int64_t p, int64_t len) {
    split_even(len, nr, vec, [&](int64_t x, int64_t n) { panels.push_back({p + x, n}); });
  };
  if (narrow_map(w, nr) && width != Wo) {  // only the recomputed pixels
    mask_runs(flags, Ho, Wo, runs);
    for (const RowRun& r : runs) gather(r.y * width + r.x_begin, r.x_end - r.x_begin);
    if (used > 0) close();
    return;
  }
  // Runs joined across short gaps (computing a few pixels more, never storing them, costs less than more
  // micro kernel calls) are tiled in place when long; short ones (scattered changes) would leave most lanes
  // of a tile idle, so their exact runs are gathered instead.
  const bool flat = width == Wo;  // no padding columns (1-wide kernels): runs may cross row ends
  mask_runs(flags, flat ? 1 : Ho, flat ? Ho * Wo : Wo, runs);
  constexpr int64_t kGap = 8;
  const int64_t min_raster_run = 2 * vec;
  for (size_t i = 0; i < runs.size();) {
    const size_t i0 = i;
    RowRun r = runs[i++];
    while (i < runs.size() && runs[i].y == r.y && runs[i].x_begin - r.x_end < kGap) r.x_end = runs[i++].x_end;
    if (r.x_end - r.x_begin >= min_raster_run) {
      raster(r.y * width + r.x_begin, r.x_end - r.x_begin);
      continue;
    }
    for (size_t j = i0; j < i; ++j) gather(runs[j].y * width + runs[j].x_begin, runs[j].x_end - runs[j].x_begin);
  }
  if (used > 0) close();
}

// Padded rows (input row + pad_begin) that the recomputed outputs read.
void mark_needed_rows(const Window2D& w, const uint8_t* flags, std::vector<uint8_t>& needed) {
  const int64_t padded = (w.y.out - 1) * w.y.stride + (w.y.kernel - 1) * w.y.dilation + 1;
  needed.assign(static_cast<size_t>(padded + w.y.stride), 0);
  for (int64_t oy = 0; oy < w.y.out; ++oy) {
    const uint8_t* row = flags + oy * w.x.out;
    if (std::memchr(row, 1, static_cast<size_t>(w.x.out)) == nullptr) continue;
    for (int64_t ky = 0; ky < w.y.kernel; ++ky) needed[oy * w.y.stride + ky * w.y.dilation] = 1;
  }
}

// Scratch of compute_item kept across the batch items of one run (the tap offsets depend on the split's
// width only, the same for every item).
struct ItemWork {
  std::vector<uint8_t> needed_rows;
  std::vector<RowRun> runs;
  std::vector<Panel> panels;
  std::vector<PackPiece> pieces;
  std::vector<int64_t> tap_offsets;
};

// Writes act(conv(source) + bias) at the `recompute` pixels flagged in out_flags of one batch item (per-element
// activation only: a channel activation follows in run_delta_conv).
void compute_item(const ConvSpec& spec, const PackedConvWeights& weights, const ConvRun& run, const Window2D& w,
                  const InputState& st, const uint8_t* out_flags, float* y, int64_t recompute,
                  const std::vector<ActivationParams>& acts, const ParallelFor& parallel_for,
                  const DenseItemConv* dense, ItemWork& work) {
  const KernelTable& k = weights.kernels();
  const int64_t C = spec.in_channels_per_group * spec.group, out_plane = w.out_pixels();
  if (recompute == out_plane && dense != nullptr && *dense && (*dense)(recompute_source(st), y)) return;
  // Depthwise (one input and one output channel per group): the direct engine, not the GEMM.
  if (run_depthwise_item(spec, weights, w, recompute_source(st), out_flags, y, run.bias, acts, parallel_for)) return;

  // The split: all rows for a dense item, else only the rows some recomputed output reads.
  const bool all_rows = recompute == out_plane;
  if (!all_rows) mark_needed_rows(w, out_flags, work.needed_rows);
  const PhaseSplit split =
      build_phase_split(recompute_source(st), C, w, all_rows ? nullptr : work.needed_rows.data(), k, parallel_for);
  if (work.tap_offsets.empty()) {  // tap (c, ky, kx): plane (c, ty % sy, tx % sx) at (ty / sy) * width + tx / sx
    for (int64_t c = 0; c < spec.in_channels_per_group; ++c)
      for (int64_t ky = 0; ky < w.y.kernel; ++ky)
        for (int64_t kx = 0; kx < w.x.kernel; ++kx) {
          const int64_t ty = ky * w.y.dilation, tx = kx * w.x.dilation;
          work.tap_offsets.push_back(split.at(c, ty % split.sy, tx % split.sx) - split.at(0, 0, 0) +
                                     (ty / split.sy) * split.width + tx / split.sx);
        }
  }
  plan_panels(w, out_flags, k.gemm_nr, k.gemm_vec, split.width, work.runs, work.panels, work.pieces);
  const ItemContext ctx{spec, weights, k, w, acts, run.bias, y, out_flags, split, work.tap_offsets, work.pieces};
  parallel_for(static_cast<int64_t>(work.panels.size()), [&](int64_t i) { compute_panel(ctx, work.panels[i]); });
}

// A channel Softmax over the recomputed pixels of one item (y [M, plane]): every pixel when recompute == plane,
// else run by run of flagged pixels (the plane taken as one row: a run may cross image rows).
void softmax_recomputed(const KernelTable& k, float* y, int64_t M, int64_t plane, const uint8_t* flags,
                        int64_t recompute, const ParallelFor& parallel_for, std::vector<RowRun>& runs) {
  if (recompute == plane) {
    constexpr int64_t kChunk = 4096;
    parallel_for((plane + kChunk - 1) / kChunk, [&](int64_t chunk) {
      const int64_t begin = chunk * kChunk;
      k.softmax_run(y + begin, plane, M, std::min(kChunk, plane - begin));
    });
    return;
  }
  runs.clear();
  mask_runs(flags, 1, plane, runs);
  parallel_for(static_cast<int64_t>(runs.size()), [&](int64_t i) {
    k.softmax_run(y + runs[i].x_begin, plane, M, runs[i].x_end - runs[i].x_begin);
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

void run_delta_conv(const ConvSpec& spec, const PackedConvWeights& weights, const ConvRun& run,
                    const ParallelFor& parallel_for, RunStats* stats, const DenseItemConv* dense) {
  const KernelTable& k = weights.kernels();
  const Window2D w = engine_window(spec.window, run.height, run.width);
  const int64_t M = spec.out_channels, out_plane = w.out_pixels();
  std::vector<ActivationParams> acts(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m) acts[m] = spec.activation_for(m);

  std::vector<uint8_t> in_flags, scratch;
  ItemWork work;
  for (int64_t n = 0; n < run.batch; ++n) {
    const ItemPlan item = plan_item(run, n, spec.threshold, block_rule_of(spec.gate), &k, w, spec.dense_fraction, M, in_flags, scratch, stats,
                                    parallel_for);
    const InputState& st = item.input;
    uint8_t* out_flags = item.out_flags;
    float* y = item.y;
    const int64_t recompute = item.recompute;
    if (recompute == 0) continue;
    compute_item(spec, weights, run, w, st, out_flags, y, recompute, acts, parallel_for, dense, work);
    if (spec.activation.channel_softmax())
      softmax_recomputed(k, y, M, out_plane, out_flags, recompute, parallel_for, work.runs);
  }
}

}  // namespace deltaonnx

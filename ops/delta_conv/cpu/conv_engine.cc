#include "delta_conv/cpu/conv_engine.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/delta_state.h"

namespace deltaonnx {

std::string ConvSpec::validate() const {
  std::string window_error = window.validate();
  if (!window_error.empty()) return window_error;
  if (group < 1) return "group must be positive";
  if (out_channels < 1 || out_channels % group != 0) return "group must divide the output channels of W";
  if (!(threshold >= 0.f) || !std::isfinite(threshold)) return "threshold must be finite and >= 0";
  if (!(dense_fraction >= 0.f) || !(dense_fraction <= 1.f)) return "dense_fraction must be in [0, 1]";
  const size_t np = activation_params.size();
  switch (activation) {
    case Activation::kLeakyRelu:
      if (np > 1) return "activation_params of LeakyRelu is [alpha]";
      break;
    case Activation::kClip:
      if (np != 0 && np != 2) return "activation_params of Clip is [min, max]";
      if (np == 2 && !(activation_params[0] <= activation_params[1])) return "Clip needs min <= max";
      break;
    case Activation::kHardSigmoid:
      if (np != 0 && np != 2) return "activation_params of HardSigmoid is [alpha, beta]";
      break;
    case Activation::kPRelu:
      if (np != 1 && static_cast<int64_t>(np) != out_channels)
        return "activation_params of PRelu needs 1 or M (output channels) slopes";
      break;
    default:
      if (np != 0) return "this activation takes no activation_params";
  }
  return "";
}

ActivationParams ConvSpec::activation_for(int64_t m) const {
  ActivationParams p;
  p.kind = activation;
  const auto& ap = activation_params;
  switch (activation) {
    case Activation::kLeakyRelu: p.a = ap.empty() ? 0.01f : ap[0]; break;
    case Activation::kClip:
      p.a = ap.empty() ? -INFINITY : ap[0];
      p.b = ap.empty() ? INFINITY : ap[1];
      break;
    case Activation::kHardSigmoid:
      p.a = ap.empty() ? 0.2f : ap[0];
      p.b = ap.empty() ? 0.5f : ap[1];
      break;
    case Activation::kPRelu: p.a = ap.size() == 1 ? ap[0] : ap[m]; break;
    default: break;
  }
  return p;
}

PackedConvWeights::PackedConvWeights(const ConvSpec& spec, const float* weights, const KernelTable& k)
    : kernels_(&k) {
  const int64_t Mg = spec.out_channels / spec.group;
  depth_ = spec.in_channels_per_group * spec.window.kernel_h * spec.window.kernel_w;
  mr_ = k.gemm_mr;
  row_layout_ = Mg < mr_;
  if (row_layout_) {  // W is already [M][K] with k = (c, ky, kx)
    data_.assign(weights, weights + spec.out_channels * depth_);
    return;
  }
  panels_ = (Mg + mr_ - 1) / mr_;
  data_.assign(static_cast<size_t>(spec.group * panels_ * depth_ * mr_), 0.f);
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
alignas(64) const float kZeros[kMaxNR] = {};

// Above this share of recomputed output pixels, a batch item is computed from a padded, phase-split copy of
// its input ("flat" panels: no border cases, no gathers, panels spanning rows); below it, only the
// recomputed pixels are touched (row panels read the input in place, the rest is gathered).
constexpr double kFlatFraction = 0.25;

// Units of compute work, up to gemm_nr output pixels each.
enum class PanelKind : uint8_t {
  kRow,       // output row y, columns [x0, x0+n) whose windows lie inside the input horizontally (stride 1)
  kGathered,  // pieces [x0, x0+n) of the piece list: their patches are copied into a packed buffer
  kFlat,      // flat positions [x0, x0+n) of the phase-split input's raster (rows of phase_width)
};

struct Panel {
  PanelKind kind;
  int64_t y, x0, n;  // kGathered: x0, n index the piece list
  int64_t pixels;    // output pixels computed (n for kRow and kFlat)
};

// A run of consecutive output pixels of one row inside a gathered panel, at column j0 of the panel.
struct Piece {
  int64_t y, x0, len, j0;
};

// The input of one batch item, zero-padded and split into stride phases (space-to-depth): tap (ky, kx) of
// output (oy, ox) is element (oy + qy) * width + ox + qx of phase plane (c, py, px), with py, qy the remainder
// and quotient of ky*dilation by the stride. Every conv becomes stride 1 over these planes.
// A stride-1 conv without begin padding whose windows stay inside the input needs no copy: the input
// planes themselves serve (rows of width W, the columns past the output width being ignored).
struct PhaseSplit {
  int64_t sy = 1, sx = 1, rows = 0, width = 0, plane = 0;
  const float* base = nullptr;
  const float* at(int64_t c, int64_t py, int64_t px) const { return base + ((c * sy + py) * sx + px) * plane; }
};

struct Scratch {
  std::vector<const float*> rows;
  std::vector<float> packed;
  std::vector<float> tile;
};

Scratch& thread_scratch() {
  thread_local Scratch s;
  return s;
}

std::vector<float>& thread_phase_buffer() {
  thread_local std::vector<float> b;
  return b;
}

PhaseSplit build_phase_split(const float* src, int64_t C, const Window2D& w, const ParallelFor& parallel_for) {
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
  ps.plane = (ps.rows + 1) * ps.width + kMaxNR;  // slack: flat panels at the end read past the last row
  std::vector<float>& buffer = thread_phase_buffer();
  buffer.resize(static_cast<size_t>(C * ps.sy * ps.sx * ps.plane));
  ps.base = buffer.data();
  parallel_for(C, [&](int64_t c) {
    const float* in = src + c * H * W;
    for (int64_t py = 0; py < ps.sy; ++py)
      for (int64_t px = 0; px < ps.sx; ++px) {
        float* out = const_cast<float*>(ps.at(c, py, px));
        for (int64_t u = 0; u < ps.rows + 1; ++u) {
          float* dst = out + u * ps.width;
          const int64_t iy = u * ps.sy + py - w.y.pad_begin;
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

struct ItemContext {
  const ConvSpec& spec;
  const PackedConvWeights& weights;
  const KernelTable& k;
  const Window2D& w;
  const std::vector<ActivationParams>& acts;
  const float* src;     // the input reference after this run's update: [C, H, W]
  const float* bias;
  float* y;             // [M, Ho, Wo]
  const uint8_t* flags; // [Ho, Wo]: recomputed output pixels
  const std::vector<Piece>& pieces;
  const PhaseSplit& split;
  const std::vector<int64_t>& row_offsets;   // per tap (c, ky, kx): c*H*W + ky*dh*W + kx*dw
  const std::vector<int64_t>& flat_offsets;  // per tap: offset of its phase plane row in the split
};

// Writes the computed values of the pixels marked for recompute; the others (computed only because they sit
// between recomputed ones) keep their value, so map_out stays exactly the recomputed set.
void store_recomputed(float* dst, const float* vals, const uint8_t* flags, int64_t n) {
  if (std::memchr(flags, 0, static_cast<size_t>(n)) == nullptr) {
    std::memcpy(dst, vals, static_cast<size_t>(n) * sizeof(float));
    return;
  }
  for (int64_t i = 0; i < n; ++i)
    if (flags[i]) dst[i] = vals[i];
}

// Copies the patches of a gathered panel: packed[k * nr + j] = input tap k of the panel's pixel j (0 outside).
void gather_panel(const ItemContext& ctx, const Panel& panel, const float* src_g, float* packed, const float** rows) {
  const Window2D& w = ctx.w;
  const int64_t nr = ctx.k.gemm_nr, H = w.y.in, W = w.x.in, plane = H * W;
  const int64_t Cg = ctx.spec.in_channels_per_group, kh = w.y.kernel, kw = w.x.kernel, sx = w.x.stride;
  const Piece* first = ctx.pieces.data() + panel.x0;
  const Piece* last = first + panel.n;
  int64_t kk = 0;
  for (int64_t c = 0; c < Cg; ++c)
    for (int64_t ky = 0; ky < kh; ++ky)
      for (int64_t kx = 0; kx < kw; ++kx, ++kk) {
        float* dst = packed + kk * nr;
        rows[kk] = dst;
        for (const Piece* p = first; p != last; ++p) {
          float* d = dst + p->j0;
          const int64_t iy = w.y.input_of(p->y, ky);
          if (iy < 0 || iy >= H) {
            std::memset(d, 0, static_cast<size_t>(p->len) * sizeof(float));
            continue;
          }
          const int64_t ix0 = w.x.input_of(p->x0, kx);
          // pieces' columns j with 0 <= ix0 + j*sx < W
          int64_t lo = ix0 >= 0 ? 0 : (-ix0 + sx - 1) / sx;
          int64_t hi = W - ix0 <= 0 ? 0 : (W - ix0 + sx - 1) / sx;
          lo = std::min(lo, p->len);
          hi = std::max(lo, std::min(hi, p->len));
          const float* s = src_g + c * plane + iy * W + ix0;
          for (int64_t j = 0; j < lo; ++j) d[j] = 0.f;
          if (sx == 1) {
            std::memcpy(d + lo, s + lo, static_cast<size_t>(hi - lo) * sizeof(float));
          } else {
            for (int64_t j = lo; j < hi; ++j) d[j] = s[j * sx];
          }
          for (int64_t j = hi; j < p->len; ++j) d[j] = 0.f;
        }
      }
}

void compute_panel(const ItemContext& ctx, const Panel& panel) {
  const ConvSpec& spec = ctx.spec;
  const KernelTable& k = ctx.k;
  const Window2D& w = ctx.w;
  const int64_t nr = k.gemm_nr;
  const int64_t Cg = spec.in_channels_per_group, kh = w.y.kernel, kw = w.x.kernel;
  const int64_t K = ctx.weights.depth();
  const int64_t H = w.y.in, W = w.x.in, in_plane = H * W, Wo = w.x.out, out_plane = w.y.out * Wo;
  const int64_t Mg = spec.out_channels / spec.group;
  const int64_t n = panel.pixels;
  Scratch& s = thread_scratch();
  s.rows.resize(static_cast<size_t>(K));
  s.tile.resize(static_cast<size_t>(k.gemm_mr * nr));
  if (panel.kind == PanelKind::kGathered) s.packed.resize(static_cast<size_t>(K * nr));

  for (int64_t g = 0; g < spec.group; ++g) {
    const float* src_g = ctx.src + g * Cg * in_plane;
    // B rows for this panel and group: one pointer per tap (c, ky, kx).
    if (panel.kind == PanelKind::kGathered) {
      gather_panel(ctx, panel, src_g, s.packed.data(), s.rows.data());
    } else if (panel.kind == PanelKind::kRow) {
      // Tap k of pixel j reads src_g + row_offsets[k] + (y*sy - pad)*W + x0 - pad_left + j; rows outside
      // the input read zeros.
      const int64_t base = w.y.input_of(panel.y, 0) * W + w.x.input_of(panel.x0, 0);
      const int64_t* off = ctx.row_offsets.data();
      int64_t kk = 0;
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t ky = 0; ky < kh; ++ky) {
          const int64_t iy = w.y.input_of(panel.y, ky);
          const bool inside = iy >= 0 && iy < H;
          for (int64_t kx = 0; kx < kw; ++kx, ++kk) s.rows[kk] = inside ? src_g + base + off[kk] : kZeros;
        }
    } else {
      const float* base = ctx.split.at(g * Cg, 0, 0) + panel.x0;
      const int64_t* off = ctx.flat_offsets.data();
      for (int64_t kk = 0; kk < K; ++kk) s.rows[kk] = base + off[kk];
    }

    auto store = [&](int64_t m, float* vals) {
      k.bias_activate(vals, n, ctx.bias ? ctx.bias[m] : 0.f, ctx.acts[m]);
      float* out = ctx.y + m * out_plane;
      switch (panel.kind) {
        case PanelKind::kRow:
          store_recomputed(out + panel.y * Wo + panel.x0, vals, ctx.flags + panel.y * Wo + panel.x0, n);
          break;
        case PanelKind::kGathered:
          for (const Piece* p = ctx.pieces.data() + panel.x0, *e = p + panel.n; p != e; ++p)
            store_recomputed(out + p->y * Wo + p->x0, vals + p->j0, ctx.flags + p->y * Wo + p->x0, p->len);
          break;
        case PanelKind::kFlat: {
          // Positions past the output width are padding columns; pixels not flagged keep their value.
          const int64_t width = ctx.split.width;
          for (int64_t j = 0; j < n;) {
            const int64_t pos = panel.x0 + j, oy = pos / width, ox = pos % width;
            const int64_t len = std::min(n - j, width - ox);
            const int64_t valid = std::max<int64_t>(0, std::min(len, Wo - ox));
            store_recomputed(out + oy * Wo + ox, vals + j, ctx.flags + oy * Wo + ox, valid);
            j += len;
          }
          break;
        }
      }
    };

    if (ctx.weights.row_layout()) {
      for (int64_t r = 0; r < Mg; ++r) {
        const int64_t m = g * Mg + r;
        k.gemm_row(K, ctx.weights.row(m), s.rows.data(), n, s.tile.data());
        store(m, s.tile.data());
      }
      continue;
    }
    // A panel lying within one output row with every pixel recomputed is written by the micro kernel
    // itself (bias and activation in registers); others go through the tile and store_recomputed.
    float* direct = nullptr;
    if (panel.kind == PanelKind::kRow) {
      direct = ctx.y + panel.y * Wo + panel.x0;
    } else if (panel.kind == PanelKind::kFlat) {
      const int64_t oy = panel.x0 / ctx.split.width, ox = panel.x0 % ctx.split.width;
      if (ox + n <= Wo) direct = ctx.y + oy * Wo + ox;
    }
    if (direct != nullptr && std::memchr(ctx.flags + (direct - ctx.y), 0, static_cast<size_t>(n)) != nullptr)
      direct = nullptr;
    for (int64_t p = 0; p < ctx.weights.panels_per_group(); ++p) {
      const int64_t m0 = g * Mg + p * k.gemm_mr, rows = std::min<int64_t>(k.gemm_mr, Mg - p * k.gemm_mr);
      if (direct != nullptr) {
        float* outs[kMaxMR];
        for (int64_t r = 0; r < rows; ++r) outs[r] = direct + (m0 + r) * out_plane;
        k.gemm_tile_store(K, ctx.weights.panel(g, p), s.rows.data(), n, outs, rows,
                          ctx.bias ? ctx.bias + m0 : nullptr, ctx.acts.data() + m0);
        continue;
      }
      k.gemm_tile(K, ctx.weights.panel(g, p), s.rows.data(), n, s.tile.data());
      for (int64_t r = 0; r < rows; ++r) store(m0 + r, s.tile.data() + r * nr);
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

// Plans the panels of one batch item: flat panels over the phase-split input (dense-ish items), or row
// panels for long interior runs plus gathered panels for everything else (sparse items).
void plan_panels(const Window2D& w, const uint8_t* flags, int64_t nr, int64_t vec, bool flat, int64_t flat_width,
                 std::vector<RowRun>& runs, std::vector<Panel>& panels, std::vector<Piece>& pieces) {
  runs.clear();
  panels.clear();
  pieces.clear();
  const int64_t Ho = w.y.out, Wo = w.x.out;
  if (flat) {
    // Positions past the last output pixel are never computed (they could read past the input in place).
    if (Wo >= nr) {  // wide maps: panels within rows, so the micro kernel can store them in place
      for (int64_t oy = 0; oy < Ho; ++oy)
        split_even(Wo, nr, vec, [&](int64_t x, int64_t n) {
          if (std::memchr(flags + oy * Wo + x, 1, static_cast<size_t>(n)) != nullptr)
            panels.push_back({PanelKind::kFlat, 0, oy * flat_width + x, n, n});
        });
      return;
    }
    const int64_t total = (Ho - 1) * flat_width + Wo;
    for (int64_t p0 = 0; p0 < total; p0 += nr) {
      const int64_t n = std::min(nr, total - p0);
      bool any = false;
      for (int64_t pos = p0; pos < p0 + n && !any; ++pos) {
        const int64_t ox = pos % flat_width;
        any = ox < Wo && flags[(pos / flat_width) * Wo + ox];
      }
      if (any) panels.push_back({PanelKind::kFlat, 0, p0, n, n});
    }
    return;
  }
  mask_runs(flags, Ho, Wo, runs);
  // Join runs of a row a few pixels apart: computing the pixels between them (and not storing them) costs
  // less than the extra panels and gathers that short runs need.
  constexpr int64_t kGap = 8;
  size_t joined = 0;
  for (size_t i = 0; i < runs.size(); ++i) {
    if (joined > 0 && runs[joined - 1].y == runs[i].y && runs[i].x_begin - runs[joined - 1].x_end < kGap)
      runs[joined - 1].x_end = runs[i].x_end;
    else
      runs[joined++] = runs[i];
  }
  runs.resize(joined);
  int64_t inner_begin = 0, inner_end = 0;  // columns whose windows stay inside the input (stride 1)
  if (w.x.stride == 1) {
    inner_begin = std::min(Wo, w.x.pad_begin);
    inner_end = std::max(inner_begin, std::min(Wo, w.x.in + w.x.pad_begin - (w.x.kernel - 1) * w.x.dilation));
  }
  const int64_t min_row = std::max<int64_t>(1, nr / 2);  // shorter row panels waste most of a micro tile
  std::vector<RowRun> gathered;
  for (const RowRun& r : runs) {
    int64_t a = std::max(r.x_begin, inner_begin), b = std::min(r.x_end, inner_end);
    if (b - a < min_row) {
      gathered.push_back(r);
      continue;
    }
    if (r.x_begin < a) gathered.push_back({r.y, r.x_begin, a});
    split_even(b - a, nr, vec, [&](int64_t x, int64_t n) { panels.push_back({PanelKind::kRow, r.y, a + x, n, n}); });
    if (b < r.x_end) gathered.push_back({r.y, b, r.x_end});
  }
  // Gathered panels: pieces of runs packed nr pixels at a time.
  int64_t used = 0, first_piece = 0;
  for (const RowRun& r : gathered) {
    for (int64_t x = r.x_begin; x < r.x_end;) {
      const int64_t len = std::min(r.x_end - x, nr - used);
      pieces.push_back({r.y, x, len, used});
      used += len;
      x += len;
      if (used == nr) {
        panels.push_back({PanelKind::kGathered, 0, first_piece, static_cast<int64_t>(pieces.size()) - first_piece, nr});
        first_piece = static_cast<int64_t>(pieces.size());
        used = 0;
      }
    }
  }
  if (used > 0)
    panels.push_back({PanelKind::kGathered, 0, first_piece, static_cast<int64_t>(pieces.size()) - first_piece, used});
}

}  // namespace

void run_delta_conv(const ConvSpec& spec, const PackedConvWeights& weights, const ConvRun& run,
                    const ParallelFor& parallel_for, RunStats* stats) {
  const KernelTable& k = weights.kernels();
  const Window2D w = spec.window.resolve(run.height, run.width);
  const int64_t C = spec.in_channels_per_group * spec.group, M = spec.out_channels;
  const int64_t in_plane = w.in_pixels(), out_plane = w.out_pixels();
  std::vector<ActivationParams> acts(static_cast<size_t>(M));
  for (int64_t m = 0; m < M; ++m) acts[m] = spec.activation_for(m);

  std::vector<uint8_t> in_flags(static_cast<size_t>(in_plane)), scratch;
  std::vector<RowRun> runs;
  std::vector<Panel> panels;
  std::vector<Piece> pieces;
  std::vector<int64_t> row_offsets;
  for (int64_t c = 0; c < spec.in_channels_per_group; ++c)
    for (int64_t ky = 0; ky < w.y.kernel; ++ky)
      for (int64_t kx = 0; kx < w.x.kernel; ++kx)
        row_offsets.push_back(c * in_plane + ky * w.y.dilation * w.x.in + kx * w.x.dilation);
  for (int64_t n = 0; n < run.batch; ++n) {
    InputState st;
    st.x = run.x + n * C * in_plane;
    st.x_ref = run.x_ref ? run.x_ref + n * C * in_plane : nullptr;
    st.map_in = run.map_in ? run.map_in + n * in_plane : nullptr;
    st.x_ref_next = run.x_ref_next ? run.x_ref_next + n * C * in_plane : nullptr;
    st.has_state = run.has_state;
    st.reference_dropped = run.reference_dropped;
    st.channels = C;
    st.height = w.y.in;
    st.width = w.x.in;
    st.tau = spec.threshold;
    st.kernels = &k;
    const int64_t changed = detect_and_update_reference(st, in_flags.data(), parallel_for);

    uint8_t* out_flags = run.map_out + n * out_plane;
    const int64_t recompute =
        plan_recompute(in_flags.data(), changed, st.has_state, w, spec.dense_fraction, out_flags, scratch);
    if (stats) {
      stats->changed_inputs += changed;
      stats->recomputed_outputs += recompute;
    }
    float* y = run.y + n * M * out_plane;
    carry_previous_output(run.y_prev ? run.y_prev + n * M * out_plane : nullptr, y, M, out_plane, recompute,
                          parallel_for);
    if (recompute == 0) continue;

    const bool flat = recompute >= kFlatFraction * static_cast<double>(out_plane);
    PhaseSplit split;
    const float* src = recompute_source(st);
    if (flat) split = build_phase_split(src, C, w, parallel_for);
    plan_panels(w, out_flags, k.gemm_nr, k.gemm_vec, flat, split.width, runs, panels, pieces);
    std::vector<int64_t> flat_offsets;
    if (flat) {  // tap (c, ky, kx) of flat position p reads plane (c, ty % sy, tx % sx) at p + (ty/sy)*width + tx/sx
      flat_offsets.reserve(row_offsets.size());
      for (int64_t c = 0; c < spec.in_channels_per_group; ++c)
        for (int64_t ky = 0; ky < w.y.kernel; ++ky)
          for (int64_t kx = 0; kx < w.x.kernel; ++kx) {
            const int64_t ty = ky * w.y.dilation, tx = kx * w.x.dilation;
            flat_offsets.push_back(split.at(c, ty % split.sy, tx % split.sx) - split.at(0, 0, 0) +
                                   (ty / split.sy) * split.width + tx / split.sx);
          }
    }
    const ItemContext ctx{spec,  weights, k,      w,           acts,        src,           run.bias,
                          y,     out_flags, pieces, split, row_offsets, flat_offsets};
    parallel_for(static_cast<int64_t>(panels.size()), [&](int64_t i) { compute_panel(ctx, panels[i]); });
  }
}

}  // namespace deltaonnx

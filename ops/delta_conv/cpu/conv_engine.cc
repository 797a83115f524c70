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
alignas(64) const float kZeros[kMaxNR] = {};

// A unit of compute work: up to gemm_nr output pixels. A row panel is a contiguous run of one output row
// whose windows lie inside the input horizontally (its GEMM reads the input rows in place: no copy);
// a gathered panel lists its pixels, and its patches are copied into a packed buffer (borders, strides).
struct Panel {
  int64_t y;       // row panel: output row
  int64_t x0;      // row panel: first column; gathered: offset in the pixel list
  int64_t n;
  bool gathered;
};

struct Pixel {
  int64_t y, x;
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

struct ItemContext {
  const ConvSpec& spec;
  const PackedConvWeights& weights;
  const KernelTable& k;
  const Window2D& w;
  const std::vector<ActivationParams>& acts;
  const float* src;     // the input reference after this run's update: [C, H, W]
  const float* bias;
  float* y;             // [M, Ho, Wo]
  const std::vector<Pixel>& pixels;
};

void compute_panel(const ItemContext& ctx, const Panel& panel) {
  const ConvSpec& spec = ctx.spec;
  const KernelTable& k = ctx.k;
  const Window2D& w = ctx.w;
  const int64_t nr = k.gemm_nr;
  const int64_t Cg = spec.in_channels_per_group, kh = w.y.kernel, kw = w.x.kernel;
  const int64_t K = ctx.weights.depth();
  const int64_t H = w.y.in, W = w.x.in, in_plane = H * W, out_plane = w.y.out * w.x.out;
  const int64_t Mg = spec.out_channels / spec.group;
  const int64_t n = panel.n;
  Scratch& s = thread_scratch();
  s.rows.resize(static_cast<size_t>(K));
  s.tile.resize(static_cast<size_t>(k.gemm_mr * nr));
  if (panel.gathered) s.packed.resize(static_cast<size_t>(K * nr));
  const Pixel* px = ctx.pixels.data() + panel.x0;

  for (int64_t g = 0; g < spec.group; ++g) {
    const float* src_g = ctx.src + g * Cg * in_plane;
    // B rows for this panel and group: one pointer per (c, ky, kx).
    int64_t kk = 0;
    for (int64_t c = 0; c < Cg; ++c)
      for (int64_t ky = 0; ky < kh; ++ky)
        for (int64_t kx = 0; kx < kw; ++kx, ++kk) {
          if (!panel.gathered) {
            const int64_t iy = w.y.input_of(panel.y, ky);
            s.rows[kk] = (iy < 0 || iy >= H) ? kZeros
                                             : src_g + c * in_plane + iy * W + w.x.input_of(panel.x0, kx);
            continue;
          }
          float* dst = s.packed.data() + kk * nr;
          const float* plane = src_g + c * in_plane;
          for (int64_t j = 0; j < n; ++j) {
            const int64_t iy = w.y.input_of(px[j].y, ky), ix = w.x.input_of(px[j].x, kx);
            dst[j] = (iy >= 0 && iy < H && ix >= 0 && ix < W) ? plane[iy * W + ix] : 0.f;
          }
          s.rows[kk] = dst;
        }

    auto store = [&](int64_t m, float* vals) {
      const float b = ctx.bias ? ctx.bias[m] : 0.f;
      float* out = ctx.y + m * out_plane;
      if (!panel.gathered) {
        float* dst = out + panel.y * w.x.out + panel.x0;
        if (dst != vals) std::memcpy(dst, vals, static_cast<size_t>(n) * sizeof(float));
        k.bias_activate(dst, n, b, ctx.acts[m]);
      } else {
        k.bias_activate(vals, n, b, ctx.acts[m]);
        for (int64_t j = 0; j < n; ++j) out[px[j].y * w.x.out + px[j].x] = vals[j];
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
    for (int64_t p = 0; p < ctx.weights.panels_per_group(); ++p) {
      k.gemm_tile(K, ctx.weights.panel(g, p), s.rows.data(), n, s.tile.data());
      for (int64_t r = 0; r < k.gemm_mr && p * k.gemm_mr + r < Mg; ++r)
        store(g * Mg + p * k.gemm_mr + r, s.tile.data() + r * nr);
    }
  }
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

  // Columns whose windows stay inside the input horizontally can read input rows in place.
  int64_t inner_begin = 0, inner_end = 0;
  if (w.x.stride == 1) {
    inner_begin = std::min(w.x.out, w.x.pad_begin);
    inner_end = std::max(inner_begin, std::min(w.x.out, w.x.in + w.x.pad_begin - (w.x.kernel - 1) * w.x.dilation));
  }

  std::vector<uint8_t> in_flags(static_cast<size_t>(in_plane)), scratch;
  std::vector<RowRun> runs;
  std::vector<Panel> panels;
  std::vector<Pixel> pixels;
  for (int64_t n = 0; n < run.batch; ++n) {
    InputState st;
    st.x = run.x + n * C * in_plane;
    st.x_ref = run.x_ref ? run.x_ref + n * C * in_plane : nullptr;
    st.map_in = run.map_in ? run.map_in + n * in_plane : nullptr;
    st.x_ref_next = run.x_ref_next + n * C * in_plane;
    st.channels = C;
    st.height = w.y.in;
    st.width = w.x.in;
    st.tau = spec.threshold;
    st.kernels = &k;
    const int64_t changed = detect_and_update_reference(st, in_flags.data(), parallel_for);

    uint8_t* out_flags = run.map_out + n * out_plane;
    const int64_t recompute =
        plan_recompute(in_flags.data(), changed, st.x_ref != nullptr, w, spec.dense_fraction, out_flags, scratch);
    if (stats) {
      stats->changed_inputs += changed;
      stats->recomputed_outputs += recompute;
    }
    float* y = run.y + n * M * out_plane;
    carry_previous_output(run.y_prev ? run.y_prev + n * M * out_plane : nullptr, y, M, out_plane, recompute,
                          parallel_for);
    if (recompute == 0) continue;

    // Work list: row panels for the inner columns, gathered panels for the rest.
    runs.clear();
    panels.clear();
    pixels.clear();
    mask_runs(out_flags, w.y.out, w.x.out, runs);
    const int64_t nr = k.gemm_nr;
    for (const RowRun& r : runs) {
      const int64_t a = std::max(r.x_begin, inner_begin), b = std::min(r.x_end, inner_end);
      if (a >= b) {
        for (int64_t x = r.x_begin; x < r.x_end; ++x) pixels.push_back({r.y, x});
        continue;
      }
      for (int64_t x = r.x_begin; x < a; ++x) pixels.push_back({r.y, x});
      for (int64_t x = b; x < r.x_end; ++x) pixels.push_back({r.y, x});
      for (int64_t x = a; x < b; x += nr) panels.push_back({r.y, x, std::min(nr, b - x), false});
    }
    for (int64_t i = 0; i < static_cast<int64_t>(pixels.size()); i += nr)
      panels.push_back({0, i, std::min<int64_t>(nr, static_cast<int64_t>(pixels.size()) - i), true});

    const ItemContext ctx{spec, weights, k, w, acts, st.x_ref_next, run.bias, y, pixels};
    parallel_for(static_cast<int64_t>(panels.size()), [&](int64_t i) { compute_panel(ctx, panels[i]); });
  }
}

}  // namespace deltaonnx

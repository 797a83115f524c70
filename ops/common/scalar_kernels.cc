// Portable kernels: the reference every SIMD variant is tested against, and the path on CPUs without AVX2
// (written so compilers vectorise them for NEON/SSE).
#include <cmath>
#include <cstring>
#include <limits>

#include "common/blocked_pool_lines.h"
#include "common/delta_rules.h"
#include "common/geometry.h"
#include "common/kernel_table.h"
#include "common/tile_epilogue.h"

namespace deltaonnx {
namespace {

constexpr int kMR = 4;
constexpr int kNR = 16;

void detect_changes(const float* x, const float* ref, int64_t channels, int64_t plane, int64_t begin, int64_t end,
                    float tau, uint8_t* flags) {
  for (int64_t c = 0; c < channels; ++c) {
    const float* xc = x + c * plane;
    const float* rc = ref + c * plane;
    for (int64_t p = begin; p < end; ++p) flags[p] |= static_cast<uint8_t>(value_changed(xc[p], rc[p], tau));
  }
}

void update_reference(const float* x, const float* ref_in, float* ref_out, int64_t channels, int64_t plane,
                      int64_t begin, int64_t end, const uint8_t* flags) {
  const bool in_place = ref_in == ref_out;
  for (int64_t c = 0; c < channels; ++c) {
    const float* xc = x + c * plane;
    const float* rc = ref_in + c * plane;
    float* oc = ref_out + c * plane;
    for (int64_t p = begin; p < end; ++p) {
      if (flags[p]) oc[p] = xc[p];
      else if (!in_place) oc[p] = rc[p];
    }
  }
}

void detect_update_exact(const float* x, const float* ref_in, float* ref_out, int64_t channels, int64_t plane,
                         int64_t begin, int64_t end, uint8_t* flags) {
  const bool in_place = ref_in == ref_out;
  for (int64_t c = 0; c < channels; ++c) {
    const float* xc = x + c * plane;
    const float* rc = ref_in + c * plane;
    float* oc = ref_out + c * plane;
    for (int64_t p = begin; p < end; ++p) {
      const bool changed = value_changed(xc[p], rc[p], 0.f);
      flags[p] |= static_cast<uint8_t>(changed);
      if (changed) oc[p] = xc[p];
      else if (!in_place) oc[p] = rc[p];
    }
  }
}

void detect_update_pixels(const float* x, const float* ref_in, float* ref_out, int64_t channels, int64_t plane,
                          int64_t begin, int64_t end, float tau, uint8_t* flags) {
  const bool in_place = ref_in == ref_out;
  for (int64_t p = begin; p < end; ++p) {
    bool changed = false;
    for (int64_t c = 0; c < channels && !changed; ++c) changed = value_changed(x[c * plane + p], ref_in[c * plane + p], tau);
    flags[p] |= static_cast<uint8_t>(changed);
    if (changed || !in_place)
      for (int64_t c = 0; c < channels; ++c) ref_out[c * plane + p] = changed ? x[c * plane + p] : ref_in[c * plane + p];
  }
}

void gemm_tile(int64_t depth, const float* a_packed, const float* const* b_rows, int64_t n, float* c) {
  float acc[kMR][kNR] = {};
  for (int64_t k = 0; k < depth; ++k) {
    const float* a = a_packed + k * kMR;
    const float* b = b_rows[k];
    for (int r = 0; r < kMR; ++r)
      for (int64_t j = 0; j < n; ++j) acc[r][j] += a[r] * b[j];
  }
  for (int r = 0; r < kMR; ++r)
    for (int64_t j = 0; j < n; ++j) c[r * kNR + j] = acc[r][j];
}

void gemm_row(int64_t depth, const float* w, const float* const* b_rows, int64_t n, float* out) {
  float acc[kNR] = {};
  for (int64_t k = 0; k < depth; ++k)
    for (int64_t j = 0; j < n; ++j) acc[j] += w[k] * b_rows[k][j];
  for (int64_t j = 0; j < n; ++j) out[j] = acc[j];
}

void pack_pieces(int64_t depth, const float* base, const int64_t* tap_offsets, const PackPiece* pieces,
                 int64_t count, int64_t ld, float* dst) {
  for (int64_t k = 0; k < depth; ++k, dst += ld) {
    const float* tap = base + tap_offsets[k];
    for (int64_t i = 0; i < count; ++i)
      for (int64_t j = 0; j < pieces[i].len; ++j) dst[pieces[i].dst + j] = tap[pieces[i].src + j];
  }
}

void scatter_pieces(const float* vals, const PackPiece* pieces, const int64_t* out_offsets, int64_t count,
                    float* out) {
  for (int64_t i = 0; i < count; ++i) {
    float* dst = out + out_offsets[i];
    const float* src = vals + pieces[i].dst;
    for (int64_t j = 0; j < pieces[i].len; ++j) dst[j] = src[j];
  }
}

void store_flagged(float* dst, const float* vals, const uint8_t* flags, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (flags[i]) dst[i] = vals[i];
}

void deinterleave2(const float* src, int64_t n, float* even, float* odd) {
  for (int64_t v = 0; v < n; ++v) {
    even[v] = src[2 * v];
    odd[v] = src[2 * v + 1];
  }
}

void bias_activate(float* v, int64_t n, float bias, const ActivationParams& act) {
  for (int64_t i = 0; i < n; ++i) v[i] = apply_activation(act, v[i] + bias);
}

void unblock_activate(const float* blocked, int64_t block, int64_t channels, int64_t n, const ActivationParams* acts,
                      float* y, int64_t y_stride) {
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t j = 0; j < n; ++j) y[c * y_stride + j] = apply_activation(acts[c], blocked[j * block + c]);
}

void block_planes(const float* planes, int64_t plane_stride, int64_t block, int64_t channels, int64_t n,
                  float* lines) {
  for (int64_t j = 0; j < n; ++j)
    for (int64_t c = 0; c < block; ++c) lines[j * block + c] = c < channels ? planes[c * plane_stride + j] : 0.f;
}

void gemm_tile_store(int64_t depth, const float* a_packed, const float* const* b_rows, int64_t n,
                     float* const* out_rows, int64_t rows, const float* bias, const ActivationParams* acts) {
  tile_then_epilogue<kMR, kNR>(gemm_tile, bias_activate, depth, a_packed, b_rows, n, out_rows, rows, bias, acts);
}

// Channel by channel, chunks of 64 outputs accumulated in a local array, tap by tap (the loop the compiler
// vectorises).
void depthwise_run(int64_t count, const float* const* taps, int64_t in_stride, const float* w, int64_t w_stride,
                   const float* bias, const ActivationParams* acts, int64_t channels, int64_t n, float* out,
                   int64_t out_stride) {
  constexpr int64_t kChunk = 64;
  for (int64_t c = 0; c < channels; ++c) {
    const float* wc = w + c * w_stride;
    float* oc = out + c * out_stride;
    for (int64_t j0 = 0; j0 < n; j0 += kChunk) {
      const int64_t len = n - j0 < kChunk ? n - j0 : kChunk;
      float acc[kChunk] = {};
      for (int64_t t = 0; t < count; ++t) {
        const float wt = wc[t];
        const float* p = taps[t] + c * in_stride + j0;
        for (int64_t j = 0; j < len; ++j) acc[j] += wt * p[j];
      }
      for (int64_t j = 0; j < len; ++j) oc[j0 + j] = apply_activation(acts[c], acc[j] + bias[c]);
    }
  }
}

// Max pooling over taps: each output row is its own accumulator, tap by tap (loops the compiler vectorises).
// The max keeps NaN: once either side is NaN the result is NaN.
void max_taps(const float* src, int64_t src_stride, int64_t step, const PoolTap* taps, int64_t tap_count,
              int64_t period, int64_t rows, int64_t n, float* dst, int64_t dst_stride) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * src_stride;
    float* d = dst + r * dst_stride;
    for (int64_t j = 0; j < n; ++j) d[j] = kLowestFloat;
    for (int64_t q = 0; q < n; q += period) {  // image row by image row
      const int64_t row_end = n - q < period ? n - q : period;
      for (int64_t t = 0; t < tap_count; ++t) {
        const int64_t b = q + (taps[t].begin > 0 ? taps[t].begin : 0);
        const int64_t e = q + (taps[t].end < row_end ? taps[t].end : row_end);
        const int64_t o = taps[t].offset;
        if (step == 1) {
          for (int64_t j = b; j < e; ++j) d[j] = (s[o + j] > d[j] || s[o + j] != s[o + j]) ? s[o + j] : d[j];
        } else {
          for (int64_t j = b; j < e; ++j) {
            const float v = s[o + j * step];
            d[j] = (v > d[j] || v != v) ? v : d[j];
          }
        }
      }
    }
  }
}

void softmax_run(float* y, int64_t plane, int64_t channels, int64_t n) {
  for (int64_t j = 0; j < n; ++j) softmax_channels(y + j, plane, channels);
}

// Four lanes of a line as plain arrays for blocked_pool_lines.h (loops the compiler vectorises): the max of
// max_pool_window (delta_rules.h), a NaN remembered per lane beside it. (Wider arrays, or masks of 32 bits,
// measured slower under DELTAONNX_SIMD=scalar.)
struct FourLanes {
  struct V {
    float v[4];
  };
  struct M {
    bool ordered[4];
  };
  static constexpr int kLanes = 4;
  static V load(const float* p) { return {{p[0], p[1], p[2], p[3]}}; }
  static void store(float* p, V a) { std::memcpy(p, a.v, sizeof a.v); }
  static V set1(float f) { return {{f, f, f, f}}; }
  static V max(V a, V b) {
    for (int i = 0; i < 4; ++i) a.v[i] = b.v[i] > a.v[i] ? b.v[i] : a.v[i];
    return a;
  }
  static M ordered_lanes() { return {{true, true, true, true}}; }
  static M keep_ordered(M m, V a, V b) {
    for (int i = 0; i < 4; ++i) m.ordered[i] = m.ordered[i] && a.v[i] == a.v[i] && b.v[i] == b.v[i];
    return m;
  }
  static V nan_unless_ordered(V a, M m) {
    for (int i = 0; i < 4; ++i) a.v[i] = m.ordered[i] ? a.v[i] : std::numeric_limits<float>::quiet_NaN();
    return a;
  }
};

// Lines of a multiple of 4 floats four lanes at a time, as the vector variants; any other block lane by lane by
// the shared max_pool_window (the reference, which the CUDA kernels' body uses too).
void blocked_max_pool(const float* x, const Axis& ay, const Axis& ax, int64_t block, int64_t oy0, int64_t oy1,
                      float* y, float* columns) {
  if (block % FourLanes::kLanes == 0) return blocked_max_pool_lines<FourLanes>(x, ay, ax, block, oy0, oy1, y, columns);
  for (int64_t oy = oy0; oy < oy1; ++oy)
    for (int64_t ox = 0; ox < ax.out; ++ox)
      for (int64_t lane = 0; lane < block; ++lane)
        y[(oy * ax.out + ox) * block + lane] = max_pool_window(x + lane, ay, ax, oy, ox, block);
}

void gate_column_sums(const float* x, const float* ref, const uint8_t* marks, int64_t n, float* sums) {
  for (int64_t j = 0; j < n; ++j)
    if (!marks || marks[j]) sums[j] += x[j] - ref[j];
}

int64_t blocked_detect_update(const float* x, float* ref, int64_t blocks, int64_t line_stride, int64_t block,
                              int64_t begin, int64_t end, const uint8_t* marks, float tau, uint8_t* flags) {
  int64_t changed = 0;
  for (int64_t p = begin; p < end; ++p) {
    flags[p] = 0;
    if (marks != nullptr && !marks[p]) continue;
    const float* xp = x + p * block;
    float* rp = ref + p * block;
    bool moved = false;
    for (int64_t cb = 0; cb < blocks && !moved; ++cb)
      for (int64_t lane = 0; lane < block; ++lane) moved |= value_changed(xp[cb * line_stride + lane], rp[cb * line_stride + lane], tau);
    if (!moved) continue;
    flags[p] = 1;
    ++changed;
    for (int64_t cb = 0; cb < blocks; ++cb)
      std::memcpy(rp + cb * line_stride, xp + cb * line_stride, static_cast<size_t>(block) * sizeof(float));
  }
  return changed;
}

void blocked_pixel_gemm(const float* const* pixels, const int64_t* line_offsets, int64_t line_count,
                        int64_t tail_lines, int64_t tail_lanes, int64_t count, int64_t block, const float* weights,
                        int64_t out_channels, const float* bias, const ActivationParams* acts, float* const* outs,
                        int64_t out_line_stride, const float* const* sums) {
  for (int64_t p = 0; p < count; ++p)
    for (int64_t m = 0; m < out_channels; ++m) {
      float acc = 0.f;
      for (int64_t l = 0; l < line_count; ++l) {
        const float* t = pixels[p] + line_offsets[l];
        const float* w = weights + l * block * out_channels + m;
        const int64_t lanes = l < line_count - tail_lines ? block : tail_lanes;
        for (int64_t lane = 0; lane < lanes; ++lane) acc = std::fma(t[lane], w[lane * out_channels], acc);
      }
      const int64_t at = (m / block) * out_line_stride + m % block;
      const float biased = acc + bias[m];
      outs[p][at] = apply_activation(acts[m], sums != nullptr ? biased + sums[p][at] : biased);
    }
}

void blocked_depthwise_pixels(const float* const* pixels, const int64_t* line_offsets, int64_t taps, int64_t blocks,
                              int64_t count, int64_t block, const float* weights, const float* bias,
                              const ActivationParams* acts, float* const* outs, int64_t out_line_stride) {
  for (int64_t p = 0; p < count; ++p)
    for (int64_t cb = 0; cb < blocks; ++cb)
      for (int64_t lane = 0; lane < block; ++lane) {
        float acc = 0.f;
        for (int64_t t = 0; t < taps; ++t)
          acc = std::fma(pixels[p][line_offsets[cb * taps + t] + lane], weights[(cb * taps + t) * block + lane], acc);
        const int64_t c = cb * block + lane;
        outs[p][cb * out_line_stride + lane] = apply_activation(acts[c], acc + bias[c]);
      }
}

}  // namespace

const KernelTable& scalar_kernel_table() {
  static const KernelTable table{"scalar", kMR, kNR, kNR, detect_changes, update_reference, detect_update_exact, detect_update_pixels, gemm_tile, gemm_tile_store, gemm_row, pack_pieces, scatter_pieces, store_flagged, deinterleave2, bias_activate, unblock_activate, block_planes, depthwise_run, max_taps, softmax_run, gate_column_sums, blocked_detect_update, blocked_pixel_gemm,
      blocked_depthwise_pixels, blocked_max_pool};
  return table;
}

}  // namespace deltaonnx

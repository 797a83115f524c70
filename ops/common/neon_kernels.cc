// NEON kernels (aarch64, where Advanced SIMD is always present): the GEMM micro tile with its accumulators in
// registers, and the change detection / reference update passes. The fused activation stays the portable one.
// Each output is summed over k in the same order, with fused multiply-adds, as the portable kernels compiled
// for aarch64, so both give the same bits.
#include <arm_neon.h>

#include <cstring>

#include "common/geometry.h"
#include "common/kernel_table.h"
#include "common/tile_epilogue.h"

namespace deltaonnx {
namespace {

constexpr int kMR = 6;   // 6 rows x 4 vectors = 24 accumulators, + 4 B vectors + 2 A registers: 30 of 32
constexpr int kVec = 4;
constexpr int kNV = 4;
constexpr int kNR = kVec * kNV;

// The first `count` (1..4) floats of p, the other lanes zero; never reads past p[count-1].
inline float32x4_t load_partial(const float* p, int64_t count) {
  if (count >= kVec) return vld1q_f32(p);
  float32x4_t v = vdupq_n_f32(0.f);
  v = vld1q_lane_f32(p, v, 0);
  if (count > 1) v = vld1q_lane_f32(p + 1, v, 1);
  if (count > 2) v = vld1q_lane_f32(p + 2, v, 2);
  return v;
}

// Named accumulators: GCC keeps an array of vectors on the stack, stored back on every k step.
#define DELTA_ROW_DECL(r) float32x4_t c##r##0 = vdupq_n_f32(0.f), c##r##1 = c##r##0, c##r##2 = c##r##0, c##r##3 = c##r##0;
#define DELTA_ROW_FMA(r, FMA, areg, lane)                   \
  {                                                         \
    c##r##0 = FMA(c##r##0, b0, areg, lane);                 \
    if (NV > 1) c##r##1 = FMA(c##r##1, b1, areg, lane);     \
    if (NV > 2) c##r##2 = FMA(c##r##2, b2, areg, lane);     \
    if (NV > 3) c##r##3 = FMA(c##r##3, b3, areg, lane);     \
  }
#define DELTA_ROW_STORE(r)                                        \
  {                                                               \
    vst1q_f32(c + r * kNR, c##r##0);                              \
    if (NV > 1) vst1q_f32(c + r * kNR + kVec, c##r##1);           \
    if (NV > 2) vst1q_f32(c + r * kNR + 2 * kVec, c##r##2);       \
    if (NV > 3) vst1q_f32(c + r * kNR + 3 * kVec, c##r##3);       \
  }

// NV vectors per row; the last holds `last` (1..4) valid floats of each B row (FullLast: all 4).
template <int NV, bool FullLast>
void gemm_tile_nv(int64_t depth, const float* a_packed, const float* const* b_rows, int64_t last, float* c) {
  DELTA_ROW_DECL(0) DELTA_ROW_DECL(1) DELTA_ROW_DECL(2) DELTA_ROW_DECL(3) DELTA_ROW_DECL(4) DELTA_ROW_DECL(5)
  const float* a = a_packed;
  for (int64_t k = 0; k < depth; ++k, a += kMR) {
    const float* b = b_rows[k];
    auto load = [&](int v) { return (v < NV - 1 || FullLast) ? vld1q_f32(b + v * kVec) : load_partial(b + v * kVec, last); };
    const float32x4_t b0 = load(0);
    const float32x4_t b1 = NV > 1 ? load(1) : b0;
    const float32x4_t b2 = NV > 2 ? load(2) : b0;
    const float32x4_t b3 = NV > 3 ? load(3) : b0;
    const float32x4_t a0 = vld1q_f32(a);     // rows 0..3
    const float32x2_t a1 = vld1_f32(a + 4);  // rows 4..5
    DELTA_ROW_FMA(0, vfmaq_laneq_f32, a0, 0) DELTA_ROW_FMA(1, vfmaq_laneq_f32, a0, 1)
    DELTA_ROW_FMA(2, vfmaq_laneq_f32, a0, 2) DELTA_ROW_FMA(3, vfmaq_laneq_f32, a0, 3)
    DELTA_ROW_FMA(4, vfmaq_lane_f32, a1, 0) DELTA_ROW_FMA(5, vfmaq_lane_f32, a1, 1)
  }
  DELTA_ROW_STORE(0) DELTA_ROW_STORE(1) DELTA_ROW_STORE(2) DELTA_ROW_STORE(3) DELTA_ROW_STORE(4) DELTA_ROW_STORE(5)
}
#undef DELTA_ROW_DECL
#undef DELTA_ROW_FMA
#undef DELTA_ROW_STORE

void gemm_tile(int64_t depth, const float* a_packed, const float* const* b_rows, int64_t n, float* c) {
  const int64_t vectors = (n + kVec - 1) / kVec;
  const int64_t last = n - (vectors - 1) * kVec;
  const bool full = last == kVec;
  switch (vectors) {
    case 1: full ? gemm_tile_nv<1, true>(depth, a_packed, b_rows, last, c) : gemm_tile_nv<1, false>(depth, a_packed, b_rows, last, c); break;
    case 2: full ? gemm_tile_nv<2, true>(depth, a_packed, b_rows, last, c) : gemm_tile_nv<2, false>(depth, a_packed, b_rows, last, c); break;
    case 3: full ? gemm_tile_nv<3, true>(depth, a_packed, b_rows, last, c) : gemm_tile_nv<3, false>(depth, a_packed, b_rows, last, c); break;
    default: full ? gemm_tile_nv<4, true>(depth, a_packed, b_rows, last, c) : gemm_tile_nv<4, false>(depth, a_packed, b_rows, last, c); break;
  }
}

void gemm_row(int64_t depth, const float* w, const float* const* b_rows, int64_t n, float* out) {
  float32x4_t acc[kNV];
  for (int v = 0; v < kNV; ++v) acc[v] = vdupq_n_f32(0.f);
  const int64_t full = n / kVec, rest = n - full * kVec;
  for (int64_t k = 0; k < depth; ++k) {
    const float* b = b_rows[k];
    const float32x4_t wk = vdupq_n_f32(w[k]);
    for (int64_t v = 0; v < full; ++v) acc[v] = vfmaq_f32(acc[v], vld1q_f32(b + v * kVec), wk);
    if (rest) acc[full] = vfmaq_f32(acc[full], load_partial(b + full * kVec, rest), wk);
  }
  float tmp[kNR];
  for (int v = 0; v < kNV; ++v) vst1q_f32(tmp + v * kVec, acc[v]);
  for (int64_t j = 0; j < n; ++j) out[j] = tmp[j];
}

// gemm_tile, then the portable epilogue from the tile (no fused NEON epilogue yet).
void gemm_tile_store(int64_t depth, const float* a_packed, const float* const* b_rows, int64_t n,
                     float* const* out_rows, int64_t rows, const float* bias, const ActivationParams* acts) {
  tile_then_epilogue<kMR, kNR>(gemm_tile, scalar_kernel_table().bias_activate, depth, a_packed, b_rows, n,
                               out_rows, rows, bias, acts);
}

// 16 pixels: 0xFF where !(|x - ref| <= tau) (NaN and Inf compare false: a change), else 0.
inline uint8x16_t changed16(const float* x, const float* ref, float32x4_t tau) {
  uint32x4_t same[4];
  for (int i = 0; i < 4; ++i) same[i] = vcleq_f32(vabdq_f32(vld1q_f32(x + 4 * i), vld1q_f32(ref + 4 * i)), tau);
  const uint16x8_t lo = vcombine_u16(vmovn_u32(same[0]), vmovn_u32(same[1]));
  const uint16x8_t hi = vcombine_u16(vmovn_u32(same[2]), vmovn_u32(same[3]));
  return vmvnq_u8(vcombine_u8(vmovn_u16(lo), vmovn_u16(hi)));
}

// Widens 4 flag bytes (0 or not) to a 4-lane select mask.
inline uint32x4_t flag_mask4(const uint8_t* flags) {
  uint32_t word;
  __builtin_memcpy(&word, flags, 4);
  const uint8x8_t bytes = vreinterpret_u8_u32(vdup_n_u32(word));
  const uint32x4_t wide = vmovl_u16(vget_low_u16(vmovl_u8(bytes)));
  return vtstq_u32(wide, wide);
}

void detect_changes(const float* x, const float* ref, int64_t channels, int64_t plane, int64_t begin, int64_t end,
                    float tau, uint8_t* flags) {
  const float32x4_t vtau = vdupq_n_f32(tau);
  const uint8x16_t one = vdupq_n_u8(1);
  for (int64_t c = 0; c < channels; ++c) {
    const float* xc = x + c * plane;
    const float* rc = ref + c * plane;
    int64_t p = begin;
    for (; p + 16 <= end; p += 16)
      vst1q_u8(flags + p, vorrq_u8(vld1q_u8(flags + p), vandq_u8(changed16(xc + p, rc + p, vtau), one)));
    for (; p < end; ++p) flags[p] |= static_cast<uint8_t>(value_changed(xc[p], rc[p], tau));
  }
}

void update_reference(const float* x, const float* ref_in, float* ref_out, int64_t channels, int64_t plane,
                      int64_t begin, int64_t end, const uint8_t* flags) {
  const bool in_place = ref_in == ref_out;
  for (int64_t c = 0; c < channels; ++c) {
    const float* xc = x + c * plane;
    const float* rc = ref_in + c * plane;
    float* oc = ref_out + c * plane;
    int64_t p = begin;
    for (; p + 4 <= end; p += 4) {
      const uint32x4_t m = flag_mask4(flags + p);
      if (in_place && vmaxvq_u32(m) == 0) continue;  // nothing flagged: in place, nothing to write
      // In place, the unflagged lanes are rewritten with their own bits (within this call's pixel range).
      vst1q_f32(oc + p, vbslq_f32(m, vld1q_f32(xc + p), vld1q_f32(rc + p)));
    }
    for (; p < end; ++p) {
      if (flags[p]) oc[p] = xc[p];
      else if (!in_place) oc[p] = rc[p];
    }
  }
}

void detect_update_exact(const float* x, const float* ref_in, float* ref_out, int64_t channels, int64_t plane,
                         int64_t begin, int64_t end, uint8_t* flags) {
  const bool in_place = ref_in == ref_out;
  const float32x4_t zero = vdupq_n_f32(0.f);
  for (int64_t c = 0; c < channels; ++c) {
    const float* xc = x + c * plane;
    const float* rc = ref_in + c * plane;
    float* oc = ref_out + c * plane;
    int64_t p = begin;
    for (; p + 4 <= end; p += 4) {
      const float32x4_t xv = vld1q_f32(xc + p), rv = vld1q_f32(rc + p);
      const uint32x4_t changed = vmvnq_u32(vcleq_f32(vabdq_f32(xv, rv), zero));
      if (vmaxvq_u32(changed) != 0) {
        const uint8x8_t bytes = vmovn_u16(vcombine_u16(vmovn_u32(changed), vdup_n_u16(0)));
        uint32_t word;
        __builtin_memcpy(&word, flags + p, 4);
        word |= vget_lane_u32(vreinterpret_u32_u8(vand_u8(bytes, vdup_n_u8(1))), 0);
        __builtin_memcpy(flags + p, &word, 4);
        if (in_place) vst1q_f32(oc + p, vbslq_f32(changed, xv, rv));  // unchanged lanes keep their own bits
      }
      if (!in_place) vst1q_f32(oc + p, vbslq_f32(changed, xv, rv));
    }
    for (; p < end; ++p) {
      const bool changed = value_changed(xc[p], rc[p], 0.f);
      flags[p] |= static_cast<uint8_t>(changed);
      if (changed) oc[p] = xc[p];
      else if (!in_place) oc[p] = rc[p];
    }
  }
}

// Depthwise, channel by channel: 4 vectors of outputs at a time in named accumulators, then single (partial)
// vectors; the taps in the portable kernel's order with fused multiply-adds (same bits), the activation the
// portable one.
void depthwise_run(int64_t count, const float* const* taps, int64_t in_stride, const float* w, int64_t w_stride,
                   const float* bias, const ActivationParams* acts, int64_t channels, int64_t n, float* out,
                   int64_t out_stride) {
  for (int64_t c = 0; c < channels; ++c) {
    const float* wc = w + c * w_stride;
    const int64_t in = c * in_stride;
    float* oc = out + c * out_stride;
    const float32x4_t vbias = vdupq_n_f32(bias[c]);
    int64_t j = 0;
    for (; j + 4 * kVec <= n; j += 4 * kVec) {
      float32x4_t a0 = vdupq_n_f32(0.f), a1 = a0, a2 = a0, a3 = a0;
      for (int64_t t = 0; t < count; ++t) {
        const float32x4_t wt = vdupq_n_f32(wc[t]);
        const float* p = taps[t] + in + j;
        a0 = vfmaq_f32(a0, wt, vld1q_f32(p));
        a1 = vfmaq_f32(a1, wt, vld1q_f32(p + kVec));
        a2 = vfmaq_f32(a2, wt, vld1q_f32(p + 2 * kVec));
        a3 = vfmaq_f32(a3, wt, vld1q_f32(p + 3 * kVec));
      }
      vst1q_f32(oc + j, vaddq_f32(a0, vbias));
      vst1q_f32(oc + j + kVec, vaddq_f32(a1, vbias));
      vst1q_f32(oc + j + 2 * kVec, vaddq_f32(a2, vbias));
      vst1q_f32(oc + j + 3 * kVec, vaddq_f32(a3, vbias));
    }
    for (; j < n; j += kVec) {
      const int64_t len = n - j < kVec ? n - j : kVec;
      float32x4_t a = vdupq_n_f32(0.f);
      for (int64_t t = 0; t < count; ++t) a = vfmaq_f32(a, vdupq_n_f32(wc[t]), load_partial(taps[t] + in + j, len));
      float lanes[kVec];
      vst1q_f32(lanes, vaddq_f32(a, vbias));
      for (int64_t i = 0; i < len; ++i) oc[j + i] = lanes[i];
    }
    if (acts[c].kind != Activation::kNone)
      for (int64_t i = 0; i < n; ++i) oc[i] = apply_activation(acts[c], oc[i]);
  }
}

// Max pooling over taps with stride-1 reads: each output row is its own accumulator, tap by tap, 4 lanes at a
// time (vmaxq keeps NaN, as the portable kernel does); other steps take the portable kernel.
void max_taps(const float* src, int64_t src_stride, int64_t step, const PoolTap* taps, int64_t tap_count,
              int64_t period, int64_t rows, int64_t n, float* dst, int64_t dst_stride) {
  if (step != 1) {
    scalar_kernel_table().max_taps(src, src_stride, step, taps, tap_count, period, rows, n, dst, dst_stride);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * src_stride;
    float* d = dst + r * dst_stride;
    for (int64_t j = 0; j < n; ++j) d[j] = kLowestFloat;
    for (int64_t q = 0; q < n; q += period) {  // image row by image row
      const int64_t row_end = n - q < period ? n - q : period;
      for (int64_t t = 0; t < tap_count; ++t) {
        const int64_t b = q + (taps[t].begin > 0 ? taps[t].begin : 0);
        const int64_t e = q + (taps[t].end < row_end ? taps[t].end : row_end);
        const float* p = s + taps[t].offset;
        int64_t j = b;
        for (; j + kVec <= e; j += kVec) vst1q_f32(d + j, vmaxq_f32(vld1q_f32(d + j), vld1q_f32(p + j)));
        for (; j < e; ++j) d[j] = (p[j] > d[j] || p[j] != p[j]) ? p[j] : d[j];
      }
    }
  }
}

}  // namespace

const KernelTable& neon_kernel_table() {
  static const KernelTable table = [] {
    KernelTable t = scalar_kernel_table();  // bias_activate stays the portable one; every GEMM entry is replaced
    t.name = "neon";
    t.gemm_mr = kMR;
    t.gemm_nr = kNR;
    t.gemm_vec = kVec;
    t.detect_changes = detect_changes;
    t.update_reference = update_reference;
    t.detect_update_exact = detect_update_exact;
    t.gemm_tile = gemm_tile;
    t.gemm_tile_store = gemm_tile_store;  // the scalar one would read the panels with its own gemm_mr
    t.gemm_row = gemm_row;
    t.depthwise_run = depthwise_run;
    t.max_taps = max_taps;
    return t;
  }();
  return table;
}

}  // namespace deltaonnx

// AVX-512 (F/BW/VL/DQ) kernels. Compiled with -mavx512* for this file only; selected at run time.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "common/blocked_lines.h"
#include "common/blocked_pool_lines.h"
#include "common/kernel_table.h"

namespace deltaonnx {
namespace {

constexpr int kMR = 8;
constexpr int kVec = 16;
constexpr int kNV = 3;  // vectors per tile row
constexpr int kNR = kVec * kNV;

inline __mmask16 tail_mask(int64_t n) { return n >= kVec ? __mmask16(0xffff) : __mmask16((1u << n) - 1u); }

// |x - ref| > tau or unordered: "not less-or-equal, unordered true" keeps NaN as a change (rule 2).
inline __mmask16 changed_mask(__m512 x, __m512 r, __m512 tau, __m512 abs_mask) {
  __m512 d = _mm512_and_ps(_mm512_sub_ps(x, r), abs_mask);
  return _mm512_cmp_ps_mask(d, tau, _CMP_NLE_UQ);
}

void detect_changes(const float* x, const float* ref, int64_t channels, int64_t plane, int64_t begin, int64_t end,
                    float tau, uint8_t* flags) {
  const __m512 vtau = _mm512_set1_ps(tau);
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  if (end - begin <= 4 * kVec) {  // short runs: channels inner (see detect_update_exact)
    for (int64_t p = begin; p < end; p += kVec) {
      const __mmask16 t = tail_mask(end - p);
      __mmask16 any = 0;
      for (int64_t c = 0; c < channels; ++c)
        any |= changed_mask(_mm512_maskz_loadu_ps(t, x + c * plane + p), _mm512_maskz_loadu_ps(t, ref + c * plane + p),
                            vtau, abs_mask);
      any &= t;
      if (any) {
        __m128i f = _mm_maskz_loadu_epi8(t, flags + p);
        _mm_mask_storeu_epi8(flags + p, t, _mm_or_si128(f, _mm_maskz_set1_epi8(any, 1)));
      }
    }
    return;
  }
  // Channels outer: each plane is streamed sequentially; the flags of the range stay in L1.
  for (int64_t c = 0; c < channels; ++c) {
    const float* xc = x + c * plane;
    const float* rc = ref + c * plane;
    int64_t p = begin;
    for (; p + kVec <= end; p += kVec) {
      __mmask16 m = changed_mask(_mm512_loadu_ps(xc + p), _mm512_loadu_ps(rc + p), vtau, abs_mask);
      __m128i f = _mm_loadu_si128(reinterpret_cast<const __m128i*>(flags + p));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(flags + p), _mm_or_si128(f, _mm_maskz_set1_epi8(m, 1)));
    }
    if (p < end) {
      __mmask16 t = tail_mask(end - p);
      __mmask16 m = changed_mask(_mm512_maskz_loadu_ps(t, xc + p), _mm512_maskz_loadu_ps(t, rc + p), vtau, abs_mask) & t;
      __m128i f = _mm_maskz_loadu_epi8(t, flags + p);
      _mm_mask_storeu_epi8(flags + p, t, _mm_or_si128(f, _mm_maskz_set1_epi8(m, 1)));
    }
  }
}

void update_reference(const float* x, const float* ref_in, float* ref_out, int64_t channels, int64_t plane,
                      int64_t begin, int64_t end, const uint8_t* flags) {
  const bool in_place = ref_in == ref_out;
  for (int64_t c = 0; c < channels; ++c) {
    const float* xc = x + c * plane;
    const float* rc = ref_in + c * plane;
    float* oc = ref_out + c * plane;
    for (int64_t p = begin; p < end; p += kVec) {
      __mmask16 t = tail_mask(end - p);
      __m128i f = _mm_maskz_loadu_epi8(t, flags + p);
      __mmask16 m = _mm_test_epi8_mask(f, f) & t;
      if (in_place) {
        if (m) _mm512_mask_storeu_ps(oc + p, m, _mm512_maskz_loadu_ps(m, xc + p));
      } else {
        __m512 v = _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(t, rc + p), m, xc + p);
        _mm512_mask_storeu_ps(oc + p, t, v);
      }
    }
  }
}

void detect_update_exact(const float* x, const float* ref_in, float* ref_out, int64_t channels, int64_t plane,
                         int64_t begin, int64_t end, uint8_t* flags) {
  const bool in_place = ref_in == ref_out;
  const __m512 zero = _mm512_setzero_ps();
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  if (end - begin <= 4 * kVec) {
    // Short runs (change maps): pixels outer, channels inner, the change bits kept in a register, so the
    // per-channel loads (a cache miss each, planes apart) are independent and overlap.
    for (int64_t p = begin; p < end; p += kVec) {
      const __mmask16 t = tail_mask(end - p);
      __mmask16 any = 0;
      for (int64_t c = 0; c < channels; ++c) {
        const int64_t o = c * plane + p;
        const __m512 xv = _mm512_maskz_loadu_ps(t, x + o), rv = _mm512_maskz_loadu_ps(t, ref_in + o);
        const __mmask16 m = changed_mask(xv, rv, zero, abs_mask) & t;
        any |= m;
        if (in_place) _mm512_mask_storeu_ps(ref_out + o, m, xv);
        else _mm512_mask_storeu_ps(ref_out + o, t, _mm512_mask_blend_ps(m, rv, xv));
      }
      if (any) {
        __m128i f = _mm_maskz_loadu_epi8(t, flags + p);
        _mm_mask_storeu_epi8(flags + p, t, _mm_or_si128(f, _mm_maskz_set1_epi8(any, 1)));
      }
    }
    return;
  }
  for (int64_t c = 0; c < channels; ++c) {
    const float* xc = x + c * plane;
    const float* rc = ref_in + c * plane;
    float* oc = ref_out + c * plane;
    for (int64_t p = begin; p < end; p += kVec) {
      const __mmask16 t = tail_mask(end - p);
      const __m512 xv = _mm512_maskz_loadu_ps(t, xc + p), rv = _mm512_maskz_loadu_ps(t, rc + p);
      const __mmask16 m = changed_mask(xv, rv, zero, abs_mask) & t;
      if (m) {
        __m128i f = _mm_maskz_loadu_epi8(t, flags + p);
        _mm_mask_storeu_epi8(flags + p, t, _mm_or_si128(f, _mm_maskz_set1_epi8(m, 1)));
      }
      if (in_place) {
        if (m) _mm512_mask_storeu_ps(oc + p, m, xv);
      } else {
        _mm512_mask_storeu_ps(oc + p, t, _mm512_mask_blend_ps(m, rv, xv));
      }
    }
  }
}

void detect_update_pixels(const float* x, const float* ref_in, float* ref_out, int64_t channels, int64_t plane,
                          int64_t begin, int64_t end, float tau, uint8_t* flags) {
  const bool in_place = ref_in == ref_out;
  const __m512 vtau = _mm512_set1_ps(tau);
  const __m512 abs_mask = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  for (int64_t p = begin; p < end; p += kVec) {
    const __mmask16 t = tail_mask(end - p);
    __mmask16 any = 0;
    for (int64_t c = 0; c < channels; ++c)
      any |= changed_mask(_mm512_maskz_loadu_ps(t, x + c * plane + p), _mm512_maskz_loadu_ps(t, ref_in + c * plane + p),
                          vtau, abs_mask);
    any &= t;
    if (any) {
      __m128i f = _mm_maskz_loadu_epi8(t, flags + p);
      _mm_mask_storeu_epi8(flags + p, t, _mm_or_si128(f, _mm_maskz_set1_epi8(any, 1)));
    } else if (in_place) {
      continue;
    }
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t o = c * plane + p;
      if (in_place) _mm512_mask_storeu_ps(ref_out + o, any, _mm512_maskz_loadu_ps(any, x + o));
      else _mm512_mask_storeu_ps(ref_out + o, t, _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(t, ref_in + o), any, x + o));
    }
  }
}

void gemm_row(int64_t depth, const float* w, const float* const* b_rows, int64_t n, float* out);

void gemm_tile_store(int64_t depth, const float* a_packed, const float* const* b_rows, int64_t n,
                     float* const* out_rows, int64_t rows, const float* bias, const ActivationParams* acts);

// The plain tile: the fused kernel with no bias and no activation, rows into c.
void gemm_tile(int64_t depth, const float* a_packed, const float* const* b_rows, int64_t n, float* c) {
  static const ActivationParams kIdentity[kMR] = {};
  float* rows[kMR];
  for (int r = 0; r < kMR; ++r) rows[r] = c + r * kNR;
  gemm_tile_store(depth, a_packed, b_rows, n, rows, kMR, nullptr, kIdentity);
}

void gemm_row(int64_t depth, const float* w, const float* const* b_rows, int64_t n, float* out) {
  const __mmask16 m0 = tail_mask(n), m1 = n > kVec ? tail_mask(n - kVec) : 0, m2 = n > 2 * kVec ? tail_mask(n - 2 * kVec) : 0;
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0;
  for (int64_t k = 0; k < depth; ++k) {
    const __m512 wk = _mm512_set1_ps(w[k]);
    const float* b = b_rows[k];
    a0 = _mm512_fmadd_ps(wk, _mm512_maskz_loadu_ps(m0, b), a0);
    if (m1) a1 = _mm512_fmadd_ps(wk, _mm512_maskz_loadu_ps(m1, b + kVec), a1);
    if (m2) a2 = _mm512_fmadd_ps(wk, _mm512_maskz_loadu_ps(m2, b + 2 * kVec), a2);
  }
  _mm512_mask_storeu_ps(out, m0, a0);
  _mm512_mask_storeu_ps(out + kVec, m1, a1);
  _mm512_mask_storeu_ps(out + 2 * kVec, m2, a2);
}

// dst[j] = src[j] for j < len, in masked vectors (short runs: no memcpy call).
inline void copy_run(const float* src, int64_t len, float* dst) {
  for (int64_t j = 0; j < len; j += kVec) {
    const __mmask16 m = tail_mask(len - j);
    _mm512_mask_storeu_ps(dst + j, m, _mm512_maskz_loadu_ps(m, src + j));
  }
}

void pack_pieces(int64_t depth, const float* base, const int64_t* tap_offsets, const PackPiece* pieces,
                 int64_t count, int64_t ld, float* dst) {
  // Piece by piece within blocks of taps: a piece's masks are computed once and the block's rows of dst stay
  // in L1 while the pieces fill them. Scattered pieces read lines no hardware prefetcher predicts: the block's
  // taps of the piece kAhead further are prefetched while this one is copied.
  constexpr int64_t kTapBlock = 64, kAhead = 4;
  for (int64_t k0 = 0; k0 < depth; k0 += kTapBlock) {
    const int64_t k1 = std::min(depth, k0 + kTapBlock);
    for (int64_t i = 0; i < count; ++i) {
      if (i + kAhead < count) {
        const float* next = base + pieces[i + kAhead].src;
        for (int64_t k = k0; k < k1; ++k) _mm_prefetch(reinterpret_cast<const char*>(next + tap_offsets[k]), _MM_HINT_T1);
      }
      const float* src = base + pieces[i].src;
      float* out = dst + pieces[i].dst;
      const int64_t len = pieces[i].len;
      if (len <= kVec) {
        const __mmask16 m = tail_mask(len);
        for (int64_t k = k0; k < k1; ++k)
          _mm512_mask_storeu_ps(out + k * ld, m, _mm512_maskz_loadu_ps(m, src + tap_offsets[k]));
        continue;
      }
      for (int64_t k = k0; k < k1; ++k) copy_run(src + tap_offsets[k], len, out + k * ld);
    }
  }
}

void scatter_pieces(const float* vals, const PackPiece* pieces, const int64_t* out_offsets, int64_t count,
                    float* out) {
  for (int64_t i = 0; i < count; ++i) copy_run(vals + pieces[i].dst, pieces[i].len, out + out_offsets[i]);
}

void store_flagged(float* dst, const float* vals, const uint8_t* flags, int64_t n) {
  for (int64_t i = 0; i < n; i += kVec) {
    const __mmask16 t = tail_mask(n - i);
    const __m128i f = _mm_maskz_loadu_epi8(t, flags + i);
    const __mmask16 m = _mm_test_epi8_mask(f, f);  // zero beyond the tail: those flags are not read
    _mm512_mask_storeu_ps(dst + i, m, _mm512_maskz_loadu_ps(m, vals + i));
  }
}

void deinterleave2(const float* src, int64_t n, float* even, float* odd) {
  const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  int64_t v = 0;
  for (; v + kVec <= n; v += kVec) {
    const __m512 a = _mm512_loadu_ps(src + 2 * v), b = _mm512_loadu_ps(src + 2 * v + kVec);
    _mm512_storeu_ps(even + v, _mm512_permutex2var_ps(a, ie, b));
    _mm512_storeu_ps(odd + v, _mm512_permutex2var_ps(a, io, b));
  }
  if (v < n) {  // the tail: 2 * (n - v) source floats through two masked loads, n - v of each phase stored
    const int64_t rest = 2 * (n - v);
    const __m512 a = _mm512_maskz_loadu_ps(tail_mask(rest), src + 2 * v);
    const __m512 b = rest > kVec ? _mm512_maskz_loadu_ps(tail_mask(rest - kVec), src + 2 * v + kVec) : _mm512_setzero_ps();
    const __mmask16 t = tail_mask(n - v);
    _mm512_mask_storeu_ps(even + v, t, _mm512_permutex2var_ps(a, ie, b));
    _mm512_mask_storeu_ps(odd + v, t, _mm512_permutex2var_ps(a, io, b));
  }
}

// exp(x) to ~1 ulp (Cephes' polynomial); NaN stays NaN because the clamps keep their second operand on NaN.
inline __m512 exp_ps(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(88.3762626647949f), x);
  x = _mm512_max_ps(_mm512_set1_ps(-88.3762626647949f), x);
  __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500E-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
  p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_scalef_ps(p, n);
}

inline __m512 sigmoid_ps(__m512 x) {
  const __m512 one = _mm512_set1_ps(1.f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

// x * a rounded by itself (activation.h rounded_product): GCC would contract it with the add after it.
inline __m512 rounded_product(__m512 x, __m512 a) {
  __m512 p = _mm512_mul_ps(x, a);
  __asm__("" : "+v"(p));
  return p;
}

inline __m512 activate(__m512 x, const ActivationParams& act) {
  const __m512 zero = _mm512_setzero_ps();
  const __m512 one = _mm512_set1_ps(1.f);
  switch (act.kind) {
    case Activation::kNone: return x;
    case Activation::kRelu: return _mm512_max_ps(zero, x);  // NaN stays NaN (second operand)
    case Activation::kLeakyRelu:
    case Activation::kPRelu: {
      __mmask16 neg = _mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ);
      return _mm512_mask_mul_ps(x, neg, x, _mm512_set1_ps(act.a));
    }
    case Activation::kClip:
      return _mm512_min_ps(_mm512_set1_ps(act.b), _mm512_max_ps(_mm512_set1_ps(act.a), x));
    case Activation::kSigmoid: return sigmoid_ps(x);
    case Activation::kSiLU: return _mm512_mul_ps(x, sigmoid_ps(x));
    case Activation::kHardSigmoid: {
      __m512 v = _mm512_add_ps(rounded_product(x, _mm512_set1_ps(act.a)), _mm512_set1_ps(act.b));
      return _mm512_min_ps(one, _mm512_max_ps(zero, v));
    }
    case Activation::kHardSwish: {
      __m512 v = _mm512_add_ps(rounded_product(x, _mm512_set1_ps(1.f / 6.f)), _mm512_set1_ps(0.5f));
      return _mm512_mul_ps(x, _mm512_min_ps(one, _mm512_max_ps(zero, v)));
    }
    case Activation::kTanh: break;     // handled by the scalar loop
    case Activation::kSoftmax: break;  // per pixel, never per element (ConvSpec::activation_for)
  }
  return x;
}

void bias_activate(float* v, int64_t n, float bias, const ActivationParams& act) {
  if (act.kind == Activation::kTanh) {
    for (int64_t i = 0; i < n; ++i) v[i] = apply_activation(act, v[i] + bias);
    return;
  }
  const __m512 vb = _mm512_set1_ps(bias);
  for (int64_t i = 0; i < n; i += kVec) {
    __mmask16 t = tail_mask(n - i);
    __m512 x = _mm512_add_ps(_mm512_maskz_loadu_ps(t, v + i), vb);
    _mm512_mask_storeu_ps(v + i, t, activate(x, act));
  }
}

// Blocks of 16 channels (MLAS's block with AVX-512): 16 pixels' 16 channels loaded as rows and transposed in
// registers (unpack ps, unpack pd, two 128-bit lane shuffles), activated, stored as 16 runs of one channel each.
// Tanh (no vector form here; MLAS fuses it into the conv anyway) and other blocks: the scalar kernel.
// r[i] = row i of a 16x16 tile -> r[i] = column i (unpack pairs, then pairs of pairs, then 128-bit lanes).
inline void transpose_16x16(__m512 r[kVec]) {
  __m512 t[kVec];
  for (int i = 0; i < 8; ++i) {  // t[2i], lane L: r[2i][4L], r[2i+1][4L], r[2i][4L+1], r[2i+1][4L+1]; t[2i+1]: +2, +3
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {  // r[4i+q], lane L: rows 4i..4i+3 at column 4L+q
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
  }
  // t[8h+q] (q < 4): lanes = rows 8h..8h+3 and 8h+4..8h+7 at columns q and 8+q; t[8h+4+q]: columns 4+q, 12+q.
  for (int h = 0; h < 2; ++h)
    for (int q = 0; q < 4; ++q) {
      t[8 * h + q] = _mm512_shuffle_f32x4(r[8 * h + q], r[8 * h + 4 + q], 0x88);
      t[8 * h + 4 + q] = _mm512_shuffle_f32x4(r[8 * h + q], r[8 * h + 4 + q], 0xdd);
    }
  for (int q = 0; q < 8; ++q) {  // t[q] and t[8+q] hold columns q and 8+q
    r[q] = _mm512_shuffle_f32x4(t[q], t[8 + q], 0x88);
    r[8 + q] = _mm512_shuffle_f32x4(t[q], t[8 + q], 0xdd);
  }
}

void unblock_activate(const float* blocked, int64_t block, int64_t channels, int64_t n, const ActivationParams* acts,
                      float* y, int64_t y_stride) {
  if (block != kVec || acts[0].kind == Activation::kTanh) {
    scalar_kernel_table().unblock_activate(blocked, block, channels, n, acts, y, y_stride);
    return;
  }
  bool plain = channels == kVec;  // a whole block without activation (DeltaReorder): plain loads and stores
  for (int64_t c = 0; c < channels; ++c) plain = plain && acts[c].kind == Activation::kNone;
  int64_t j = 0;
  if (plain) {
    for (; j + kVec <= n; j += kVec) {
      __m512 r[kVec];
      for (int i = 0; i < kVec; ++i) r[i] = _mm512_loadu_ps(blocked + (j + i) * kVec);
      transpose_16x16(r);
      for (int c = 0; c < kVec; ++c) _mm512_storeu_ps(y + c * y_stride + j, r[c]);
    }
  }
  for (; j < n; j += kVec) {
    const int64_t pixels = n - j < kVec ? n - j : kVec;
    __m512 r[kVec];
    for (int i = 0; i < kVec; ++i)
      r[i] = i < pixels ? _mm512_loadu_ps(blocked + (j + i) * kVec) : _mm512_setzero_ps();
    transpose_16x16(r);
    const __mmask16 tail = tail_mask(pixels);
    for (int64_t c = 0; c < channels; ++c) _mm512_mask_storeu_ps(y + c * y_stride + j, tail, activate(r[c], acts[c]));
  }
}

// Blocks of 16: 16 pixels of the 16 planes loaded as rows, transposed, stored as 16 lines; other blocks: scalar.
void block_planes(const float* planes, int64_t plane_stride, int64_t block, int64_t channels, int64_t n,
                  float* lines) {
  if (block != kVec) {
    scalar_kernel_table().block_planes(planes, plane_stride, block, channels, n, lines);
    return;
  }
  int64_t j = 0;
  for (; j + kVec <= n; j += kVec) {  // whole tiles: plain loads, a fixed store count (~1.3x faster than masked)
    __m512 r[kVec];
    for (int c = 0; c < kVec; ++c) r[c] = c < channels ? _mm512_loadu_ps(planes + c * plane_stride + j) : _mm512_setzero_ps();
    transpose_16x16(r);
    for (int i = 0; i < kVec; ++i) _mm512_storeu_ps(lines + (j + i) * kVec, r[i]);
  }
  if (j == n) return;
  const int64_t pixels = n - j;
  __m512 r[kVec];
  for (int c = 0; c < kVec; ++c)
    r[c] = c < channels ? _mm512_maskz_loadu_ps(tail_mask(pixels), planes + c * plane_stride + j) : _mm512_setzero_ps();
  transpose_16x16(r);
  for (int64_t i = 0; i < pixels; ++i) _mm512_storeu_ps(lines + (j + i) * kVec, r[i]);
}

// The GEMM micro tile: ROWS (<= 8) output channels x NV vectors of pixels, accumulators in named registers
// (arrays of vectors end up on the stack), the epilogue (bias, activation) applied in registers, rows stored
// in place. Panels of fewer channels (the last of 10, or heads of 2 or 4) use a smaller ROWS: no FMA is spent
// on the panel's zero rows.
#define DELTA_ROW_DECL(r) __m512 c##r##0 = _mm512_setzero_ps(), c##r##1 = c##r##0, c##r##2 = c##r##0;
#define DELTA_ROW_FMA(r)                                    \
  if (r < ROWS) {                                           \
    const __m512 ar = _mm512_set1_ps(a[r]);                 \
    c##r##0 = _mm512_fmadd_ps(ar, b0, c##r##0);             \
    if (NV > 1) c##r##1 = _mm512_fmadd_ps(ar, b1, c##r##1); \
    if (NV > 2) c##r##2 = _mm512_fmadd_ps(ar, b2, c##r##2); \
  }
#define DELTA_ROW_OUT(r)                                                                                  \
  if (r < rows) {                                                                                         \
    const __m512 vb = _mm512_set1_ps(bias ? bias[r] : 0.f);                                               \
    float* o = out_rows[r];                                                                               \
    if (NV == 1) _mm512_mask_storeu_ps(o, last, activate(_mm512_add_ps(c##r##0, vb), acts[r]));           \
    if (NV > 1) _mm512_storeu_ps(o, activate(_mm512_add_ps(c##r##0, vb), acts[r]));                       \
    if (NV == 2) _mm512_mask_storeu_ps(o + kVec, last, activate(_mm512_add_ps(c##r##1, vb), acts[r]));    \
    if (NV > 2) _mm512_storeu_ps(o + kVec, activate(_mm512_add_ps(c##r##1, vb), acts[r]));                \
    if (NV > 2) _mm512_mask_storeu_ps(o + 2 * kVec, last, activate(_mm512_add_ps(c##r##2, vb), acts[r])); \
  }

template <int NV, int ROWS>
void gemm_tile_store_nv(int64_t depth, const float* a_packed, const float* const* b_rows, int64_t n,
                        float* const* out_rows, int64_t rows, const float* bias, const ActivationParams* acts) {
  DELTA_ROW_DECL(0) DELTA_ROW_DECL(1) DELTA_ROW_DECL(2) DELTA_ROW_DECL(3)
  DELTA_ROW_DECL(4) DELTA_ROW_DECL(5) DELTA_ROW_DECL(6) DELTA_ROW_DECL(7)
  const __mmask16 last = tail_mask(n - (NV - 1) * kVec);
  const float* a = a_packed;
  for (int64_t k = 0; k < depth; ++k, a += kMR) {
    const float* b = b_rows[k];
    if (k + 6 < depth) _mm_prefetch(reinterpret_cast<const char*>(b_rows[k + 6]), _MM_HINT_T0);
    __m512 b0, b1 = _mm512_setzero_ps(), b2 = _mm512_setzero_ps();
    if (NV == 1) {
      b0 = _mm512_maskz_loadu_ps(last, b);
    } else if (NV == 2) {
      b0 = _mm512_loadu_ps(b);
      b1 = _mm512_maskz_loadu_ps(last, b + kVec);
    } else {
      b0 = _mm512_loadu_ps(b);
      b1 = _mm512_loadu_ps(b + kVec);
      b2 = _mm512_maskz_loadu_ps(last, b + 2 * kVec);
    }
    DELTA_ROW_FMA(0) DELTA_ROW_FMA(1) DELTA_ROW_FMA(2) DELTA_ROW_FMA(3)
    DELTA_ROW_FMA(4) DELTA_ROW_FMA(5) DELTA_ROW_FMA(6) DELTA_ROW_FMA(7)
  }
  DELTA_ROW_OUT(0) DELTA_ROW_OUT(1) DELTA_ROW_OUT(2) DELTA_ROW_OUT(3)
  DELTA_ROW_OUT(4) DELTA_ROW_OUT(5) DELTA_ROW_OUT(6) DELTA_ROW_OUT(7)
}
#undef DELTA_ROW_DECL
#undef DELTA_ROW_FMA
#undef DELTA_ROW_OUT

template <int ROWS>
void gemm_tile_store_rows(int64_t depth, const float* a_packed, const float* const* b_rows, int64_t n,
                          float* const* out_rows, int64_t rows, const float* bias, const ActivationParams* acts) {
  if (n > 2 * kVec) gemm_tile_store_nv<3, ROWS>(depth, a_packed, b_rows, n, out_rows, rows, bias, acts);
  else if (n > kVec) gemm_tile_store_nv<2, ROWS>(depth, a_packed, b_rows, n, out_rows, rows, bias, acts);
  else gemm_tile_store_nv<1, ROWS>(depth, a_packed, b_rows, n, out_rows, rows, bias, acts);
}

void gemm_tile_store(int64_t depth, const float* a_packed, const float* const* b_rows, int64_t n,
                     float* const* out_rows, int64_t rows, const float* bias, const ActivationParams* acts) {
  for (int64_t r = 0; r < rows; ++r) {
    if (acts[r].kind == Activation::kTanh) {  // no vector tanh: epilogue from a tile
      alignas(64) float tile[kMR * kNR];
      gemm_tile(depth, a_packed, b_rows, n, tile);
      for (int64_t i = 0; i < rows; ++i) {
        bias_activate(tile + i * kNR, n, bias ? bias[i] : 0.f, acts[i]);
        std::memcpy(out_rows[i], tile + i * kNR, static_cast<size_t>(n) * sizeof(float));
      }
      return;
    }
  }
  if (rows <= 1) gemm_tile_store_rows<1>(depth, a_packed, b_rows, n, out_rows, rows, bias, acts);
  else if (rows <= 2) gemm_tile_store_rows<2>(depth, a_packed, b_rows, n, out_rows, rows, bias, acts);
  else if (rows <= 4) gemm_tile_store_rows<4>(depth, a_packed, b_rows, n, out_rows, rows, bias, acts);
  else gemm_tile_store_rows<kMR>(depth, a_packed, b_rows, n, out_rows, rows, bias, acts);
}

// Depthwise: CH channels x NV vectors of outputs, one accumulator each, every tap one load and one FMA per
// accumulator, the epilogue in registers. Channel ch reads taps[t] + in + ch*in_stride + j (the last vector
// masked by `last`) and writes out + ch*out_stride. Several channels share a short run: the vectors of one
// channel alone would wait on their FMA chains.
template <int CH, int NV>
void depthwise_tile(int64_t count, const float* const* taps, int64_t in, int64_t in_stride, const float* w,
                    int64_t w_stride, const float* bias, const ActivationParams* acts, __mmask16 last, float* out,
                    int64_t out_stride) {
  __m512 acc[CH * NV];
#pragma GCC unroll 8
  for (int a = 0; a < CH * NV; ++a) acc[a] = _mm512_setzero_ps();
  for (int64_t t = 0; t < count; ++t) {
    const float* p = taps[t] + in;
#pragma GCC unroll 8
    for (int ch = 0; ch < CH; ++ch) {
      const __m512 wt = _mm512_set1_ps(w[ch * w_stride + t]);
#pragma GCC unroll 8
      for (int i = 0; i < NV; ++i) {
        const float* q = p + ch * in_stride + i * kVec;
        const __m512 x = i == NV - 1 ? _mm512_maskz_loadu_ps(last, q) : _mm512_loadu_ps(q);
        acc[ch * NV + i] = _mm512_fmadd_ps(wt, x, acc[ch * NV + i]);
      }
    }
  }
#pragma GCC unroll 8
  for (int ch = 0; ch < CH; ++ch) {
    const __m512 vb = _mm512_set1_ps(bias[ch]);
    float* o = out + ch * out_stride;
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) {
      const __m512 v = activate(_mm512_add_ps(acc[ch * NV + i], vb), acts[ch]);  // Tanh: the sum (see below)
      if (i == NV - 1) _mm512_mask_storeu_ps(o + i * kVec, last, v);
      else _mm512_storeu_ps(o + i * kVec, v);
    }
  }
}

template <int CH>
void depthwise_tile_nv(int64_t nv, int64_t count, const float* const* taps, int64_t in, int64_t in_stride,
                       const float* w, int64_t w_stride, const float* bias, const ActivationParams* acts,
                       __mmask16 last, float* out, int64_t out_stride) {
#define DELTA_DW_TILE(NV)                                                                                   \
  if constexpr (CH * NV <= 8) {                                                                             \
    if (nv == NV)                                                                                           \
      return depthwise_tile<CH, NV>(count, taps, in, in_stride, w, w_stride, bias, acts, last, out, out_stride); \
  }
  DELTA_DW_TILE(1) DELTA_DW_TILE(2) DELTA_DW_TILE(3) DELTA_DW_TILE(4)
  DELTA_DW_TILE(5) DELTA_DW_TILE(6) DELTA_DW_TILE(7) DELTA_DW_TILE(8)
#undef DELTA_DW_TILE
}

void depthwise_run(int64_t count, const float* const* taps, int64_t in_stride, const float* w, int64_t w_stride,
                   const float* bias, const ActivationParams* acts, int64_t channels, int64_t n, float* out,
                   int64_t out_stride) {
  // Tiles of at most 8 accumulators: runs of 5+ vectors one channel at a time, in blocks of at most 8 vectors
  // spread evenly (10 vectors: 5 + 5); shorter runs several channels at once (1 vector: 8 channels).
  const int64_t vectors = (n + kVec - 1) / kVec;
  const int64_t blocks = vectors >= 5 ? (vectors + 7) / 8 : 1;
  for (int64_t c = 0; c < channels;) {
    int64_t ch = vectors >= 5 ? 1 : vectors == 1 ? 8 : vectors == 2 ? 4 : 2;
    while (ch > channels - c) ch /= 2;
    const auto tile = ch == 8 ? depthwise_tile_nv<8>
                      : ch == 4 ? depthwise_tile_nv<4>
                      : ch == 2 ? depthwise_tile_nv<2>
                                : depthwise_tile_nv<1>;
    int64_t j = 0;
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t nv = vectors / blocks + (b < vectors % blocks ? 1 : 0);
      const int64_t len = n - j < nv * kVec ? n - j : nv * kVec;
      const __mmask16 last = tail_mask(len - (nv - 1) * kVec);
      tile(nv, count, taps, c * in_stride + j, in_stride, w + c * w_stride, w_stride, bias + c, acts + c, last,
           out + c * out_stride + j, out_stride);
      j += len;
    }
    c += ch;
  }
  for (int64_t c = 0; c < channels; ++c)  // no vector tanh: the tiles stored the sums
    if (acts[c].kind == Activation::kTanh)
      for (int64_t i = 0; i < n; ++i) out[c * out_stride + i] = apply_activation(acts[c], out[c * out_stride + i]);
}

// NaN-keeping max: vmaxps(a, b) returns b when either is NaN, which keeps a NaN of b; the lanes where a is
// already NaN keep a.
inline __m512 max_keep_nan(__m512 a, __m512 b) {
  return _mm512_mask_max_ps(a, _mm512_cmp_ps_mask(a, a, _CMP_ORD_Q), a, b);
}

// The same on the lanes of m; the other lanes keep a.
inline __m512 max_keep_nan(__m512 a, __mmask16 m, __m512 b) {
  return _mm512_mask_max_ps(a, _mm512_mask_cmp_ps_mask(m, a, a, _CMP_ORD_Q), a, b);
}

// The lanes [0, len) of the block of outputs starting at j0 that tap t applies to (see KernelTable::max_taps).
inline __mmask16 pool_tap_lanes(const PoolTap& t, int64_t j0, int64_t len, int64_t period) {
  uint32_t m = 0;
  for (int64_t q = j0 / period * period; q < j0 + len; q += period) {
    const int64_t b = std::max(q + std::max<int64_t>(t.begin, 0), j0), e = std::min(q + std::min(t.end, period), j0 + len);
    if (e > b) m |= ((1u << (e - j0)) - 1u) & ~((1u << (b - j0)) - 1u);
  }
  return __mmask16(m);
}

// Bit i of a 16-bit mask to bit 2i: the source lanes of a stride-2 load.
inline uint32_t spread_even(uint32_t m) {
  m = (m | (m << 8)) & 0x00ff00ffu;
  m = (m | (m << 4)) & 0x0f0f0f0fu;
  m = (m | (m << 2)) & 0x33333333u;
  return (m | (m << 1)) & 0x55555555u;
}

// The taps of one block of 16 outputs, offsets from the block's first output: at stride 1 those reading all
// lanes (one plain load); at stride 2 the pairs of taps reading neighbouring elements on the same lanes
// (window columns kx, kx+1 at dilation 1), which share their two loads; and the rest, with their lanes.
struct MaxTapBlock {
  static constexpr int kMax = 32;
  int full = 0, pairs = 0, partial = 0;
  int64_t full_offset[kMax];
  int64_t pair_offset[kMax];
  __mmask16 pair_lanes[kMax];
  int64_t partial_offset[kMax];
  __mmask16 partial_lanes[kMax];

  void sort_out(const PoolTap* taps, int64_t count, int64_t step, int64_t j0, int64_t len, int64_t period) {
    full = pairs = partial = 0;
    for (int64_t t = 0; t < count; ++t) {
      const __mmask16 m = pool_tap_lanes(taps[t], j0, len, period);
      if (m == 0) continue;
      if (m == 0xffff && step == 1) {
        full_offset[full++] = taps[t].offset;
        continue;
      }
      partial_offset[partial] = taps[t].offset;
      partial_lanes[partial++] = m;
    }
    if (step != 2) return;
    int kept = 0;
    for (int i = 0; i < partial; ++i) {
      if (partial_lanes[i] == 0) continue;  // taken by an earlier pair
      int mate = -1;
      for (int j = i + 1; j < partial && mate < 0; ++j)
        if (partial_lanes[j] == partial_lanes[i] && (partial_offset[j] == partial_offset[i] + 1 ||
                                                     partial_offset[j] == partial_offset[i] - 1))
          mate = j;
      if (mate < 0) {
        partial_offset[kept] = partial_offset[i];
        partial_lanes[kept++] = partial_lanes[i];
        continue;
      }
      pair_offset[pairs] = std::min(partial_offset[i], partial_offset[mate]);
      pair_lanes[pairs++] = partial_lanes[i];
      partial_lanes[mate] = 0;
    }
    partial = kept;
  }
};

// One block of 16 outputs for kRows rows (rows src_stride / dst_stride apart). kStep 1: loads; 2: two loads
// and permutes to the even (and odd) lanes; 0: any other step, gathers. Lanes a tap does not apply to are not
// read and keep the accumulator. The rows' max chains are independent and overlap their latencies.
template <int kStep, int kRows>
inline void max_taps_rows(const float* s, int64_t src_stride, int64_t step, const MaxTapBlock& b, float* d,
                          int64_t dst_stride, __mmask16 store, bool first) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  __m512 acc[kRows];
  for (int i = 0; i < kRows; ++i)
    acc[i] = first ? _mm512_set1_ps(kLowestFloat) : _mm512_maskz_loadu_ps(store, d + i * dst_stride);
  for (int t = 0; t < b.full; ++t) {
    const float* p = s + b.full_offset[t];
    for (int i = 0; i < kRows; ++i) acc[i] = max_keep_nan(acc[i], _mm512_loadu_ps(p + i * src_stride));
  }
  if (kStep == 2) {
    for (int t = 0; t < b.pairs; ++t) {
      const float* p = s + b.pair_offset[t];
      const __mmask16 m = b.pair_lanes[t];
      const uint32_t sm = spread_even(m) * 3u;  // both lanes of each pair
      for (int i = 0; i < kRows; ++i) {
        const __m512 lo = _mm512_maskz_loadu_ps(__mmask16(sm), p + i * src_stride);
        const __m512 hi = _mm512_maskz_loadu_ps(__mmask16(sm >> 16), p + i * src_stride + kVec);
        const __m512 v = max_keep_nan(_mm512_permutex2var_ps(lo, even, hi), _mm512_permutex2var_ps(lo, odd, hi));
        acc[i] = m == 0xffff ? max_keep_nan(acc[i], v) : max_keep_nan(acc[i], m, v);
      }
    }
  }
  for (int t = 0; t < b.partial; ++t) {
    const float* p = s + b.partial_offset[t];
    const __mmask16 m = b.partial_lanes[t];
    for (int i = 0; i < kRows; ++i) {
      const float* q = p + i * src_stride;
      __m512 v;
      if (kStep == 1) {
        v = _mm512_maskz_loadu_ps(m, q);
      } else if (kStep == 2) {
        const uint32_t sm = spread_even(m);
        v = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(__mmask16(sm), q), even,
                                   _mm512_maskz_loadu_ps(__mmask16(sm >> 16), q + kVec));
      } else {
        const __m512i strided = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15), _mm512_set1_epi32(static_cast<int>(step)));
        v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, strided, q, 4);
      }
      acc[i] = max_keep_nan(acc[i], m, v);
    }
  }
  for (int i = 0; i < kRows; ++i) _mm512_mask_storeu_ps(d + i * dst_stride, store, acc[i]);
}

// A panel of blocks over all rows: rows outer in fours, blocks inner, so each row's reads stay in cache from
// one block to the next (the rows are often whole planes apart).
template <int kStep>
void max_taps_panel(const float* src, int64_t src_stride, int64_t step, const MaxTapBlock* blocks, int count,
                    int64_t n, int64_t rows, float* dst, int64_t dst_stride, bool first) {
  int64_t r = 0;
  for (; r + 4 <= rows; r += 4)
    for (int i = 0; i < count; ++i)
      max_taps_rows<kStep, 4>(src + r * src_stride + i * kVec * step, src_stride, step, blocks[i],
                              dst + r * dst_stride + i * kVec, dst_stride, tail_mask(n - i * kVec), first);
  for (; r < rows; ++r)
    for (int i = 0; i < count; ++i)
      max_taps_rows<kStep, 1>(src + r * src_stride + i * kVec * step, src_stride, step, blocks[i],
                              dst + r * dst_stride + i * kVec, dst_stride, tail_mask(n - i * kVec), first);
}

// K taps on consecutive image rows (offsets o0 + t*period, every output of every row): output image row q is
// the max of input image rows q .. q+K-1. A strip of 16 columns slides down the rows with the last rows and
// the max of neighbouring pairs in registers, so each input row is loaded once instead of K times.
template <int K>
void max_taps_slide(const float* src, int64_t src_stride, int64_t o0, int64_t period, int64_t count, int64_t rows,
                    float* dst, int64_t dst_stride) {
  const __m512 lowest = _mm512_set1_ps(kLowestFloat);
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * src_stride + o0;
    float* d = dst + r * dst_stride;
    for (int64_t c0 = 0; c0 < period; c0 += kVec) {
      const __mmask16 m = tail_mask(period - c0);
      auto row = [&](int64_t q) { return _mm512_maskz_loadu_ps(m, s + q * period + c0); };
      // v: the last K-1 rows; p[i] = max(v[i], v[i+1])
      __m512 v[K], p[K];
      for (int i = 0; i < K - 1; ++i) v[i] = row(i);
      for (int i = 0; i + 1 < K - 1; ++i) p[i] = max_keep_nan(v[i], v[i + 1]);
      for (int64_t q = 0; q < count; ++q) {
        v[K - 1] = row(q + K - 1);
        if (K > 1) p[K - 2] = max_keep_nan(v[K - 2], v[K - 1]);
        __m512 acc;
        if (K == 1) acc = v[0];
        else if (K == 2) acc = p[0];
        else if (K == 3) acc = max_keep_nan(p[0], v[2]);
        else if (K == 4) acc = max_keep_nan(p[0], p[2]);
        else acc = max_keep_nan(max_keep_nan(p[0], p[2]), v[4]);  // K == 5
        // at least lowest; a NaN stays (vmaxps returns its second operand when either is NaN)
        _mm512_mask_storeu_ps(d + q * period + c0, m, _mm512_max_ps(lowest, acc));
        for (int i = 0; i + 1 < K; ++i) v[i] = v[i + 1];
        for (int i = 0; i + 1 < K - 1; ++i) p[i] = p[i + 1];
      }
    }
  }
}

// Panels of up to 8 blocks of 16 outputs; each block's taps are sorted out once for all rows. Taps on K <= 5
// consecutive image rows covering all of them (a separable pool's column pass over whole rows) slide instead.
void max_taps(const float* src, int64_t src_stride, int64_t step, const PoolTap* taps, int64_t tap_count,
              int64_t period, int64_t rows, int64_t n, float* dst, int64_t dst_stride) {
  if (step == 1 && tap_count >= 2 && tap_count <= 5 && period < n && n % period == 0) {
    bool rows_of_taps = true;
    for (int64_t t = 0; t < tap_count; ++t)
      rows_of_taps = rows_of_taps && taps[t].offset == taps[0].offset + t * period && taps[t].begin <= 0 &&
                     taps[t].end >= period;
    if (rows_of_taps) {
      const int64_t count = n / period;
      if (tap_count == 2) max_taps_slide<2>(src, src_stride, taps[0].offset, period, count, rows, dst, dst_stride);
      else if (tap_count == 3) max_taps_slide<3>(src, src_stride, taps[0].offset, period, count, rows, dst, dst_stride);
      else if (tap_count == 4) max_taps_slide<4>(src, src_stride, taps[0].offset, period, count, rows, dst, dst_stride);
      else max_taps_slide<5>(src, src_stride, taps[0].offset, period, count, rows, dst, dst_stride);
      return;
    }
  }
  constexpr int kPanel = 8;
  MaxTapBlock blocks[kPanel];
  for (int64_t p0 = 0; p0 < n; p0 += kPanel * kVec) {
    const int64_t panel_n = std::min<int64_t>(n - p0, kPanel * kVec);
    const int count = static_cast<int>((panel_n + kVec - 1) / kVec);
    int64_t t0 = 0;
    do {  // taps in chunks of MaxTapBlock::kMax; later chunks continue from dst
      const int64_t t1 = std::min<int64_t>(tap_count, t0 + MaxTapBlock::kMax);
      for (int i = 0; i < count; ++i) {
        const int64_t j0 = p0 + i * kVec;
        blocks[i].sort_out(taps + t0, t1 - t0, step, j0, std::min<int64_t>(n - j0, kVec), period);
      }
      const float* s = src + p0 * step;
      float* d = dst + p0;
      if (step == 1) max_taps_panel<1>(s, src_stride, step, blocks, count, panel_n, rows, d, dst_stride, t0 == 0);
      else if (step == 2) max_taps_panel<2>(s, src_stride, step, blocks, count, panel_n, rows, d, dst_stride, t0 == 0);
      else max_taps_panel<0>(s, src_stride, step, blocks, count, panel_n, rows, d, dst_stride, t0 == 0);
      t0 = t1;
    } while (t0 < tap_count);
  }
}

// 16 pixels at a time: the max over channels (NaN kept), exp(v - max) stored in place and summed, then divided.
void softmax_run(float* y, int64_t plane, int64_t channels, int64_t n) {
  for (int64_t j = 0; j < n; j += kVec) {
    const __mmask16 t = tail_mask(n - j);
    float* p = y + j;
    __m512 top = _mm512_maskz_loadu_ps(t, p);
    for (int64_t c = 1; c < channels; ++c) top = max_keep_nan(top, _mm512_maskz_loadu_ps(t, p + c * plane));
    __m512 sum = _mm512_setzero_ps();
    for (int64_t c = 0; c < channels; ++c) {
      const __m512 e = exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(t, p + c * plane), top));
      _mm512_mask_storeu_ps(p + c * plane, t, e);
      sum = _mm512_add_ps(sum, e);
    }
    for (int64_t c = 0; c < channels; ++c)
      _mm512_mask_storeu_ps(p + c * plane, t, _mm512_div_ps(_mm512_maskz_loadu_ps(t, p + c * plane), sum));
  }
}

void gate_column_sums(const float* x, const float* ref, const uint8_t* marks, int64_t n, float* sums) {
  for (int64_t j = 0; j < n; j += kVec) {
    const __mmask16 t = tail_mask(n - j);
    __mmask16 lanes = t;
    if (marks) {  // unmarked lanes add nothing (a NaN there must not count either)
      const __m128i m8 = _mm_maskz_loadu_epi8(t, marks + j);
      lanes = _mm_test_epi8_mask(m8, m8);
    }
    const __m512 d = _mm512_maskz_sub_ps(lanes, _mm512_maskz_loadu_ps(t, x + j), _mm512_maskz_loadu_ps(t, ref + j));
    _mm512_mask_storeu_ps(sums + j, t, _mm512_add_ps(_mm512_maskz_loadu_ps(t, sums + j), d));
  }
}

// One line of 16 channels (the blocked layout's b on AVX-512), for common/blocked_lines.h.
struct Lines {
  using V = __m512;
  static constexpr int kLanes = kVec;
  static V load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, V v) { _mm512_storeu_ps(p, v); }
  static V set1(float v) { return _mm512_set1_ps(v); }
  static V zero() { return _mm512_setzero_ps(); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static bool any_changed(V x, V r, V tau) {
    return changed_mask(x, r, tau, _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff))) != 0;
  }
  static V activate(V v, const ActivationParams& act) { return deltaonnx::activate(v, act); }
  using M = __mmask16;  // DeltaPool's "no NaN yet" lanes (blocked_pool_lines.h)
  static V max(V a, V b) { return _mm512_max_ps(a, b); }
  static M ordered_lanes() { return M(0xffff); }
  static M keep_ordered(M m, V a, V b) { return _mm512_mask_cmp_ps_mask(m, a, b, _CMP_ORD_Q); }
  static V nan_unless_ordered(V v, M m) {
    return _mm512_mask_mov_ps(_mm512_set1_ps(std::numeric_limits<float>::quiet_NaN()), m, v);
  }
};

}  // namespace

const KernelTable& avx512_kernel_table() {
  static const KernelTable table{"avx512", kMR, kNR, kVec, detect_changes, update_reference, detect_update_exact, detect_update_pixels, gemm_tile, gemm_tile_store, gemm_row, pack_pieces, scatter_pieces, store_flagged, deinterleave2, bias_activate, unblock_activate, block_planes, depthwise_run, max_taps, softmax_run, gate_column_sums, blocked_detect_update_lines<Lines>,
      blocked_pixel_gemm_lines<Lines, 24, 4>,  // 24 of the 32 zmm registers accumulate: 6x4, 12x2 or 12x1
      blocked_depthwise_pixels_lines<Lines>, blocked_max_pool_lines<Lines>};
  return table;
}

}  // namespace deltaonnx

// AVX-512 (F/BW/VL/DQ) kernels. Compiled with -mavx512* for this file only; selected at run time.
#include <immintrin.h>

#include <cmath>
#include <cstring>

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

void pack_pieces(int64_t depth, const float* base, const int64_t* tap_offsets, const PackPiece* pieces,
                 int64_t count, int64_t ld, float* dst) {
  for (int64_t k = 0; k < depth; ++k, dst += ld) {
    const float* tap = base + tap_offsets[k];
    for (int64_t i = 0; i < count; ++i) {
      const float* src = tap + pieces[i].src;
      float* out = dst + pieces[i].dst;
      const int64_t len = pieces[i].len;
      for (int64_t j = 0; j < len; j += kVec) {
        const __mmask16 m = tail_mask(len - j);
        _mm512_mask_storeu_ps(out + j, m, _mm512_maskz_loadu_ps(m, src + j));
      }
    }
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
  for (; v < n; ++v) {
    even[v] = src[2 * v];
    odd[v] = src[2 * v + 1];
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
      __m512 v = _mm512_fmadd_ps(_mm512_set1_ps(act.a), x, _mm512_set1_ps(act.b));
      return _mm512_min_ps(one, _mm512_max_ps(zero, v));
    }
    case Activation::kHardSwish: {
      __m512 v = _mm512_fmadd_ps(x, _mm512_set1_ps(1.f / 6.f), _mm512_set1_ps(0.5f));
      return _mm512_mul_ps(x, _mm512_min_ps(one, _mm512_max_ps(zero, v)));
    }
    case Activation::kTanh: break;  // handled by the scalar loop
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

// The GEMM micro tile: 8 output channels x NV vectors of pixels, accumulators in named registers (arrays of
// vectors end up on the stack), the epilogue (bias, activation) applied in registers, rows stored in place.
#define DELTA_ROW_DECL(r) __m512 c##r##0 = _mm512_setzero_ps(), c##r##1 = c##r##0, c##r##2 = c##r##0;
#define DELTA_ROW_FMA(r)                                    \
  {                                                         \
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

template <int NV>
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
  if (n > 2 * kVec) gemm_tile_store_nv<3>(depth, a_packed, b_rows, n, out_rows, rows, bias, acts);
  else if (n > kVec) gemm_tile_store_nv<2>(depth, a_packed, b_rows, n, out_rows, rows, bias, acts);
  else gemm_tile_store_nv<1>(depth, a_packed, b_rows, n, out_rows, rows, bias, acts);
}

}  // namespace

const KernelTable& avx512_kernel_table() {
  static const KernelTable table{"avx512", kMR, kNR, kVec, detect_changes, update_reference, detect_update_exact, gemm_tile, gemm_tile_store, gemm_row, pack_pieces, deinterleave2, bias_activate};
  return table;
}

}  // namespace deltaonnx

// AVX2 + FMA kernels. Compiled with -mavx2 -mfma for this file only; selected at run time.
#include <immintrin.h>

#include <array>
#include <cstring>

#include "common/kernel_table.h"
#include "common/tile_epilogue.h"

namespace deltaonnx {
namespace {

constexpr int kMR = 6;
constexpr int kVec = 8;
constexpr int kNV = 2;
constexpr int kNR = kVec * kNV;

// 8 change bits -> 8 bytes of 0/1.
constexpr std::array<uint64_t, 256> make_expand() {
  std::array<uint64_t, 256> t{};
  for (int m = 0; m < 256; ++m)
    for (int b = 0; b < 8; ++b)
      if (m & (1 << b)) t[m] |= uint64_t{1} << (8 * b);
  return t;
}
constexpr std::array<uint64_t, 256> kExpand = make_expand();

inline __m256i tail_mask(int64_t n) {
  const __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n < kVec ? n : kVec)), idx);
}

void detect_changes(const float* x, const float* ref, int64_t channels, int64_t plane, int64_t begin, int64_t end,
                    float tau, uint8_t* flags) {
  const __m256 vtau = _mm256_set1_ps(tau);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t c = 0; c < channels; ++c) {
    const float* xc = x + c * plane;
    const float* rc = ref + c * plane;
    int64_t p = begin;
    for (; p + kVec <= end; p += kVec) {
      __m256 d = _mm256_and_ps(_mm256_sub_ps(_mm256_loadu_ps(xc + p), _mm256_loadu_ps(rc + p)), abs_mask);
      int m = _mm256_movemask_ps(_mm256_cmp_ps(d, vtau, _CMP_NLE_UQ));
      uint64_t f;
      std::memcpy(&f, flags + p, 8);
      f |= kExpand[m];
      std::memcpy(flags + p, &f, 8);
    }
    for (; p < end; ++p) {
      float d = xc[p] - rc[p];
      flags[p] |= static_cast<uint8_t>(!((d < 0 ? -d : d) <= tau));
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
    int64_t p = begin;
    for (; p + kVec <= end; p += kVec) {
      uint64_t f;
      std::memcpy(&f, flags + p, 8);
      if (in_place && f == 0) continue;
      __m256i m = _mm256_cmpgt_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(f))),
                                     _mm256_setzero_si256());
      _mm256_storeu_ps(oc + p, _mm256_blendv_ps(_mm256_loadu_ps(rc + p), _mm256_loadu_ps(xc + p), _mm256_castsi256_ps(m)));
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
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 zero = _mm256_setzero_ps();
  for (int64_t c = 0; c < channels; ++c) {
    const float* xc = x + c * plane;
    const float* rc = ref_in + c * plane;
    float* oc = ref_out + c * plane;
    int64_t p = begin;
    for (; p + kVec <= end; p += kVec) {
      const __m256 xv = _mm256_loadu_ps(xc + p), rv = _mm256_loadu_ps(rc + p);
      const __m256 ch = _mm256_cmp_ps(_mm256_and_ps(_mm256_sub_ps(xv, rv), abs_mask), zero, _CMP_NLE_UQ);
      const int m = _mm256_movemask_ps(ch);
      if (m) {
        uint64_t f;
        std::memcpy(&f, flags + p, 8);
        f |= kExpand[m];
        std::memcpy(flags + p, &f, 8);
      }
      // vmaskmovps stores are slow on several CPUs: store the blend (unchanged lanes rewrite their value).
      if (m || !in_place) _mm256_storeu_ps(oc + p, _mm256_blendv_ps(rv, xv, ch));
    }
    for (; p < end; ++p) {
      const float d = xc[p] - rc[p];
      const bool changed = !((d < 0 ? -d : d) <= 0.f);
      flags[p] |= static_cast<uint8_t>(changed);
      if (changed) oc[p] = xc[p];
      else if (!in_place) oc[p] = rc[p];
    }
  }
}

void detect_update_pixels(const float* x, const float* ref_in, float* ref_out, int64_t channels, int64_t plane,
                          int64_t begin, int64_t end, float tau, uint8_t* flags) {
  const bool in_place = ref_in == ref_out;
  const __m256 vtau = _mm256_set1_ps(tau);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  for (int64_t p = begin; p < end; p += kVec) {
    const int64_t n = end - p < kVec ? end - p : kVec;
    const __m256i t = tail_mask(n);
    __m256 any = _mm256_setzero_ps();
    for (int64_t c = 0; c < channels; ++c) {
      const __m256 d = _mm256_sub_ps(_mm256_maskload_ps(x + c * plane + p, t), _mm256_maskload_ps(ref_in + c * plane + p, t));
      any = _mm256_or_ps(any, _mm256_cmp_ps(_mm256_and_ps(d, abs_mask), vtau, _CMP_NLE_UQ));
    }
    any = _mm256_and_ps(any, _mm256_castsi256_ps(t));
    const int bits = _mm256_movemask_ps(any);
    for (int64_t i = 0; i < n; ++i) flags[p + i] |= static_cast<uint8_t>((bits >> i) & 1);
    if (bits == 0 && in_place) continue;
    for (int64_t c = 0; c < channels; ++c) {
      const int64_t o = c * plane + p;
      if (in_place) {
        _mm256_maskstore_ps(ref_out + o, _mm256_castps_si256(any), _mm256_maskload_ps(x + o, t));
      } else {
        const __m256 v = _mm256_blendv_ps(_mm256_maskload_ps(ref_in + o, t), _mm256_maskload_ps(x + o, t), any);
        _mm256_maskstore_ps(ref_out + o, t, v);
      }
    }
  }
}

// Named accumulators (arrays of vectors end up on the stack): 6 rows x NV vectors of 8.
#define DELTA_ROW_DECL(r) __m256 c##r##0 = _mm256_setzero_ps(), c##r##1 = c##r##0;
#define DELTA_ROW_FMA(r)                                    \
  {                                                         \
    const __m256 ar = _mm256_broadcast_ss(a + r);           \
    c##r##0 = _mm256_fmadd_ps(ar, b0, c##r##0);             \
    if (NV > 1) c##r##1 = _mm256_fmadd_ps(ar, b1, c##r##1); \
  }
#define DELTA_ROW_STORE(r)                                     \
  {                                                            \
    _mm256_storeu_ps(c + r * kNR, c##r##0);                    \
    if (NV > 1) _mm256_storeu_ps(c + r * kNR + kVec, c##r##1); \
  }

template <int NV>
void gemm_tile_nv(int64_t depth, const float* a_packed, const float* const* b_rows, int64_t n, float* c) {
  DELTA_ROW_DECL(0) DELTA_ROW_DECL(1) DELTA_ROW_DECL(2) DELTA_ROW_DECL(3) DELTA_ROW_DECL(4) DELTA_ROW_DECL(5)
  const __m256i last = tail_mask(n - (NV - 1) * kVec);
  const float* a = a_packed;
  for (int64_t k = 0; k < depth; ++k, a += kMR) {
    const float* b = b_rows[k];
    __m256 b0, b1 = _mm256_setzero_ps();
    if (NV == 1) {
      b0 = _mm256_maskload_ps(b, last);
    } else {
      b0 = _mm256_loadu_ps(b);
      b1 = _mm256_maskload_ps(b + kVec, last);
    }
    DELTA_ROW_FMA(0) DELTA_ROW_FMA(1) DELTA_ROW_FMA(2) DELTA_ROW_FMA(3) DELTA_ROW_FMA(4) DELTA_ROW_FMA(5)
  }
  DELTA_ROW_STORE(0) DELTA_ROW_STORE(1) DELTA_ROW_STORE(2) DELTA_ROW_STORE(3) DELTA_ROW_STORE(4) DELTA_ROW_STORE(5)
}
#undef DELTA_ROW_DECL
#undef DELTA_ROW_FMA
#undef DELTA_ROW_STORE

void gemm_tile(int64_t depth, const float* a_packed, const float* const* b_rows, int64_t n, float* c) {
  if (n > kVec) gemm_tile_nv<2>(depth, a_packed, b_rows, n, c);
  else gemm_tile_nv<1>(depth, a_packed, b_rows, n, c);
}

void gemm_row(int64_t depth, const float* w, const float* const* b_rows, int64_t n, float* out) {
  const __m256i m0 = tail_mask(n), m1 = tail_mask(n > kVec ? n - kVec : 0);
  const bool second = n > kVec;
  __m256 a0 = _mm256_setzero_ps(), a1 = a0;
  for (int64_t k = 0; k < depth; ++k) {
    const __m256 wk = _mm256_broadcast_ss(w + k);
    const float* b = b_rows[k];
    a0 = _mm256_fmadd_ps(wk, _mm256_maskload_ps(b, m0), a0);
    if (second) a1 = _mm256_fmadd_ps(wk, _mm256_maskload_ps(b + kVec, m1), a1);
  }
  _mm256_maskstore_ps(out, m0, a0);
  if (second) _mm256_maskstore_ps(out + kVec, m1, a1);
}

void pack_pieces(int64_t depth, const float* base, const int64_t* tap_offsets, const PackPiece* pieces,
                 int64_t count, int64_t ld, float* dst) {
  for (int64_t k = 0; k < depth; ++k, dst += ld) {
    const float* tap = base + tap_offsets[k];
    for (int64_t i = 0; i < count; ++i) {
      const float* src = tap + pieces[i].src;
      float* out = dst + pieces[i].dst;
      const int64_t len = pieces[i].len;
      int64_t j = 0;
      for (; j + kVec <= len; j += kVec) _mm256_storeu_ps(out + j, _mm256_loadu_ps(src + j));
      if (j < len) {
        const __m256i m = tail_mask(len - j);
        _mm256_maskstore_ps(out + j, m, _mm256_maskload_ps(src + j, m));
      }
    }
  }
}

void deinterleave2(const float* src, int64_t n, float* even, float* odd) {
  int64_t v = 0;
  for (; v + kVec <= n; v += kVec) {
    const __m256 a = _mm256_loadu_ps(src + 2 * v), b = _mm256_loadu_ps(src + 2 * v + kVec);
    // shuffle within lanes, then fix the lane order
    const __m256 e = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0)), o = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
    _mm256_storeu_ps(even + v, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0))));
    _mm256_storeu_ps(odd + v, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0))));
  }
  for (; v < n; ++v) {
    even[v] = src[2 * v];
    odd[v] = src[2 * v + 1];
  }
}

inline __m256 exp_ps(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(88.3762626647949f), x);
  x = _mm256_max_ps(_mm256_set1_ps(-88.3762626647949f), x);
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500E-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  // 2^n in two steps so n = 128 (x near 88.4) does not overflow the exponent field.
  __m256i ni = _mm256_cvtps_epi32(n);
  __m256i half = _mm256_srai_epi32(ni, 1);
  __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, _mm256_set1_epi32(127)), 23));
  __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, half), _mm256_set1_epi32(127)), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, s1), s2);
}

inline __m256 sigmoid_ps(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), x))));
}

inline __m256 activate(__m256 x, const ActivationParams& act) {
  const __m256 zero = _mm256_setzero_ps();
  const __m256 one = _mm256_set1_ps(1.f);
  switch (act.kind) {
    case Activation::kNone: return x;
    case Activation::kRelu: return _mm256_max_ps(zero, x);
    case Activation::kLeakyRelu:
    case Activation::kPRelu: {
      __m256 neg = _mm256_cmp_ps(x, zero, _CMP_LT_OQ);
      return _mm256_blendv_ps(x, _mm256_mul_ps(x, _mm256_set1_ps(act.a)), neg);
    }
    case Activation::kClip:
      return _mm256_min_ps(_mm256_set1_ps(act.b), _mm256_max_ps(_mm256_set1_ps(act.a), x));
    case Activation::kSigmoid: return sigmoid_ps(x);
    case Activation::kSiLU: return _mm256_mul_ps(x, sigmoid_ps(x));
    case Activation::kHardSigmoid: {
      __m256 v = _mm256_fmadd_ps(_mm256_set1_ps(act.a), x, _mm256_set1_ps(act.b));
      return _mm256_min_ps(one, _mm256_max_ps(zero, v));
    }
    case Activation::kHardSwish: {
      __m256 v = _mm256_fmadd_ps(x, _mm256_set1_ps(1.f / 6.f), _mm256_set1_ps(0.5f));
      return _mm256_mul_ps(x, _mm256_min_ps(one, _mm256_max_ps(zero, v)));
    }
    case Activation::kTanh: break;
  }
  return x;
}

void bias_activate(float* v, int64_t n, float bias, const ActivationParams& act) {
  int64_t i = 0;
  if (act.kind != Activation::kTanh) {
    const __m256 vb = _mm256_set1_ps(bias);
    for (; i + kVec <= n; i += kVec) _mm256_storeu_ps(v + i, activate(_mm256_add_ps(_mm256_loadu_ps(v + i), vb), act));
  }
  for (; i < n; ++i) v[i] = apply_activation(act, v[i] + bias);
}

void gemm_tile_store(int64_t depth, const float* a_packed, const float* const* b_rows, int64_t n,
                     float* const* out_rows, int64_t rows, const float* bias, const ActivationParams* acts) {
  tile_then_epilogue<kMR, kNR>(gemm_tile, bias_activate, depth, a_packed, b_rows, n, out_rows, rows, bias, acts);
}

// Depthwise: CH channels x NV vectors of outputs, one accumulator each, every tap one load and one FMA per
// accumulator, the epilogue in registers. Channel ch reads taps[t] + in + ch*in_stride + j (the last vector
// masked by `last`) and writes out + ch*out_stride. Several channels share a short run: the vectors of one
// channel alone would wait on their FMA chains.
template <int CH, int NV>
void depthwise_tile(int64_t count, const float* const* taps, int64_t in, int64_t in_stride, const float* w,
                    int64_t w_stride, const float* bias, const ActivationParams* acts, __m256i last, float* out,
                    int64_t out_stride) {
  __m256 acc[CH * NV];
#pragma GCC unroll 8
  for (int a = 0; a < CH * NV; ++a) acc[a] = _mm256_setzero_ps();
  for (int64_t t = 0; t < count; ++t) {
    const float* p = taps[t] + in;
#pragma GCC unroll 8
    for (int ch = 0; ch < CH; ++ch) {
      const __m256 wt = _mm256_broadcast_ss(w + ch * w_stride + t);
#pragma GCC unroll 8
      for (int i = 0; i < NV; ++i) {
        const float* q = p + ch * in_stride + i * kVec;
        const __m256 x = i == NV - 1 ? _mm256_maskload_ps(q, last) : _mm256_loadu_ps(q);
        acc[ch * NV + i] = _mm256_fmadd_ps(wt, x, acc[ch * NV + i]);
      }
    }
  }
#pragma GCC unroll 8
  for (int ch = 0; ch < CH; ++ch) {
    const __m256 vb = _mm256_set1_ps(bias[ch]);
    float* o = out + ch * out_stride;
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) {
      const __m256 v = activate(_mm256_add_ps(acc[ch * NV + i], vb), acts[ch]);  // Tanh: the sum (see below)
      if (i == NV - 1) _mm256_maskstore_ps(o + i * kVec, last, v);
      else _mm256_storeu_ps(o + i * kVec, v);
    }
  }
}

template <int CH>
void depthwise_tile_nv(int64_t nv, int64_t count, const float* const* taps, int64_t in, int64_t in_stride,
                       const float* w, int64_t w_stride, const float* bias, const ActivationParams* acts,
                       __m256i last, float* out, int64_t out_stride) {
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
      const __m256i last = tail_mask(len - (nv - 1) * kVec);
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

// NaN-keeping max: vmaxps returns its second operand when either is NaN, so the OR of both operand orders is
// NaN when either side is (and the max otherwise, up to the sign of a zero).
inline __m256 max_keep_nan(__m256 a, __m256 b) { return _mm256_or_ps(_mm256_max_ps(a, b), _mm256_max_ps(b, a)); }

// The lanes [0, len) of the block of outputs starting at j0 that tap t applies to (see KernelTable::max_taps).
inline uint32_t pool_tap_lanes(const PoolTap& t, int64_t j0, int64_t len, int64_t period) {
  uint32_t m = 0;
  for (int64_t q = j0 / period * period; q < j0 + len; q += period) {
    const int64_t b = q + (t.begin > 0 ? t.begin : 0) > j0 ? q + (t.begin > 0 ? t.begin : 0) : j0;
    const int64_t row_end = t.end < period ? t.end : period;
    const int64_t e = q + row_end < j0 + len ? q + row_end : j0 + len;
    if (e > b) m |= ((1u << (e - j0)) - 1u) & ~((1u << (b - j0)) - 1u);
  }
  return m;
}

// An 8-bit lane mask as a vector mask.
inline __m256i lane_vector(uint32_t m) {
  const __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  return _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(m)), bits), bits);
}

// Bit i of an 8-bit mask to bit 2i: the source lanes of a stride-2 load.
inline uint32_t spread_even(uint32_t m) {
  m = (m | (m << 4)) & 0x0f0fu;
  m = (m | (m << 2)) & 0x3333u;
  return (m | (m << 1)) & 0x5555u;
}

// The taps of one block of 8 outputs: those reading all 8 lanes with one plain load (stride 1), and the rest
// with their lanes (for stride 2, the lanes of the two source vectors).
struct MaxTapBlock {
  static constexpr int kMax = 32;
  int full = 0, partial = 0;
  int64_t full_offset[kMax];
  int64_t partial_offset[kMax];
  __m256i partial_lanes[kMax], source_lo[kMax], source_hi[kMax];
};

// The rows of one block for max_taps, two at a time (independent max chains overlap their latencies).
// kStep 1: loads; 2: two loads and a shuffle to the even lanes; 0: any other step, gathers. Lanes a tap does
// not apply to are not read and keep the accumulator.
template <int kStep>
void max_taps_block(const float* src, int64_t src_stride, int64_t step, const MaxTapBlock& b, int64_t rows,
                    float* dst, int64_t dst_stride, int64_t len, bool first) {
  const __m256 lowest = _mm256_set1_ps(kLowestFloat);
  const __m256i strided = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(static_cast<int>(step)));
  const __m256i store = tail_mask(len);
  auto load = [&](const float* p, int i) {
    if (kStep == 1) return _mm256_maskload_ps(p, b.partial_lanes[i]);
    if (kStep == 2) {
      const __m256 x0 = _mm256_maskload_ps(p, b.source_lo[i]), x1 = _mm256_maskload_ps(p + kVec, b.source_hi[i]);
      const __m256 e = _mm256_shuffle_ps(x0, x1, _MM_SHUFFLE(2, 0, 2, 0));
      return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
    }
    return _mm256_mask_i32gather_ps(_mm256_setzero_ps(), p, strided, _mm256_castsi256_ps(b.partial_lanes[i]), 4);
  };
  auto partial_max = [&](__m256 a, int i, __m256 v) {
    return _mm256_blendv_ps(a, max_keep_nan(a, v), _mm256_castsi256_ps(b.partial_lanes[i]));
  };
  auto start = [&](const float* d) { return first ? lowest : _mm256_maskload_ps(d, store); };
  auto finish = [&](float* d, __m256 a) {
    if (len == kVec) _mm256_storeu_ps(d, a);
    else _mm256_maskstore_ps(d, store, a);
  };
  int64_t r = 0;
  for (; r + 2 <= rows; r += 2) {
    const float* s0 = src + r * src_stride;
    const float* s1 = s0 + src_stride;
    float* d = dst + r * dst_stride;
    __m256 a0 = start(d), a1 = start(d + dst_stride);
    for (int i = 0; i < b.full; ++i) {
      const int64_t o = b.full_offset[i];
      a0 = max_keep_nan(a0, _mm256_loadu_ps(s0 + o));
      a1 = max_keep_nan(a1, _mm256_loadu_ps(s1 + o));
    }
    for (int i = 0; i < b.partial; ++i) {
      const int64_t o = b.partial_offset[i];
      a0 = partial_max(a0, i, load(s0 + o, i));
      a1 = partial_max(a1, i, load(s1 + o, i));
    }
    finish(d, a0);
    finish(d + dst_stride, a1);
  }
  for (; r < rows; ++r) {
    const float* s = src + r * src_stride;
    float* d = dst + r * dst_stride;
    __m256 a = start(d);
    for (int i = 0; i < b.full; ++i) a = max_keep_nan(a, _mm256_loadu_ps(s + b.full_offset[i]));
    for (int i = 0; i < b.partial; ++i) a = partial_max(a, i, load(s + b.partial_offset[i], i));
    finish(d, a);
  }
}

// Blocks of 8 outputs outer, rows inner: a block's taps are sorted out once for all rows.
void max_taps(const float* src, int64_t src_stride, int64_t step, const PoolTap* taps, int64_t tap_count,
              int64_t period, int64_t rows, int64_t n, float* dst, int64_t dst_stride) {
  MaxTapBlock b;
  for (int64_t j0 = 0; j0 < n; j0 += kVec) {
    const int64_t len = n - j0 < kVec ? n - j0 : kVec;
    int64_t t0 = 0;
    do {  // taps in chunks of MaxTapBlock::kMax; later chunks continue from dst
      const int64_t t1 = tap_count - t0 < MaxTapBlock::kMax ? tap_count : t0 + MaxTapBlock::kMax;
      b.full = b.partial = 0;
      for (int64_t t = t0; t < t1; ++t) {
        const uint32_t m = pool_tap_lanes(taps[t], j0, len, period);
        if (m == 0) continue;
        const int64_t o = taps[t].offset + j0 * step;
        if (m == 0xff && step == 1) {
          b.full_offset[b.full++] = o;
        } else {
          const uint32_t s = spread_even(m);
          b.partial_offset[b.partial] = o;
          b.partial_lanes[b.partial] = lane_vector(m);
          b.source_lo[b.partial] = lane_vector(s & 0xff);
          b.source_hi[b.partial++] = lane_vector(s >> 8);
        }
      }
      if (step == 1) max_taps_block<1>(src, src_stride, step, b, rows, dst + j0, dst_stride, len, t0 == 0);
      else if (step == 2) max_taps_block<2>(src, src_stride, step, b, rows, dst + j0, dst_stride, len, t0 == 0);
      else max_taps_block<0>(src, src_stride, step, b, rows, dst + j0, dst_stride, len, t0 == 0);
      t0 = t1;
    } while (t0 < tap_count);
  }
}

}  // namespace

const KernelTable& avx2_kernel_table() {
  static const KernelTable table{"avx2", kMR, kNR, kVec, detect_changes, update_reference, detect_update_exact, detect_update_pixels, gemm_tile, gemm_tile_store, gemm_row, pack_pieces, deinterleave2, bias_activate, depthwise_run, max_taps};
  return table;
}

}  // namespace deltaonnx

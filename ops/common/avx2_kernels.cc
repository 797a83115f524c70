// AVX2 + FMA kernels. Compiled with -mavx2 -mfma for this file only; selected at run time.
#include <immintrin.h>

#include <array>
#include <cstring>
#include <limits>

#include "common/blocked_lines.h"
#include "common/blocked_pool_lines.h"
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

// dst[j] = src[j] for j < len: whole vectors, then one masked tail (short runs: no memcpy call).
inline void copy_run(const float* src, int64_t len, float* dst) {
  int64_t j = 0;
  for (; j + kVec <= len; j += kVec) _mm256_storeu_ps(dst + j, _mm256_loadu_ps(src + j));
  if (j < len) {
    const __m256i m = tail_mask(len - j);
    _mm256_maskstore_ps(dst + j, m, _mm256_maskload_ps(src + j, m));
  }
}

void pack_pieces(int64_t depth, const float* base, const int64_t* tap_offsets, const PackPiece* pieces,
                 int64_t count, int64_t ld, float* dst) {
  for (int64_t k = 0; k < depth; ++k, dst += ld) {
    const float* tap = base + tap_offsets[k];
    for (int64_t i = 0; i < count; ++i) {
      copy_run(tap + pieces[i].src, pieces[i].len, dst + pieces[i].dst);
    }
  }
}

void scatter_pieces(const float* vals, const PackPiece* pieces, const int64_t* out_offsets, int64_t count,
                    float* out) {
  for (int64_t i = 0; i < count; ++i) {
    copy_run(vals + pieces[i].dst, pieces[i].len, out + out_offsets[i]);
  }
}

void store_flagged(float* dst, const float* vals, const uint8_t* flags, int64_t n) {
  int64_t i = 0;
  for (; i + kVec <= n; i += kVec) {
    uint64_t bytes;
    std::memcpy(&bytes, flags + i, sizeof(bytes));
    if (bytes == 0) continue;
    // one 32-bit lane per flag byte: all ones where the flag is set
    const __m256i lanes = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(bytes)));
    const __m256i m = _mm256_xor_si256(_mm256_cmpeq_epi32(lanes, _mm256_setzero_si256()), _mm256_set1_epi32(-1));
    _mm256_maskstore_ps(dst + i, m, _mm256_maskload_ps(vals + i, m));
  }
  for (; i < n; ++i)
    if (flags[i]) dst[i] = vals[i];
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

// x * a rounded by itself (activation.h rounded_product): GCC would contract it with the add after it.
inline __m256 rounded_product(__m256 x, __m256 a) {
  __m256 p = _mm256_mul_ps(x, a);
  __asm__("" : "+x"(p));
  return p;
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
      __m256 v = _mm256_add_ps(rounded_product(x, _mm256_set1_ps(act.a)), _mm256_set1_ps(act.b));
      return _mm256_min_ps(one, _mm256_max_ps(zero, v));
    }
    case Activation::kHardSwish: {
      __m256 v = _mm256_add_ps(rounded_product(x, _mm256_set1_ps(1.f / 6.f)), _mm256_set1_ps(0.5f));
      return _mm256_mul_ps(x, _mm256_min_ps(one, _mm256_max_ps(zero, v)));
    }
    case Activation::kTanh: break;
    case Activation::kSoftmax: break;  // per pixel, never per element (ConvSpec::activation_for)
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

// r[i] = row i of an 8x8 tile -> col[i] = column i (the classic unpack / shuffle / permute sequence).
inline void transpose_8x8(const __m256 r[kVec], __m256 col[kVec]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  col[0] = _mm256_permute2f128_ps(s0, s4, 0x20);
  col[1] = _mm256_permute2f128_ps(s1, s5, 0x20);
  col[2] = _mm256_permute2f128_ps(s2, s6, 0x20);
  col[3] = _mm256_permute2f128_ps(s3, s7, 0x20);
  col[4] = _mm256_permute2f128_ps(s0, s4, 0x31);
  col[5] = _mm256_permute2f128_ps(s1, s5, 0x31);
  col[6] = _mm256_permute2f128_ps(s2, s6, 0x31);
  col[7] = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Blocks of a multiple of 8 channels, 8 at a time: 8 pixels' 8 channels loaded as rows, transposed in
// registers, activated, stored as 8 runs of one channel each. Tanh (no vector form here; MLAS fuses it into the
// conv anyway) and other blocks: the scalar kernel.
void unblock_activate(const float* blocked, int64_t block, int64_t channels, int64_t n, const ActivationParams* acts,
                      float* y, int64_t y_stride) {
  if (block % kVec != 0 || acts[0].kind == Activation::kTanh) {
    scalar_kernel_table().unblock_activate(blocked, block, channels, n, acts, y, y_stride);
    return;
  }
  bool plain = true;  // no activation on any channel (DeltaReorder): the transposed vectors are stored as they are
  for (int64_t c = 0; c < channels; ++c) plain = plain && acts[c].kind == Activation::kNone;
  for (int64_t c0 = 0; c0 < channels; c0 += kVec) {
    const int64_t count = channels - c0 < kVec ? channels - c0 : kVec;
    for (int64_t j = 0; j < n; j += kVec) {
      const int64_t pixels = n - j < kVec ? n - j : kVec;
      __m256 r[kVec], col[kVec];
      for (int64_t i = 0; i < kVec; ++i)
        r[i] = i < pixels ? _mm256_loadu_ps(blocked + (j + i) * block + c0) : _mm256_setzero_ps();
      transpose_8x8(r, col);
      if (plain && pixels == kVec && count == kVec) {
        for (int c = 0; c < kVec; ++c) _mm256_storeu_ps(y + (c0 + c) * y_stride + j, col[c]);
        continue;
      }
      const __m256i tail = tail_mask(pixels);
      for (int64_t c = 0; c < count; ++c) {
        float* dst = y + (c0 + c) * y_stride + j;
        const __m256 v = activate(col[c], acts[c0 + c]);
        if (pixels == kVec) _mm256_storeu_ps(dst, v);
        else _mm256_maskstore_ps(dst, tail, v);
      }
    }
  }
}

// Blocks of a multiple of 8, 8 channels at a time: 8 pixels of 8 planes loaded as rows, transposed, stored as
// 8-float pieces of 8 lines (the pad lanes' rows zero); other blocks: scalar.
void block_planes(const float* planes, int64_t plane_stride, int64_t block, int64_t channels, int64_t n,
                  float* lines) {
  if (block % kVec != 0) {
    scalar_kernel_table().block_planes(planes, plane_stride, block, channels, n, lines);
    return;
  }
  for (int64_t c0 = 0; c0 < block; c0 += kVec) {
    for (int64_t j = 0; j < n; j += kVec) {
      const int64_t pixels = n - j < kVec ? n - j : kVec;
      const __m256i tail = tail_mask(pixels);
      __m256 r[kVec], col[kVec];
      for (int64_t c = 0; c < kVec; ++c) {
        const float* src = planes + (c0 + c) * plane_stride + j;
        if (c0 + c >= channels) r[c] = _mm256_setzero_ps();
        else r[c] = pixels == kVec ? _mm256_loadu_ps(src) : _mm256_maskload_ps(src, tail);
      }
      transpose_8x8(r, col);
      for (int64_t i = 0; i < pixels; ++i) _mm256_storeu_ps(lines + (j + i) * block + c0, col[i]);
    }
  }
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
    const int64_t b = std::max(q + std::max<int64_t>(t.begin, 0), j0), e = std::min(q + std::min(t.end, period), j0 + len);
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

// The even and the odd elements of the 16 floats in lo, hi.
inline __m256 even_lanes(__m256 lo, __m256 hi) {
  const __m256 e = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(2, 0, 2, 0));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
}
inline __m256 odd_lanes(__m256 lo, __m256 hi) {
  const __m256 o = _mm256_shuffle_ps(lo, hi, _MM_SHUFFLE(3, 1, 3, 1));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
}

// The taps of one block of 8 outputs, offsets from the block's first output: at stride 1 those reading all
// lanes (one plain load); at stride 2 the pairs of taps reading neighbouring elements on the same lanes
// (window columns kx, kx+1 at dilation 1), which share their two loads; and the rest, with their output lanes.
struct MaxTapBlock {
  static constexpr int kMax = 32;
  int full = 0, pairs = 0, partial = 0;
  int64_t full_offset[kMax];
  int64_t pair_offset[kMax];
  int64_t partial_offset[kMax];
  uint32_t pair_bits[kMax], partial_bits[kMax];

  void sort_out(const PoolTap* taps, int64_t count, int64_t step, int64_t j0, int64_t len, int64_t period) {
    full = pairs = partial = 0;
    for (int64_t t = 0; t < count; ++t) {
      const uint32_t m = pool_tap_lanes(taps[t], j0, len, period);
      if (m == 0) continue;
      if (m == 0xff && step == 1) {
        full_offset[full++] = taps[t].offset;
        continue;
      }
      partial_offset[partial] = taps[t].offset;
      partial_bits[partial++] = m;
    }
    if (step != 2) return;
    int kept = 0;
    for (int i = 0; i < partial; ++i) {
      if (partial_bits[i] == 0) continue;  // taken by an earlier pair
      int mate = -1;
      for (int j = i + 1; j < partial && mate < 0; ++j)
        if (partial_bits[j] == partial_bits[i] && (partial_offset[j] == partial_offset[i] + 1 ||
                                                   partial_offset[j] == partial_offset[i] - 1))
          mate = j;
      if (mate < 0) {
        partial_offset[kept] = partial_offset[i];
        partial_bits[kept++] = partial_bits[i];
        continue;
      }
      pair_offset[pairs] = std::min(partial_offset[i], partial_offset[mate]);
      pair_bits[pairs++] = partial_bits[i];
      partial_bits[mate] = 0;
    }
    partial = kept;
  }
};

// One block of 8 outputs for kRows rows (rows src_stride / dst_stride apart). kStep 1: loads; 2: two loads
// and shuffles to the even (and odd) lanes; 0: any other step, gathers. Lanes a tap does not apply to are not
// read and keep the accumulator. The rows' max chains are independent and overlap their latencies.
template <int kStep, int kRows>
inline void max_taps_rows(const float* s, int64_t src_stride, int64_t step, const MaxTapBlock& b, float* d,
                          int64_t dst_stride, int64_t len, bool first) {
  const __m256i store = tail_mask(len);
  __m256 acc[kRows];
  for (int i = 0; i < kRows; ++i)
    acc[i] = first ? _mm256_set1_ps(kLowestFloat) : _mm256_maskload_ps(d + i * dst_stride, store);
  for (int t = 0; t < b.full; ++t) {
    const float* p = s + b.full_offset[t];
    for (int i = 0; i < kRows; ++i) acc[i] = max_keep_nan(acc[i], _mm256_loadu_ps(p + i * src_stride));
  }
  if (kStep == 2) {
    for (int t = 0; t < b.pairs; ++t) {
      const float* p = s + b.pair_offset[t];
      const bool all = b.pair_bits[t] == 0xff;
      const uint32_t both = spread_even(b.pair_bits[t]) * 3u;  // both elements of each pair
      const __m256i lanes = lane_vector(b.pair_bits[t]), lo_lanes = lane_vector(both & 0xff),
                    hi_lanes = lane_vector(both >> 8);
      for (int i = 0; i < kRows; ++i) {
        const float* q = p + i * src_stride;
        const __m256 lo = all ? _mm256_loadu_ps(q) : _mm256_maskload_ps(q, lo_lanes);
        const __m256 hi = all ? _mm256_loadu_ps(q + kVec) : _mm256_maskload_ps(q + kVec, hi_lanes);
        const __m256 v = max_keep_nan(acc[i], max_keep_nan(even_lanes(lo, hi), odd_lanes(lo, hi)));
        acc[i] = all ? v : _mm256_blendv_ps(acc[i], v, _mm256_castsi256_ps(lanes));
      }
    }
  }
  for (int t = 0; t < b.partial; ++t) {
    const float* p = s + b.partial_offset[t];
    const __m256i lanes = lane_vector(b.partial_bits[t]);
    const uint32_t source = kStep == 2 ? spread_even(b.partial_bits[t]) : 0;
    const __m256i lo_lanes = lane_vector(source & 0xff), hi_lanes = lane_vector(source >> 8);
    for (int i = 0; i < kRows; ++i) {
      const float* q = p + i * src_stride;
      __m256 v;
      if (kStep == 1) {
        v = _mm256_maskload_ps(q, lanes);
      } else if (kStep == 2) {
        v = even_lanes(_mm256_maskload_ps(q, lo_lanes), _mm256_maskload_ps(q + kVec, hi_lanes));
      } else {
        const __m256i strided = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
                                                   _mm256_set1_epi32(static_cast<int>(step)));
        v = _mm256_mask_i32gather_ps(_mm256_setzero_ps(), q, strided, _mm256_castsi256_ps(lanes), 4);
      }
      acc[i] = _mm256_blendv_ps(acc[i], max_keep_nan(acc[i], v), _mm256_castsi256_ps(lanes));
    }
  }
  for (int i = 0; i < kRows; ++i) {
    if (len == kVec) _mm256_storeu_ps(d + i * dst_stride, acc[i]);
    else _mm256_maskstore_ps(d + i * dst_stride, store, acc[i]);
  }
}

// A panel of blocks over all rows: rows outer in pairs, blocks inner, so each row's reads stay in cache from
// one block to the next (the rows are often whole planes apart).
template <int kStep>
void max_taps_panel(const float* src, int64_t src_stride, int64_t step, const MaxTapBlock* blocks, int count,
                    int64_t n, int64_t rows, float* dst, int64_t dst_stride, bool first) {
  int64_t r = 0;
  for (; r + 2 <= rows; r += 2)
    for (int i = 0; i < count; ++i)
      max_taps_rows<kStep, 2>(src + r * src_stride + i * kVec * step, src_stride, step, blocks[i],
                              dst + r * dst_stride + i * kVec, dst_stride, std::min<int64_t>(n - i * kVec, kVec), first);
  for (; r < rows; ++r)
    for (int i = 0; i < count; ++i)
      max_taps_rows<kStep, 1>(src + r * src_stride + i * kVec * step, src_stride, step, blocks[i],
                              dst + r * dst_stride + i * kVec, dst_stride, std::min<int64_t>(n - i * kVec, kVec), first);
}

// K taps on consecutive image rows (offsets o0 + t*period, every output of every row): output image row q is
// the max of input image rows q .. q+K-1. A strip of 8 columns slides down the rows with the last rows and
// the max of neighbouring pairs in registers, so each input row is loaded once instead of K times.
template <int K>
void max_taps_slide(const float* src, int64_t src_stride, int64_t o0, int64_t period, int64_t count, int64_t rows,
                    float* dst, int64_t dst_stride) {
  const __m256 lowest = _mm256_set1_ps(kLowestFloat);
  for (int64_t r = 0; r < rows; ++r) {
    const float* s = src + r * src_stride + o0;
    float* d = dst + r * dst_stride;
    for (int64_t c0 = 0; c0 < period; c0 += kVec) {
      const bool whole = period - c0 >= kVec;
      const __m256i m = tail_mask(period - c0);
      auto row = [&](int64_t q) {
        return whole ? _mm256_loadu_ps(s + q * period + c0) : _mm256_maskload_ps(s + q * period + c0, m);
      };
      // v: the last K-1 rows; p[i] = max(v[i], v[i+1])
      __m256 v[K], p[K];
      for (int i = 0; i < K - 1; ++i) v[i] = row(i);
      for (int i = 0; i + 1 < K - 1; ++i) p[i] = max_keep_nan(v[i], v[i + 1]);
      for (int64_t q = 0; q < count; ++q) {
        v[K - 1] = row(q + K - 1);
        if (K > 1) p[K - 2] = max_keep_nan(v[K - 2], v[K - 1]);
        __m256 acc;
        if (K == 1) acc = v[0];
        else if (K == 2) acc = p[0];
        else if (K == 3) acc = max_keep_nan(p[0], v[2]);
        else if (K == 4) acc = max_keep_nan(p[0], p[2]);
        else acc = max_keep_nan(max_keep_nan(p[0], p[2]), v[4]);  // K == 5
        acc = _mm256_max_ps(lowest, acc);  // at least lowest; a NaN stays (vmaxps returns its second operand)
        if (whole) _mm256_storeu_ps(d + q * period + c0, acc);
        else _mm256_maskstore_ps(d + q * period + c0, m, acc);
        for (int i = 0; i + 1 < K; ++i) v[i] = v[i + 1];
        for (int i = 0; i + 1 < K - 1; ++i) p[i] = p[i + 1];
      }
    }
  }
}

// Panels of up to 8 blocks of 8 outputs; each block's taps are sorted out once for all rows. Taps on K <= 5
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

// 8 pixels at a time: the max over channels (NaN kept), exp(v - max) stored in place and summed, then divided.
void softmax_run(float* y, int64_t plane, int64_t channels, int64_t n) {
  for (int64_t j = 0; j < n; j += kVec) {
    const __m256i t = tail_mask(n - j);
    float* p = y + j;
    __m256 top = _mm256_maskload_ps(p, t);
    for (int64_t c = 1; c < channels; ++c) top = max_keep_nan(top, _mm256_maskload_ps(p + c * plane, t));
    __m256 sum = _mm256_setzero_ps();
    for (int64_t c = 0; c < channels; ++c) {
      const __m256 e = exp_ps(_mm256_sub_ps(_mm256_maskload_ps(p + c * plane, t), top));
      _mm256_maskstore_ps(p + c * plane, t, e);
      sum = _mm256_add_ps(sum, e);
    }
    for (int64_t c = 0; c < channels; ++c)
      _mm256_maskstore_ps(p + c * plane, t, _mm256_div_ps(_mm256_maskload_ps(p + c * plane, t), sum));
  }
}

void gate_column_sums(const float* x, const float* ref, const uint8_t* marks, int64_t n, float* sums) {
  int64_t j = 0;
  for (; j + kVec <= n; j += kVec) {
    __m256 d = _mm256_sub_ps(_mm256_loadu_ps(x + j), _mm256_loadu_ps(ref + j));
    if (marks) {  // unmarked lanes add +0 (a NaN there must not count either)
      __m128i m8 = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(marks + j));
      __m256i marked = _mm256_cmpgt_epi32(_mm256_cvtepu8_epi32(m8), _mm256_setzero_si256());
      d = _mm256_and_ps(d, _mm256_castsi256_ps(marked));
    }
    _mm256_storeu_ps(sums + j, _mm256_add_ps(_mm256_loadu_ps(sums + j), d));
  }
  for (; j < n; ++j)
    if (!marks || marks[j]) sums[j] += x[j] - ref[j];
}

// One line of 8 channels (the blocked layout's b on AVX2), for common/blocked_lines.h.
struct Lines {
  using V = __m256;
  static constexpr int kLanes = kVec;
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V set1(float v) { return _mm256_set1_ps(v); }
  static V zero() { return _mm256_setzero_ps(); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static bool any_changed(V x, V r, V tau) {  // "not less-or-equal, unordered": NaN counts (rule 2)
    const V d = _mm256_andnot_ps(_mm256_set1_ps(-0.f), _mm256_sub_ps(x, r));
    return _mm256_movemask_ps(_mm256_cmp_ps(d, tau, _CMP_NLE_UQ)) != 0;
  }
  static V activate(V v, const ActivationParams& act) { return deltaonnx::activate(v, act); }
  using M = __m256;  // DeltaPool's "no NaN yet" lanes (blocked_pool_lines.h), all ones where none
  static V max(V a, V b) { return _mm256_max_ps(a, b); }
  static M ordered_lanes() { return _mm256_castsi256_ps(_mm256_set1_epi32(-1)); }
  static M keep_ordered(M m, V a, V b) { return _mm256_and_ps(m, _mm256_cmp_ps(a, b, _CMP_ORD_Q)); }
  static V nan_unless_ordered(V v, M m) {
    return _mm256_blendv_ps(_mm256_set1_ps(std::numeric_limits<float>::quiet_NaN()), v, m);
  }
};

}  // namespace

const KernelTable& avx2_kernel_table() {
  static const KernelTable table{"avx2", kMR, kNR, kVec, detect_changes, update_reference, detect_update_exact, detect_update_pixels, gemm_tile, gemm_tile_store, gemm_row, pack_pieces, scatter_pieces, store_flagged, deinterleave2, bias_activate, unblock_activate, block_planes, depthwise_run, max_taps, softmax_run, gate_column_sums, blocked_detect_update_lines<Lines>,
      blocked_pixel_gemm_lines<Lines, 12, 2>,  // 12 of the 16 ymm registers accumulate: 6x2 or 12x1
      blocked_depthwise_pixels_lines<Lines>, blocked_max_pool_lines<Lines>};
  return table;
}

}  // namespace deltaonnx

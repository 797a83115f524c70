// Prototype (not part of the op library): one DeltaConv step on NCHW16c tensors, to measure whether blocked
// exchange between Delta ops reaches issue 15's cost per FLOP. Built by build.py into a shared library that
// partial_conv.py loads with ctypes. Layouts (B = 16 channels per cache line):
//   X, X_ref  [C/B, H, W, B]        Y (also Y_prev, updated in place)  [M/B, Ho, Wo, B]
//   map_in    [H, W] uint8          map_out                             [Ho, Wo] uint8
//   Wb        [(C/B) * k*k * B, M]  row (cb, tap, c) holds the weights of input channel cb*B+c at tap for all M
// Steps: (a) marked pixels compared with the pixel rule NOT(max_c |X - X_ref| <= tau), X_ref moved where they
// changed; (b) the changed pixels or-pooled to map_out; (c) the marked outputs' patches gathered, a line per
// (channel block, tap), into tiles of NP pixels; (d) tiles times blocked weights, NP pixels x MB output blocks
// in registers; (e) bias, optional SiLU, stored into Y. Variant 0 is the scalar reference, 1 AVX-512, 2 AVX-512
// with (c) replaced by a table of pointers to the lines (read in place, no tile copy).
#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int B = 16;

struct Shape {
  int C, H, W, M, k, s, pad, Ho, Wo;
  int taps() const { return k * k; }
  int K16() const { return (C / B) * taps(); }  // reduction length in lines of B channels
};

struct Scratch {
  std::vector<int32_t> changed;   // changed input pixels (iy * W + ix)
  std::vector<int32_t> outputs;   // marked output pixels (oy * Wo + ox)
  std::vector<float> tile;        // [K16][NP][B]
  std::vector<const float*> lines;  // [K16][NP]: the indirect variant's line pointers
};
thread_local Scratch scratch;

// ---- (a) change test of marked pixels and reference move ----
bool pixel_changed_scalar(const float* x, const float* xr, int Cb, size_t plane, float tau) {
  bool changed = false;
  for (int cb = 0; cb < Cb; ++cb)
    for (int c = 0; c < B; ++c) changed |= !(std::fabs(x[cb * plane + c] - xr[cb * plane + c]) <= tau);
  return changed;
}

__attribute__((target("avx512f"))) bool pixel_changed_avx512(const float* x, const float* xr, int Cb, size_t plane,
                                                             float tau) {
  const __m512 t = _mm512_set1_ps(tau);
  __mmask16 any = 0;
  for (int cb = 0; cb < Cb; ++cb) {
    __m512 d = _mm512_abs_ps(_mm512_sub_ps(_mm512_loadu_ps(x + cb * plane), _mm512_loadu_ps(xr + cb * plane)));
    any |= _mm512_cmp_ps_mask(d, t, _CMP_NLE_UQ);  // NaN counts as changed
  }
  return any != 0;
}

void detect_and_move(const Shape& sh, const float* X, float* X_ref, const uint8_t* map_in, float tau, int variant) {
  const size_t plane = size_t(sh.H) * sh.W * B;
  const int Cb = sh.C / B;
  auto& changed = scratch.changed;
  changed.clear();
  const int n = sh.H * sh.W;
  for (int i = 0; i < n; ++i) {
    if (i + 8 <= n) {  // skip unmarked stretches 8 bytes at a time
      uint64_t word;
      std::memcpy(&word, map_in + i, 8);
      if (word == 0) {
        i += 7;
        continue;
      }
    }
    if (!map_in[i]) continue;
    const float* x = X + size_t(i) * B;
    float* xr = X_ref + size_t(i) * B;
    bool c = variant == 1 ? pixel_changed_avx512(x, xr, Cb, plane, tau) : pixel_changed_scalar(x, xr, Cb, plane, tau);
    if (!c) continue;
    changed.push_back(i);
    for (int cb = 0; cb < Cb; ++cb) std::memcpy(xr + cb * plane, x + cb * plane, B * sizeof(float));
  }
}

// ---- (b) or-pool of the changed pixels to the output map, and the list of outputs to redo ----
// n / s when s divides n >= 0, else -1; strides 1 and 2 (YOLO's) without a division
inline int exact_quotient(int n, int s) {
  if (n < 0) return -1;
  if (s == 1) return n;
  if (s == 2) return n & 1 ? -1 : n >> 1;
  return n % s ? -1 : n / s;
}

void mark_outputs(const Shape& sh, uint8_t* map_out) {
  std::memset(map_out, 0, size_t(sh.Ho) * sh.Wo);
  for (int32_t i : scratch.changed) {
    const int iy = i / sh.W, ix = i - iy * sh.W;
    for (int ky = 0; ky < sh.k; ++ky) {
      const int oy = exact_quotient(iy + sh.pad - ky, sh.s);
      if (oy < 0 || oy >= sh.Ho) continue;
      for (int kx = 0; kx < sh.k; ++kx) {
        const int ox = exact_quotient(ix + sh.pad - kx, sh.s);
        if (ox >= 0 && ox < sh.Wo) map_out[oy * sh.Wo + ox] = 1;
      }
    }
  }
  auto& outputs = scratch.outputs;
  outputs.clear();
  for (int o = 0; o < sh.Ho * sh.Wo; ++o)
    if (map_out[o]) outputs.push_back(o);
}

// ---- (c) gather: tile[(cb*taps + tap)][p][B], a line of X_ref (or zeros off the input) per entry ----
void gather_tile(const Shape& sh, const float* X_ref, const int32_t* outs, int count, int NP, int next_count,
                 float* tile) {
  const size_t plane = size_t(sh.H) * sh.W * B;
  const int Cb = sh.C / B, T = sh.taps();
  // scattered pixels miss the cache: ask for the next tile's taps while this one is copied
  for (int p = 0; p < next_count; ++p) {
    const int oy = outs[NP + p] / sh.Wo, ox = outs[NP + p] - oy * sh.Wo;
    for (int ky = 0; ky < sh.k; ++ky) {
      const int iy = oy * sh.s - sh.pad + ky;
      if (iy < 0 || iy >= sh.H) continue;
      for (int kx = 0; kx < sh.k; ++kx) {
        const int ix = ox * sh.s - sh.pad + kx;
        if (ix < 0 || ix >= sh.W) continue;
        for (int cb = 0; cb < Cb; ++cb) __builtin_prefetch(X_ref + cb * plane + (size_t(iy) * sh.W + ix) * B);
      }
    }
  }
  for (int p = 0; p < NP; ++p) {
    if (p >= count) {  // padding pixel of the last tile: computed, never stored
      for (int kk = 0; kk < Cb * T; ++kk) std::memset(tile + (size_t(kk) * NP + p) * B, 0, B * sizeof(float));
      continue;
    }
    const int oy = outs[p] / sh.Wo, ox = outs[p] % sh.Wo;
    for (int ky = 0; ky < sh.k; ++ky) {
      const int iy = oy * sh.s - sh.pad + ky;
      for (int kx = 0; kx < sh.k; ++kx) {
        const int ix = ox * sh.s - sh.pad + kx;
        const int tap = ky * sh.k + kx;
        const bool inside = iy >= 0 && iy < sh.H && ix >= 0 && ix < sh.W;
        const float* src = X_ref + (size_t(iy) * sh.W + ix) * B;
        for (int cb = 0; cb < Cb; ++cb) {
          float* dst = tile + ((size_t(cb) * T + tap) * NP + p) * B;
          if (inside)
            std::memcpy(dst, src + cb * plane, B * sizeof(float));
          else
            std::memset(dst, 0, B * sizeof(float));
        }
      }
    }
  }
}

// (c') indirect variant: no copy, lines[(cb*taps + tap) * NP + p] points at the line in X_ref (or a zero line)
alignas(64) const float kZeroLine[B] = {};

void gather_lines(const Shape& sh, const float* X_ref, const int32_t* outs, int count, int NP, const float** lines) {
  const size_t plane = size_t(sh.H) * sh.W * B;
  const int Cb = sh.C / B, T = sh.taps();
  for (int p = 0; p < NP; ++p) {
    const int o = outs[p < count ? p : 0];  // padding pixels repeat the first: computed, never stored
    const int oy = o / sh.Wo, ox = o - oy * sh.Wo;
    for (int ky = 0; ky < sh.k; ++ky) {
      const int iy = oy * sh.s - sh.pad + ky;
      for (int kx = 0; kx < sh.k; ++kx) {
        const int ix = ox * sh.s - sh.pad + kx;
        const bool inside = iy >= 0 && iy < sh.H && ix >= 0 && ix < sh.W;
        const float* src = X_ref + (size_t(iy) * sh.W + ix) * B;
        for (int cb = 0; cb < Cb; ++cb)
          lines[(size_t(cb) * T + ky * sh.k + kx) * NP + p] = inside ? src + cb * plane : kZeroLine;
      }
    }
  }
}

inline float silu_scalar(float v) { return v / (1.0f + std::exp(-v)); }

// ---- (d)+(e) scalar reference: the same tile, fma in the same order as the vector kernel ----
void tile_gemm_scalar(const Shape& sh, const float* tile, int NP, const float* Wb, const float* bias, int act,
                      const int32_t* outs, int count, float* Y) {
  const size_t oplane = size_t(sh.Ho) * sh.Wo * B;
  const int K16 = sh.K16();
  for (int p = 0; p < count; ++p)
    for (int m = 0; m < sh.M; ++m) {
      float acc = 0.f;
      for (int kk = 0; kk < K16; ++kk)
        for (int c = 0; c < B; ++c) acc = std::fma(tile[(size_t(kk) * NP + p) * B + c], Wb[(size_t(kk) * B + c) * sh.M + m], acc);
      float v = acc + bias[m];
      if (act) v = silu_scalar(v);
      Y[(m / B) * oplane + size_t(outs[p]) * B + m % B] = v;
    }
}

// exp(x) for the SiLU: 2^(x log2 e) split into 2^n * 2^f, f in [-0.5, 0.5], degree-6 polynomial (~2 ulp)
__attribute__((target("avx512f"))) inline __m512 exp_avx512(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-88.0f));
  const __m512 t = _mm512_mul_ps(x, _mm512_set1_ps(1.44269504089f));
  const __m512 n = _mm512_roundscale_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_mul_ps(_mm512_sub_ps(t, n), _mm512_set1_ps(0.693147180560f));  // f ln 2 in [-0.35, 0.35]
  __m512 q = _mm512_set1_ps(1.0f / 720);
  q = _mm512_fmadd_ps(q, f, _mm512_set1_ps(1.0f / 120));
  q = _mm512_fmadd_ps(q, f, _mm512_set1_ps(1.0f / 24));
  q = _mm512_fmadd_ps(q, f, _mm512_set1_ps(1.0f / 6));
  q = _mm512_fmadd_ps(q, f, _mm512_set1_ps(0.5f));
  q = _mm512_fmadd_ps(q, f, _mm512_set1_ps(1.0f));
  q = _mm512_fmadd_ps(q, f, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(q, n);
}

// NP pixels x MB output blocks of 16 accumulators; weights of one (kk, c) row are MB consecutive vectors.
template <int NP, int MB, bool INDIRECT>
__attribute__((target("avx512f"))) void tile_gemm_avx512(const Shape& sh, const float* tile, const float* const* lines,
                                                         const float* Wb,
                                                         const float* bias, int act, const int32_t* outs, int count,
                                                         float* Y) {
  const size_t oplane = size_t(sh.Ho) * sh.Wo * B;
  const int K16 = sh.K16();
  const int Mb = sh.M / B;
  for (int mg = 0; mg < Mb; mg += MB) {
    __m512 acc[NP][MB];
#pragma GCC unroll 24
    for (int p = 0; p < NP; ++p)
#pragma GCC unroll 8
      for (int j = 0; j < MB; ++j) acc[p][j] = _mm512_setzero_ps();
    const float* wrow = Wb + mg * B;
    const float* trow = tile;
    for (int kk = 0; kk < K16; ++kk, trow += NP * B) {
      const float* const* lrow = lines + size_t(kk) * NP;
      for (int c = 0; c < B; ++c, wrow += sh.M) {
        __m512 w[MB];
#pragma GCC unroll 8
        for (int j = 0; j < MB; ++j) w[j] = _mm512_loadu_ps(wrow + j * B);
#pragma GCC unroll 24
        for (int p = 0; p < NP; ++p) {
          const __m512 xv = _mm512_set1_ps(INDIRECT ? lrow[p][c] : trow[p * B + c]);
#pragma GCC unroll 8
          for (int j = 0; j < MB; ++j) acc[p][j] = _mm512_fmadd_ps(xv, w[j], acc[p][j]);
        }
      }
    }
    // through memory once per tile, so the accumulators are only ever indexed by constants (kept in registers)
    alignas(64) float sums[NP][MB][B];
#pragma GCC unroll 24
    for (int p = 0; p < NP; ++p)
#pragma GCC unroll 8
      for (int j = 0; j < MB; ++j) _mm512_store_ps(sums[p][j], acc[p][j]);
    for (int j = 0; j < MB; ++j) {
      const __m512 b = _mm512_loadu_ps(bias + (mg + j) * B);
      float* yplane = Y + (mg + j) * oplane;
      for (int p = 0; p < count; ++p) {
        __m512 v = _mm512_add_ps(_mm512_load_ps(sums[p][j]), b);
        if (act) {  // v / (1 + exp(-v))
          const __m512 e = exp_avx512(_mm512_sub_ps(_mm512_setzero_ps(), v));
          v = _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        }
        _mm512_storeu_ps(yplane + size_t(outs[p]) * B, v);
      }
    }
  }
}

}  // namespace

extern "C" {

// One step. Returns the number of outputs recomputed (>= 0), -1 on a shape the prototype does not take, -2 when
// the AVX-512 variant is asked for on a CPU without it.
// counts_out[0] = changed input pixels, counts_out[1] = recomputed outputs.
int nchwc_partial_conv(int C, int H, int W, int M, int k, int s, float tau, int act, int variant, const float* X,
                       float* X_ref, const uint8_t* map_in, const float* Wb, const float* bias, float* Y,
                       uint8_t* map_out, int32_t* counts_out) {
  if (C % B || M % B || k < 1 || s < 1 || H < 1 || W < 1 || variant < 0 || variant > 2) return -1;
  if (variant != 0 && !__builtin_cpu_supports("avx512f")) return -2;
  Shape sh{C, H, W, M, k, s, k / 2, 0, 0};
  sh.Ho = (H + 2 * sh.pad - k) / s + 1;
  sh.Wo = (W + 2 * sh.pad - k) / s + 1;
  detect_and_move(sh, X, X_ref, map_in, tau, variant);
  mark_outputs(sh, map_out);
  const auto& outs = scratch.outputs;
  const int Mb = M / B;
  const int MB = Mb % 4 == 0 ? 4 : Mb % 2 == 0 ? 2 : 1;
  const int NP = 24 / MB;  // 24 accumulators
  scratch.tile.resize(size_t(sh.K16()) * NP * B);
  float* tile = scratch.tile.data();
  scratch.lines.resize(size_t(sh.K16()) * NP);
  const float** lines = scratch.lines.data();
  for (size_t first = 0; first < outs.size(); first += NP) {
    const int count = int(std::min<size_t>(NP, outs.size() - first));
    const int next_count = int(std::min<size_t>(NP, outs.size() - first - count));
    const int32_t* o = outs.data() + first;
    if (variant == 2) {
      gather_lines(sh, X_ref, o, count, NP, lines);
      if (MB == 4)
        tile_gemm_avx512<6, 4, true>(sh, tile, lines, Wb, bias, act, o, count, Y);
      else if (MB == 2)
        tile_gemm_avx512<12, 2, true>(sh, tile, lines, Wb, bias, act, o, count, Y);
      else
        tile_gemm_avx512<24, 1, true>(sh, tile, lines, Wb, bias, act, o, count, Y);
      continue;
    }
    gather_tile(sh, X_ref, o, count, NP, next_count, tile);
    if (variant == 0)
      tile_gemm_scalar(sh, tile, NP, Wb, bias, act, o, count, Y);
    else if (MB == 4)
      tile_gemm_avx512<6, 4, false>(sh, tile, lines, Wb, bias, act, o, count, Y);
    else if (MB == 2)
      tile_gemm_avx512<12, 2, false>(sh, tile, lines, Wb, bias, act, o, count, Y);
    else
      tile_gemm_avx512<24, 1, false>(sh, tile, lines, Wb, bias, act, o, count, Y);
  }
  counts_out[0] = int(scratch.changed.size());
  counts_out[1] = int(outs.size());
  return int(outs.size());
}

}  // extern "C"

// The kernels of DeltaConv's blocked layout (docs/ops.md#blocked-layout), written once over a vector type of
// one line (a pixel's `block` channels) and instantiated by the AVX-512 (b = 16) and AVX2 (b = 8) tables with
// their own Lines traits: load/store/set1/fma/add, any_changed (rule 2's per-lane test, NaN counts) and
// activate. A variant called with another block, or an output channel count not a multiple of it, runs the scalar
// table's kernel (the reference, scalar_kernels.cc, which sums in the same order).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/activation.h"
#include "common/kernel_table.h"

namespace deltaonnx {

// True when the `count` activations are one: a vector epilogue applies it to a whole line.
static inline bool one_activation(const ActivationParams* acts, int64_t count) {
  for (int64_t i = 1; i < count; ++i)
    if (acts[i].kind != acts[0].kind || acts[i].a != acts[0].a || acts[i].b != acts[0].b) return false;
  return true;
}

template <class L>
int64_t blocked_detect_update_lines(const float* x, float* ref, int64_t blocks, int64_t line_stride, int64_t block,
                                    int64_t begin, int64_t end, const uint8_t* marks, float tau, uint8_t* flags) {
  if (block != L::kLanes)
    return scalar_kernel_table().blocked_detect_update(x, ref, blocks, line_stride, block, begin, end, marks, tau, flags);
  const typename L::V vtau = L::set1(tau);
  int64_t changed = 0;
  for (int64_t p = begin; p < end; ++p) {
    flags[p] = 0;
    if (marks != nullptr && !marks[p]) continue;
    const float* xp = x + p * L::kLanes;
    float* rp = ref + p * L::kLanes;
    bool moved = false;
    for (int64_t cb = 0; cb < blocks && !moved; ++cb)
      moved = L::any_changed(L::load(xp + cb * line_stride), L::load(rp + cb * line_stride), vtau);
    if (!moved) continue;
    flags[p] = 1;
    ++changed;
    for (int64_t cb = 0; cb < blocks; ++cb) L::store(rp + cb * line_stride, L::load(xp + cb * line_stride));
  }
  return changed;
}

// P pixels x J output blocks from output channel m0, one accumulator each, summed over (line, lane) in the scalar
// reference's order; bias, the sum (sums[p], laid out as outs, when given) and activation applied at the store.
// Line l of pixel p is at pixels[p] +
// line_offsets[l]. The lines of the `next_count` pixels of `next` are prefetched as it goes, line l of them
// during line l: scattered pixels read lines of X that no hardware prefetcher predicts, and the next group's
// arrive while this one computes (a line of a tensor not 64-byte aligned spans two cache lines: both fetched).
// The last tail_lines lines hold tail_lanes real lanes (a padded channel block): their pad lanes are skipped.
template <class L, int P, int J>
inline void blocked_pixel_block(const float* const* pixels, const int64_t* line_offsets, int64_t line_count,
                                int64_t tail_lines, int64_t tail_lanes, const float* const* next, int64_t next_count,
                                const float* weights, int64_t out_channels, int64_t m0, const float* bias,
                                const ActivationParams* acts, float* const* outs, int64_t out_line_stride,
                                const float* const* sums) {
  constexpr int B = L::kLanes;
  typename L::V acc[P][J];
#pragma GCC unroll 12
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int j = 0; j < J; ++j) acc[p][j] = L::zero();
  // lanes: B as a constant (whole lines, the loop unrolled) or the tail's count
  const auto line = [&](int64_t l, auto lanes) {
    const int64_t offset = line_offsets[l];
    const float* t[P];
#pragma GCC unroll 12
    for (int p = 0; p < P; ++p) t[p] = pixels[p] + offset;
    for (int64_t q = 0; q < next_count; ++q) {
      __builtin_prefetch(next[q] + offset, 0, 3);
      __builtin_prefetch(next[q] + offset + (B - 1), 0, 3);
    }
    const float* w = weights + l * B * out_channels + m0;
    for (int lane = 0; lane < lanes; ++lane) {
      typename L::V wv[J];
#pragma GCC unroll 4
      for (int j = 0; j < J; ++j) wv[j] = L::load(w + lane * out_channels + j * B);
#pragma GCC unroll 12
      for (int p = 0; p < P; ++p) {
        const typename L::V v = L::set1(t[p][lane]);
#pragma GCC unroll 4
        for (int j = 0; j < J; ++j) acc[p][j] = L::fma(v, wv[j], acc[p][j]);
      }
    }
  };
  const int64_t full_lines = line_count - tail_lines;
  for (int64_t l = 0; l < full_lines; ++l) line(l, std::integral_constant<int, B>());
  for (int64_t l = full_lines; l < line_count; ++l) line(l, static_cast<int>(tail_lanes));
#pragma GCC unroll 4
  for (int j = 0; j < J; ++j) {
    const int64_t m = m0 + j * B;
    const typename L::V vb = L::load(bias + m);
    const ActivationParams* a = acts + m;
    const bool vector_act = one_activation(a, B) && a[0].kind != Activation::kTanh;
#pragma GCC unroll 12
    for (int p = 0; p < P; ++p) {
      float* out = outs[p] + (m / B) * out_line_stride;
      typename L::V v = L::add(acc[p][j], vb);
      if (sums != nullptr) v = L::add(v, L::load(sums[p] + (m / B) * out_line_stride));
      if (vector_act) {
        L::store(out, L::activate(v, a[0]));
      } else {  // PRelu's slopes per channel, Tanh: lane by lane
        alignas(64) float lanes[B];
        L::store(lanes, v);
        for (int i = 0; i < B; ++i) out[i] = apply_activation(a[i], lanes[i]);
      }
    }
  }
}

// Pixels [p0, p0 + P) times all output blocks, J blocks at a time (a tail of single blocks); the first pass
// prefetches the lines of the `next_count` pixels after them.
template <class L, int P, int J>
inline void blocked_pixel_group(const float* const* pixels, const int64_t* line_offsets, int64_t line_count,
                                int64_t tail_lines, int64_t tail_lanes, int64_t next_count, const float* weights,
                                int64_t out_channels, const float* bias, const ActivationParams* acts,
                                float* const* outs, int64_t out_line_stride, const float* const* sums) {
  constexpr int B = L::kLanes;
  int64_t m0 = 0;
  for (; m0 + J * B <= out_channels; m0 += J * B, next_count = 0)
    blocked_pixel_block<L, P, J>(pixels, line_offsets, line_count, tail_lines, tail_lanes, pixels + P, next_count,
                                 weights, out_channels, m0, bias, acts, outs, out_line_stride, sums);
  for (; m0 < out_channels; m0 += B, next_count = 0)
    blocked_pixel_block<L, P, 1>(pixels, line_offsets, line_count, tail_lines, tail_lanes, pixels + P, next_count,
                                 weights, out_channels, m0, bias, acts, outs, out_line_stride, sums);
}

// All count pixels in groups of P, the rest in groups of 4 and of 1, each group prefetching the next one's lines.
template <class L, int P, int J>
void blocked_pixel_groups(const float* const* pixels, const int64_t* line_offsets, int64_t line_count,
                          int64_t tail_lines, int64_t tail_lanes, int64_t count,
                          const float* weights, int64_t out_channels, const float* bias, const ActivationParams* acts,
                          float* const* outs, int64_t out_line_stride, const float* const* sums) {
  int64_t p = 0;
  const auto at = [&sums](int64_t q) { return sums != nullptr ? sums + q : nullptr; };
  for (; p + P <= count; p += P)
    blocked_pixel_group<L, P, J>(pixels + p, line_offsets, line_count, tail_lines, tail_lanes,
                                 std::min<int64_t>(P, count - p - P), weights, out_channels, bias, acts, outs + p,
                                 out_line_stride, at(p));
  for (; p + 4 <= count; p += 4)
    blocked_pixel_group<L, 4, J>(pixels + p, line_offsets, line_count, tail_lines, tail_lanes,
                                 std::min<int64_t>(4, count - p - 4), weights, out_channels, bias, acts, outs + p,
                                 out_line_stride, at(p));
  for (; p < count; ++p)
    blocked_pixel_group<L, 1, J>(pixels + p, line_offsets, line_count, tail_lines, tail_lanes,
                                 std::min<int64_t>(1, count - p - 1), weights, out_channels, bias, acts, outs + p,
                                 out_line_stride, at(p));
}

// The kernel-table entry. kAcc accumulators (the registers a variant can spare beside kMaxBlocks weight vectors
// and a broadcast), shaped by the output blocks M/B: kAcc/4 pixels x 4 blocks when kMaxBlocks is 4 and M/B a
// multiple of 4, else kAcc/2 x 2, else at most 12 x 1 (a pointer register per pixel), so each weight vector
// loaded feeds as many pixels as the registers allow and each broadcast as many blocks. Another block or an M
// not a multiple of B runs the scalar kernel; every shape sums in its order.
template <class L, int kAcc, int kMaxBlocks>
void blocked_pixel_gemm_lines(const float* const* pixels, const int64_t* line_offsets, int64_t line_count,
                              int64_t tail_lines, int64_t tail_lanes, int64_t count, int64_t block,
                              const float* weights, int64_t out_channels, const float* bias,
                              const ActivationParams* acts, float* const* outs, int64_t out_line_stride,
                              const float* const* sums) {
  constexpr int B = L::kLanes;
  if (block != B || out_channels % B != 0)
    return scalar_kernel_table().blocked_pixel_gemm(pixels, line_offsets, line_count, tail_lines, tail_lanes, count,
                                                    block, weights, out_channels, bias, acts, outs, out_line_stride,
                                                    sums);
  const int64_t out_blocks = out_channels / B;
  if (kMaxBlocks >= 4 && out_blocks % 4 == 0)
    blocked_pixel_groups<L, kAcc / 4, 4>(pixels, line_offsets, line_count, tail_lines, tail_lanes, count, weights,
                                         out_channels, bias, acts, outs, out_line_stride, sums);
  else if (out_blocks % 2 == 0)
    blocked_pixel_groups<L, kAcc / 2, 2>(pixels, line_offsets, line_count, tail_lines, tail_lanes, count, weights,
                                         out_channels, bias, acts, outs, out_line_stride, sums);
  else
    blocked_pixel_groups<L, (kAcc < 12 ? kAcc : 12), 1>(pixels, line_offsets, line_count, tail_lines, tail_lanes,
                                                        count, weights, out_channels, bias, acts, outs,
                                                        out_line_stride, sums);
}

// The blocked layout's depthwise conv (kernel_table.h blocked_depthwise_pixels): P pixels, channel block by channel
// block, one accumulator per pixel summed over the taps in the scalar reference's order (by fma, bias last). Line
// (cb, t) of pixel p is at pixels[p] + line_offsets[cb * taps + t]. No prefetch, unlike the GEMM: a line feeds one
// FMA here, not M/b x b, and the GEMM's prefetch of the next group's lines measured no faster (A/Bs in one process
// in both orders, docs/results.md#blocked-depthwise: the differences followed the order, not the prefetch).
// vector_act: one activation for every channel, applied to whole lines (else lane by lane: PRelu's slopes, Tanh).
template <class L, int P>
inline void blocked_depthwise_group(const float* const* pixels, const int64_t* line_offsets, int64_t taps,
                                    int64_t blocks, const float* weights, const float* bias,
                                    const ActivationParams* acts, bool vector_act, float* const* outs,
                                    int64_t out_line_stride) {
  constexpr int B = L::kLanes;
  for (int64_t cb = 0; cb < blocks; ++cb) {
    typename L::V acc[P];
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) acc[p] = L::zero();
    const int64_t* offsets = line_offsets + cb * taps;
    const float* w = weights + cb * taps * B;
    for (int64_t t = 0; t < taps; ++t) {
      const int64_t offset = offsets[t];
      const typename L::V wv = L::load(w + t * B);
#pragma GCC unroll 8
      for (int p = 0; p < P; ++p) acc[p] = L::fma(L::load(pixels[p] + offset), wv, acc[p]);
    }
    const typename L::V vb = L::load(bias + cb * B);
    const ActivationParams* a = acts + cb * B;
#pragma GCC unroll 8
    for (int p = 0; p < P; ++p) {
      float* out = outs[p] + cb * out_line_stride;
      const typename L::V v = L::add(acc[p], vb);
      if (vector_act) {
        L::store(out, L::activate(v, a[0]));
      } else {
        alignas(64) float lanes[B];
        L::store(lanes, v);
        for (int i = 0; i < B; ++i) out[i] = apply_activation(a[i], lanes[i]);
      }
    }
  }
}

// The kernel-table entry: groups of 8 pixels (8 accumulators, a weight vector and 8 pointers), the rest in groups
// of 4 and 1. Another block runs the scalar kernel.
template <class L>
void blocked_depthwise_pixels_lines(const float* const* pixels, const int64_t* line_offsets, int64_t taps,
                                    int64_t blocks, int64_t count, int64_t block, const float* weights,
                                    const float* bias, const ActivationParams* acts, float* const* outs,
                                    int64_t out_line_stride) {
  if (block != L::kLanes)
    return scalar_kernel_table().blocked_depthwise_pixels(pixels, line_offsets, taps, blocks, count, block, weights,
                                                          bias, acts, outs, out_line_stride);
  const bool vector_act = one_activation(acts, blocks * block) && acts[0].kind != Activation::kTanh;
  int64_t p = 0;
  for (; p + 8 <= count; p += 8)
    blocked_depthwise_group<L, 8>(pixels + p, line_offsets, taps, blocks, weights, bias, acts, vector_act, outs + p,
                                  out_line_stride);
  for (; p + 4 <= count; p += 4)
    blocked_depthwise_group<L, 4>(pixels + p, line_offsets, taps, blocks, weights, bias, acts, vector_act, outs + p,
                                  out_line_stride);
  for (; p < count; ++p)
    blocked_depthwise_group<L, 1>(pixels + p, line_offsets, taps, blocks, weights, bias, acts, vector_act, outs + p,
                                  out_line_stride);
}

}  // namespace deltaonnx

// The kernels of DeltaConv's blocked layout (docs/ops.md#blocked-layout), written once over a vector type of
// one line (a pixel's `block` channels) and instantiated by the AVX-512 (b = 16) and AVX2 (b = 8) tables with
// their own Lines traits: load/store/set1/fma/add, any_changed (rule 2's per-lane test, NaN counts) and
// activate. A variant called with another block, or a tile width its register blocking does not divide, runs
// the scalar table's kernel (the reference, scalar_kernels.cc, which sums in the same order).
#pragma once
#include <cstdint>
#include <cstring>

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

// P pixels (p0..p0+P) x J output blocks from output channel m0, one accumulator each, summed over (line,
// lane) in the scalar reference's order; bias and activation applied at the store. Pixel p of line l is the
// line at lines[l] + p * S * B: S = 1 for a gathered tile, S = the conv's stride for a row of outputs read in
// place.
template <class L, int S, int P, int J>
inline void blocked_tile_block(const float* const* lines, int64_t line_count, int64_t p0, const float* weights,
                               int64_t out_channels, int64_t m0, const float* bias, const ActivationParams* acts,
                               float* const* outs, int64_t count, int64_t out_line_stride) {
  constexpr int B = L::kLanes;
  typename L::V acc[P][J];
#pragma GCC unroll 24
  for (int p = 0; p < P; ++p)
#pragma GCC unroll 4
    for (int j = 0; j < J; ++j) acc[p][j] = L::zero();
  for (int64_t l = 0; l < line_count; ++l) {
    const float* t = lines[l] + p0 * S * B;
    const float* w = weights + l * B * out_channels + m0;
    for (int lane = 0; lane < B; ++lane) {
      typename L::V wv[J];
#pragma GCC unroll 4
      for (int j = 0; j < J; ++j) wv[j] = L::load(w + lane * out_channels + j * B);
#pragma GCC unroll 24
      for (int p = 0; p < P; ++p) {
        const typename L::V v = L::set1(t[p * S * B + lane]);
#pragma GCC unroll 4
        for (int j = 0; j < J; ++j) acc[p][j] = L::fma(v, wv[j], acc[p][j]);
      }
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < J; ++j) {
    const int64_t m = m0 + j * B;
    const typename L::V vb = L::load(bias + m);
    const ActivationParams* a = acts + m;
    const bool vector_act = one_activation(a, B) && a[0].kind != Activation::kTanh;
#pragma GCC unroll 24
    for (int p = 0; p < P; ++p) {
      if (p0 + p >= count) continue;  // a padding pixel of the last run of P: computed, never stored
      float* out = outs[p0 + p] + (m / B) * out_line_stride;
      const typename L::V v = L::add(acc[p][j], vb);
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

// The pixels in runs of P times all output blocks, J blocks at a time (a tail of single blocks).
template <class L, int S, int P, int J>
void blocked_tile_pixels_blocks(const float* const* lines, int64_t line_count, const float* weights,
                                int64_t out_channels, const float* bias, const ActivationParams* acts,
                                float* const* outs, int64_t count, int64_t out_line_stride) {
  constexpr int B = L::kLanes;
  for (int64_t p0 = 0; p0 < count; p0 += P) {
    int64_t m0 = 0;
    for (; m0 + J * B <= out_channels; m0 += J * B)
      blocked_tile_block<L, S, P, J>(lines, line_count, p0, weights, out_channels, m0, bias, acts, outs, count,
                                     out_line_stride);
    for (; m0 < out_channels; m0 += B)
      blocked_tile_block<L, S, P, 1>(lines, line_count, p0, weights, out_channels, m0, bias, acts, outs, count,
                                     out_line_stride);
  }
}

// kAcc accumulators (the registers a variant can spare beside kMaxBlocks weight vectors and a broadcast),
// shaped by the output blocks M/B: kAcc/4 pixels x 4 blocks when kMaxBlocks is 4 and M/B a multiple of 4, else
// kAcc/2 x 2, else kAcc x 1, so each weight vector loaded feeds as many pixels as the registers allow and each
// broadcast as many blocks.
template <class L, int S, int kAcc, int kMaxBlocks>
void blocked_tile_shaped(const float* const* lines, int64_t line_count, const float* weights, int64_t out_channels,
                         const float* bias, const ActivationParams* acts, float* const* outs, int64_t count,
                         int64_t out_line_stride) {
  const int64_t out_blocks = out_channels / L::kLanes;
  if (kMaxBlocks >= 4 && out_blocks % 4 == 0)
    blocked_tile_pixels_blocks<L, S, kAcc / 4, 4>(lines, line_count, weights, out_channels, bias, acts, outs, count,
                                                  out_line_stride);
  else if (out_blocks % 2 == 0)
    blocked_tile_pixels_blocks<L, S, kAcc / 2, 2>(lines, line_count, weights, out_channels, bias, acts, outs, count,
                                                  out_line_stride);
  else
    blocked_tile_pixels_blocks<L, S, kAcc, 1>(lines, line_count, weights, out_channels, bias, acts, outs, count,
                                              out_line_stride);
}

// The kernel-table entry: pixel strides of one and two lines (a gathered tile; a row of outputs read in place
// at stride 1 or 2) in registers. The width np must be a multiple of kAcc (the engine's tiles are); other
// widths, blocks, strides or M run the scalar kernel. Every shape sums in the scalar kernel's order.
template <class L, int kAcc, int kMaxBlocks>
void blocked_tile_gemm_lines(const float* const* lines, int64_t line_count, int64_t pixel_stride, int64_t np,
                             int64_t block, const float* weights, int64_t out_channels, const float* bias,
                             const ActivationParams* acts, float* const* outs, int64_t count,
                             int64_t out_line_stride) {
  constexpr int B = L::kLanes;
  if (block == B && np % kAcc == 0 && out_channels % B == 0 && pixel_stride == B)
    blocked_tile_shaped<L, 1, kAcc, kMaxBlocks>(lines, line_count, weights, out_channels, bias, acts, outs, count,
                                                out_line_stride);
  else if (block == B && np % kAcc == 0 && out_channels % B == 0 && pixel_stride == 2 * B)
    blocked_tile_shaped<L, 2, kAcc, kMaxBlocks>(lines, line_count, weights, out_channels, bias, acts, outs, count,
                                                out_line_stride);
  else
    scalar_kernel_table().blocked_tile_gemm(lines, line_count, pixel_stride, np, block, weights, out_channels, bias,
                                            acts, outs, count, out_line_stride);
}

}  // namespace deltaonnx

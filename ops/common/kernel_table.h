// The hot loops of DeltaConv/DeltaPool, in one table per instruction set (scalar, AVX2, AVX-512), chosen once
// at load time from the CPU's features, as ORT's MLAS does. The scalar table is the reference and the
// portable fallback (ARM boards compile it with the compiler's own vectoriser).
#pragma once
#include <cstdint>
#include "common/activation.h"
#include "common/geometry.h"

namespace deltaonnx {

// A run of pixels whose patches a gathered GEMM panel holds: flat source offset src (added to every tap's
// offset), len pixels, placed at panel column dst.
struct PackPiece {
  int64_t src, len, dst;
};

// One tap of a max pooling pass (max_taps): output j reads src[offset + j*step], for the outputs whose
// position in their row, j % period, lies in [begin, end) (the others' reads fall in the padding).
struct PoolTap {
  int64_t offset, begin, end;
};

// std::numeric_limits<float>::lowest(): a max pool's value where its window reads no input (as ORT).
constexpr float kLowestFloat = -3.40282347e+38f;

struct KernelTable {
  const char* name;
  int gemm_mr;  // output channels per GEMM micro tile (the packed weight panel height)
  int gemm_nr;  // pixels per GEMM micro tile, at most
  int gemm_vec; // pixels per vector register (tiles of whole vectors waste no lanes)

  // Rule 2, OR-accumulated over channels: flags[p] |= 1 if any c has !(|x[c*plane+p] - ref[c*plane+p]| <= tau),
  // for p in [begin, end). tau is finite (the kernels refuse any other).
  void (*detect_changes)(const float* x, const float* ref, int64_t channels, int64_t plane, int64_t begin,
                         int64_t end, float tau, uint8_t* flags);

  // Rule 3: ref_out[c*plane+p] = flags[p] ? x : ref_in, for p in [begin, end). When ref_out == ref_in
  // (the state bound in place) only flagged pixels are written.
  void (*update_reference)(const float* x, const float* ref_in, float* ref_out, int64_t channels, int64_t plane,
                           int64_t begin, int64_t end, const uint8_t* flags);

  // Rules 2 and 3 fused for tau = 0, where a pixel's channels can be decided one by one (an unchanged
  // element equals its reference): flags[p] |= any_c !(|x - ref| <= 0) (NaN and Inf count as changed), and
  // ref_out takes x wherever that holds (ref_out == ref_in: only those elements are written; else every
  // element of the range).
  void (*detect_update_exact)(const float* x, const float* ref_in, float* ref_out, int64_t channels, int64_t plane,
                              int64_t begin, int64_t end, uint8_t* flags);

  // Rules 2 and 3 in one pass for any tau, channels inner (for inputs of few channels, such as RGB frames:
  // every plane is read once): a pixel changed when some channel has !(|x - ref| <= tau); flags[p] |= changed,
  // and ref_out takes x at every channel of a changed pixel (ref_out == ref_in: only those are written, else
  // every element of the range).
  void (*detect_update_pixels)(const float* x, const float* ref_in, float* ref_out, int64_t channels, int64_t plane,
                               int64_t begin, int64_t end, float tau, uint8_t* flags);

  // One micro tile: c[r*gemm_nr + j] = sum_k a_packed[k*gemm_mr + r] * b_rows[k][j], r < gemm_mr, j < n.
  // b_rows[k] points at n readable floats (never more are read: the tail is loaded with a mask).
  void (*gemm_tile)(int64_t depth, const float* a_packed, const float* const* b_rows, int64_t n, float* c);

  // gemm_tile with the epilogue fused: out_rows[r][j] = act_r(tile[r][j] + bias[r]) for r < rows, j < n
  // (bias: gemm_mr values or nullptr; acts: gemm_mr activations). Used where a panel's pixels are contiguous
  // in the output and all recomputed, so the tile never goes through memory.
  void (*gemm_tile_store)(int64_t depth, const float* a_packed, const float* const* b_rows, int64_t n,
                          float* const* out_rows, int64_t rows, const float* bias, const ActivationParams* acts);

  // One output channel: out[j] = sum_k w[k] * b_rows[k][j], j < n <= gemm_nr (groups of one output
  // channel: depthwise).
  void (*gemm_row)(int64_t depth, const float* w, const float* const* b_rows, int64_t n, float* out);

  // Packs the patches of runs of pixels side by side for gemm_tile: dst[k*ld + pc.dst + i] =
  // base[tap_offsets[k] + pc.src + i] for k < depth, each piece pc and i < pc.len (short runs: a narrow map
  // packed without its padding columns, or the scattered runs of a sparse one).
  void (*pack_pieces)(int64_t depth, const float* base, const int64_t* tap_offsets, const PackPiece* pieces,
                      int64_t count, int64_t ld, float* dst);

  // The inverse of pack_pieces for one output channel: out[out_offsets[i] + j] = vals[pieces[i].dst + j] for
  // i < count and j < pieces[i].len (a gathered panel's results put back where their pixels lie).
  void (*scatter_pieces)(const float* vals, const PackPiece* pieces, const int64_t* out_offsets, int64_t count,
                         float* out);

  // dst[i] = vals[i] where flags[i] != 0, for i < n; the other elements of dst are neither read nor written
  // (a panel of runs joined across short gaps: the pixels between them keep their previous value).
  void (*store_flagged)(float* dst, const float* vals, const uint8_t* flags, int64_t n);

  // Stride-2 phase split of one row: even[v] = src[2v], odd[v] = src[2v + 1] for v < n (src holds 2n floats).
  void (*deinterleave2)(const float* src, int64_t n, float* even, float* odd);

  // v[i] = act(v[i] + bias) for i < n.
  void (*bias_activate)(float* v, int64_t n, float bias, const ActivationParams& act);

  // One block of an NCHWc-blocked tensor back to NCHW over n pixels (MLAS's layout: a pixel's `block`
  // channels adjacent), activated: y[c*y_stride + j] = act_c(blocked[j*block + c]) for c < channels (<= block)
  // and j < n (acts: one per channel of the block). The dense path's output: ORT's ReorderOutput and the
  // activation pass in one, the activation computed while the transposed vectors are in registers.
  void (*unblock_activate)(const float* blocked, int64_t block, int64_t channels, int64_t n,
                           const ActivationParams* acts, float* y, int64_t y_stride);

  // The inverse of unblock_activate without an activation (DeltaReorder to "blocked"): `channels` (<= block)
  // planes of one channel block to n lines of `block` floats, lines[j*block + c] = planes[c*plane_stride + j] for
  // c < channels and j < n, and +0 in the pad lanes channels <= c < block (a padded block, docs/ops.md#blocked-layout;
  // no plane past `channels` is read). Bits are moved, never computed (NaN payloads survive).
  void (*block_planes)(const float* planes, int64_t plane_stride, int64_t block, int64_t channels, int64_t n,
                       float* lines);
  // Depthwise conv over one run of n outputs in `channels` channels (one input channel each): for c < channels
  // and j < n, out[c*out_stride + j] = acts[c](sum_t w[c*w_stride + t] * taps[t][c*in_stride + j] + bias[c]),
  // t < count ascending from 0, bias last. taps[t] + c*in_stride points at n readable floats (stride-1 input,
  // a zero-padded copy of it, or a stride phase). Writes those outputs only.
  void (*depthwise_run)(int64_t count, const float* const* taps, int64_t in_stride, const float* w, int64_t w_stride,
                        const float* bias, const ActivationParams* acts, int64_t channels, int64_t n, float* out,
                        int64_t out_stride);

  // Max pooling over taps for a batch of rows (DeltaPool's passes): for r < rows and j < n,
  // dst[r*dst_stride + j] = the max of kLowestFloat and src[r*src_stride + t.offset + j*step] for every tap t
  // with t.begin <= j % period < t.end; NaN when any of those is NaN. Reads nothing else. period (> 0) lets
  // one flat range hold several image rows of period outputs each; period >= n: one row.
  void (*max_taps)(const float* src, int64_t src_stride, int64_t step, const PoolTap* taps, int64_t tap_count,
                   int64_t period, int64_t rows, int64_t n, float* dst, int64_t dst_stride);

  // DeltaConv's channel Softmax over n consecutive pixels: for j < n the values y[c*plane + j], c < channels,
  // become exp(v - max) / sum over c (ops/common/activation.h softmax_channels; NaN in any channel makes every
  // channel of that pixel NaN).
  void (*softmax_run)(float* y, int64_t plane, int64_t channels, int64_t n);

  // DeltaGate's block rule, one row of one channel: sums[j] += x[j] - ref[j] for j < n, the difference taken
  // as 0 where marks (nullable: all marked) is 0. Added in this order (no FMA), so every variant rounds alike:
  // a block's column sums are its rows added top to bottom (ops/delta_gate/gate_engine.cc).
  void (*gate_column_sums)(const float* x, const float* ref, const uint8_t* marks, int64_t n, float* sums);

  // DeltaConv's blocked layout (docs/ops.md#blocked-layout; common/blocked_lines.h), lines of `block` channels
  // (pixel p's channel block cb at cb*line_stride + p*block). Rules 2 and 3 over pixels [begin, end): flags[p] = 1
  // when some channel of its `blocks` lines has !(|x - ref| <= tau) (NaN counts), else 0 (unmarked pixels, when
  // marks is given, are not read); ref's lines take x's where it changed (in place). Returns the changed count.
  int64_t (*blocked_detect_update)(const float* x, float* ref, int64_t blocks, int64_t line_stride, int64_t block,
                                   int64_t begin, int64_t end, const uint8_t* marks, float tau, uint8_t* flags);

  // The GEMM of the blocked engine: count pixels whose line l is pixels[p] + line_offsets[l] (floats; a pixel
  // whose window lies inside X points at its window's first line there, one gathered into a tile at its column
  // of the tile), weights [line_count * block][out_channels] (row (l, lane)), bias [out_channels]. For p < count
  // and m < out_channels: outs[p][(m / block) * out_line_stride + m % block] = acts[m](sum over (l, lane)
  // ascending, by fma, of line * weight + bias[m] [+ sums[p][the same offset]]). sums: DeltaConv's sum input at
  // each pixel, laid out as outs, or nullptr. Only the count pixels' lines are read (vector variants prefetch each
  // group's successors while computing it). The last tail_lines lines hold tail_lanes (<= block) real channels (a
  // padded channel block, docs/ops.md#padded-blocks): lanes past them are neither read nor summed (their weights
  // are zero). tail_lines 0: every line whole.
  void (*blocked_pixel_gemm)(const float* const* pixels, const int64_t* line_offsets, int64_t line_count,
                             int64_t tail_lines, int64_t tail_lanes, int64_t count, int64_t block,
                             const float* weights, int64_t out_channels, const float* bias,
                             const ActivationParams* acts, float* const* outs, int64_t out_line_stride,
                             const float* const* sums);

  // The blocked layout's depthwise conv (group = C = M; ops/delta_conv/cpu/blocked_engine.cc): count pixels whose
  // line (cb, t) is pixels[p] + line_offsets[cb * taps + t] (floats; cb < blocks, t < taps), weights
  // [blocks][taps][block], bias [blocks * block]. For p < count, cb < blocks and lane < block:
  // outs[p][cb * out_line_stride + lane] = acts[cb * block + lane](sum over t ascending, by fma, of
  // line[lane] * weight + bias). Only the count pixels' lines are read.
  void (*blocked_depthwise_pixels)(const float* const* pixels, const int64_t* line_offsets, int64_t taps,
                                   int64_t blocks, int64_t count, int64_t block, const float* weights,
                                   const float* bias, const ActivationParams* acts, float* const* outs,
                                   int64_t out_line_stride);

  // DeltaPool's whole item on blocked lines (docs/ops.md#blocked-layout; common/blocked_pool_lines.h): every output
  // of output rows [oy0, oy1) of one channel block, x [ay.in][ax.in][block] and y [ay.out][ax.out][block]. Each
  // lane is max_pool_window's (common/delta_rules.h: NaN when a tap inside the input is NaN, else the max of the
  // lowest float and those taps). columns: scratch of ax.in * block floats (the separable pass's column maxima).
  void (*blocked_max_pool)(const float* x, const Axis& ay, const Axis& ax, int64_t block, int64_t oy0, int64_t oy1,
                           float* y, float* columns);
};

// The table in use: the best the CPU supports, or the one named by DELTAONNX_SIMD (scalar|avx2|avx512|neon)
// when that is set and supported (tests run every variant this way).
const KernelTable& kernels();

// A table by name, or nullptr when not built or not supported by this CPU.
const KernelTable* kernels_named(const char* name);

// Variants (defined in scalar_kernels.cc, avx2_kernels.cc, avx512_kernels.cc, neon_kernels.cc).
const KernelTable& scalar_kernel_table();
#if defined(DELTAONNX_HAVE_X86_SIMD)
const KernelTable& avx2_kernel_table();
const KernelTable& avx512_kernel_table();
#endif
#if defined(DELTAONNX_HAVE_NEON)
const KernelTable& neon_kernel_table();
#endif

}  // namespace deltaonnx

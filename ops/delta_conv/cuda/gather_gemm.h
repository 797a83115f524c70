// DeltaConv's compute on the GPU: a gather-GEMM over the recomputed output pixels only (the CBinfer scheme).
// Per batch item n and group g: Y[m, q] = act(sum_k W[m, k] * patch_q[k] + B[m]) for m in the group's output
// channels and q in the item's pixel list, where patch_q is the im2col column of output pixel q gathered
// straight from X_ref_next (no im2col buffer).
//
// A thread block computes a BM x BP tile (output channels x list entries) in steps of BK taps: every thread
// loads its share of the W and patch tiles into shared memory, a barrier, every thread accumulates its
// TM x TP outputs, a barrier, repeat; then the fused bias + activation epilogue writes Y. The phases are the
// DELTA_HD functions below; gather_gemm.cu runs them with __syncthreads() between them, and the host
// emulation runs each phase for all threads of a block before the next, which is what the barriers guarantee.
//
// Each output accumulates with fmaf over k ascending from 0 (taps past K add 0*0), exactly as
// conv_accumulate() in common/delta_rules.h, so the GPU result equals that function bit for bit.
#pragma once
#include <cstdint>

#include "common/activation.h"
#include "common/delta_rules.h"
#include "common/host_device.h"
#include "cuda_common/pipeline_steps.h"

namespace deltaonnx {
namespace cuda {

struct GatherGemm {
  const float* x = nullptr;        // X_ref_next, [N][C][H][W]
  const float* weights = nullptr;  // [M][K], K = C/group * kH * kW
  const float* bias = nullptr;     // [M] or nullptr
  float* y = nullptr;              // [N][M][Ho][Wo]
  const float* z = nullptr;        // the sum input, Y's shape, added before the activation; nullptr: none
  PixelList list;
  ConvShape shape;
  int64_t batch = 0;
  ActivationParams act;
  const float* slopes = nullptr;   // PRelu slopes on the device (1 or M), or nullptr
  int64_t num_slopes = 0;
};

template <int BM_, int BP_, int BK_, int TM_, int TP_>
struct GemmTile {
  static constexpr int BM = BM_, BP = BP_, BK = BK_, TM = TM_, TP = TP_;
  static constexpr int kThreadRows = BM / TM;  // threads along output channels
  static constexpr int kThreadCols = BP / TP;  // threads along pixels (adjacent threads: adjacent pixels)
  static constexpr int kThreads = kThreadRows * kThreadCols;
  static constexpr int kALoads = BM * BK / kThreads;
  static constexpr int kBLoads = BK * BP / kThreads;
  static constexpr int kBRowsPerPass = kThreads / BP;
  static constexpr int kAStride = BM + 1;   // a_tile[k][m], padded: the transposing stores spread over banks
  static constexpr int kSharedA = BK * kAStride;
  static constexpr int kSharedB = BK * BP;  // b_tile[k][p]
  static_assert(BM % TM == 0 && BP % TP == 0, "tile must split evenly into threads");
  static_assert((BM * BK) % kThreads == 0 && (BK * BP) % kThreads == 0, "loads must split evenly");
  // A thread's B loads all fall on one pixel column, so its patch origin is computed once per block.
  static_assert(kThreads % BP == 0, "threads must cover whole B rows");
};

// Many output channels per group: 64 x 64 tiles, 4 x 4 outputs per thread.
using WideTile = GemmTile<64, 64, 16, 4, 4>;
// Few output channels per group (depthwise, first layers): 16 channels x 128 pixels.
using NarrowTile = GemmTile<16, 128, 16, 2, 4>;

// The tile config for a shape: wide when a group has more than 16 output channels.
DELTA_HD bool use_wide_tile(const ConvShape& s) { return s.out_channels_per_group() > NarrowTile::BM; }

template <class Tile>
DELTA_HD int64_t gemm_channel_blocks(const ConvShape& s) {
  return (s.out_channels_per_group() + Tile::BM - 1) / Tile::BM;
}

// Grid: x = pixel blocks, y = group * channel blocks, z = batch item.
struct GemmGrid {
  int64_t x = 0, y = 0, z = 0;
};

template <class Tile>
DELTA_HD GemmGrid gemm_grid(const GatherGemm& p) {
  GemmGrid g;
  g.x = (p.list.total + Tile::BP - 1) / Tile::BP;
  g.y = p.shape.group * gemm_channel_blocks<Tile>(p.shape);
  g.z = p.batch;
  return g;
}

// gridDim.y and gridDim.z are at most 65535.
DELTA_HD bool gather_gemm_grid_fits(const GatherGemm& p) {
  const GemmGrid g = use_wide_tile(p.shape) ? gemm_grid<WideTile>(p) : gemm_grid<NarrowTile>(p);
  return g.x <= 0x7fffffff && g.y <= 65535 && g.z <= 65535;
}

// What every thread of block (bx, by, bz) knows about it.
struct GemmBlock {
  int64_t n = 0, g = 0;
  int64_t m_begin = 0, m_end = 0;  // global output channels of this block
  int64_t p_begin = 0;             // first list entry of this block
  int64_t length = 0;              // list entries of item n
  bool dense = false;
  const float* x_group = nullptr;  // X_ref_next of item n, group g: [C/group][H][W]
};

template <class Tile>
DELTA_HD GemmBlock gemm_block(const GatherGemm& p, int64_t bx, int64_t by, int64_t bz) {
  GemmBlock b;
  const int64_t channel_blocks = gemm_channel_blocks<Tile>(p.shape);
  const int64_t mg = p.shape.out_channels_per_group();
  b.n = bz;
  b.g = by / channel_blocks;
  const int64_t mb = by - b.g * channel_blocks;
  b.m_begin = b.g * mg + mb * Tile::BM;
  b.m_end = b.g * mg + ((mb + 1) * Tile::BM < mg ? (mb + 1) * Tile::BM : mg);
  b.p_begin = bx * Tile::BP;
  b.dense = item_dense(p.list, b.n);
  b.length = item_length(p.list, b.n, b.dense);
  const int64_t plane = p.shape.y.in * p.shape.x.in;
  b.x_group = p.x + (b.n * p.shape.channels + b.g * p.shape.channels_per_group()) * plane;
  return b;
}

// A block past the end of its item's list has nothing to do (the grid is sized for dense items, since the
// lists' lengths are only known on the device). Uniform over the block, so it may return before barriers.
DELTA_HD bool gemm_block_active(const GemmBlock& b) { return b.p_begin < b.length; }

// Per-thread registers: the origin of the pixel this thread gathers for, and its accumulators.
template <class Tile>
struct GemmThread {
  bool pixel_valid = false;
  int64_t iy0 = 0, ix0 = 0;
  float acc[Tile::TM * Tile::TP];
};

template <class Tile>
DELTA_HD void gemm_thread_init(const GatherGemm& p, const GemmBlock& b, int tid, GemmThread<Tile>& t) {
  const int64_t i = b.p_begin + tid % Tile::BP;
  t.pixel_valid = i < b.length;
  if (t.pixel_valid) {
    const int64_t q = item_pixel(p.list, b.n, i, b.dense);
    const int64_t oy = q / p.shape.x.out, ox = q - oy * p.shape.x.out;
    t.iy0 = p.shape.y.input_of(oy, 0);
    t.ix0 = p.shape.x.input_of(ox, 0);
  }
  for (int e = 0; e < Tile::TM * Tile::TP; ++e) t.acc[e] = 0.f;
}

// Phase 1 (before the first barrier): this thread's share of a_tile[k][m] = W[m_begin + m][k0 + k] and
// b_tile[k][p] = patch of list entry p_begin + p at tap k0 + k; zero outside the matrices.
template <class Tile>
DELTA_HD void gemm_load(const GatherGemm& p, const GemmBlock& b, int tid, const GemmThread<Tile>& t, int32_t k0,
                        float* a_tile, float* b_tile) {
  const int32_t depth = static_cast<int32_t>(p.shape.depth());
  for (int r = 0; r < Tile::kALoads; ++r) {
    const int e = tid + r * Tile::kThreads;
    const int m = e / Tile::BK, k = e - (e / Tile::BK) * Tile::BK;
    const int64_t gm = b.m_begin + m;
    const int32_t gk = k0 + k;
    a_tile[k * Tile::kAStride + m] = (gm < b.m_end && gk < depth) ? p.weights[gm * depth + gk] : 0.f;
  }
  const int column = tid % Tile::BP;
  for (int r = 0; r < Tile::kBLoads; ++r) {
    const int k = tid / Tile::BP + r * Tile::kBRowsPerPass;
    const int32_t gk = k0 + k;
    b_tile[k * Tile::BP + column] =
        (t.pixel_valid && gk < depth) ? conv_tap(b.x_group, p.shape, gk, t.iy0, t.ix0) : 0.f;
  }
}

// Phase 2 (between the barriers): TM x TP fused multiply-adds per k. The thread owns channels
// row + i*kThreadRows and pixels col + j*kThreadCols, so adjacent threads read adjacent b_tile words.
template <class Tile>
DELTA_HD void gemm_accumulate(int tid, const float* a_tile, const float* b_tile, GemmThread<Tile>& t) {
  const int row = tid / Tile::kThreadCols, col = tid % Tile::kThreadCols;
  for (int k = 0; k < Tile::BK; ++k) {
    float a[Tile::TM], bv[Tile::TP];
    for (int i = 0; i < Tile::TM; ++i) a[i] = a_tile[k * Tile::kAStride + row + i * Tile::kThreadRows];
    for (int j = 0; j < Tile::TP; ++j) bv[j] = b_tile[k * Tile::BP + col + j * Tile::kThreadCols];
    for (int i = 0; i < Tile::TM; ++i)
      for (int j = 0; j < Tile::TP; ++j) t.acc[i * Tile::TP + j] = fmaf(a[i], bv[j], t.acc[i * Tile::TP + j]);
  }
}

// Phase 3 (after the last barrier): bias, the sum Z, activation, scatter into Y at the listed pixels.
template <class Tile>
DELTA_HD void gemm_store(const GatherGemm& p, const GemmBlock& b, int tid, const GemmThread<Tile>& t) {
  const int row = tid / Tile::kThreadCols, col = tid % Tile::kThreadCols;
  const int64_t total = p.list.total;
  for (int i = 0; i < Tile::TM; ++i) {
    const int64_t m = b.m_begin + row + i * Tile::kThreadRows;
    if (m >= b.m_end) continue;
    const ActivationParams act = activation_for_channel(p.act, p.slopes, p.num_slopes, m);
    float* y_channel = p.y + (b.n * p.shape.out_channels + m) * total;
    const float* z_channel = p.z != nullptr ? p.z + (b.n * p.shape.out_channels + m) * total : nullptr;
    for (int j = 0; j < Tile::TP; ++j) {
      const int64_t entry = b.p_begin + col + j * Tile::kThreadCols;
      if (entry >= b.length) continue;
      const int64_t q = item_pixel(p.list, b.n, entry, b.dense);
      y_channel[q] = conv_epilogue(t.acc[i * Tile::TP + j], p.bias, m, act, z_channel != nullptr ? z_channel + q : nullptr);
    }
  }
}

// After the GEMM, when the activation reads all channels of a pixel (Softmax, over all M or per group of G):
// thread (n, entry) applies it to one listed pixel of item n, whose M channels the GEMM's blocks have all stored.
DELTA_HD void channel_activation_thread(const GatherGemm& p, int64_t n, int64_t entry) {
  const bool dense = item_dense(p.list, n);
  if (entry >= item_length(p.list, n, dense)) return;
  const int64_t q = item_pixel(p.list, n, entry, dense), M = p.shape.out_channels;
  softmax_channel_groups(p.y + n * M * p.list.total + q, p.list.total, M, softmax_group_of(p.act, M));
}

}  // namespace cuda
}  // namespace deltaonnx

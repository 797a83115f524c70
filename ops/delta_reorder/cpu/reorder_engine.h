// DeltaReorder on the CPU without ORT types: NCHW memory to channel-blocked memory ([N][C/b][H][W][b], the
// library's b: common/channel_block.h) or back. Memory-bound: the transposes are the kernel table's
// block_planes and unblock_activate (no activation), register transposes of 16x16 (AVX-512) or 8x8 (AVX2) tiles,
// since a plain loop ran 2.5-4x slower than a copy at b = 16 (docs/ops.md#deltareorder).
#pragma once
#include <cstdint>
#include <vector>

#include "common/kernel_table.h"
#include "common/parallel.h"

namespace deltaonnx {

// The blocked side holds roundup(channels, block) channels (common/channel_block.h), the NCHW side `channels`.
struct ReorderShape {
  int64_t batch = 0, channels = 0, pixels = 0;  // N, C (the logical count), H * W
  int64_t block = 1;
  int64_t padded_channels() const;
};

// to_blocked: y[n][c / b][p][c % b] = x[n][c][p], and +0 in the pad lanes (channels C..roundup(C, b)-1);
// otherwise the inverse, the pad lanes dropped. x and y do not overlap. b = 1 is a copy. Bits are moved, never
// computed. Tasks of one item's channel block and a range of pixels on parallel_for.
void reorder_channels(const ReorderShape& shape, bool to_blocked, const float* x, float* y,
                      const ParallelFor& parallel_for, const KernelTable& kernels);

// The same for the pixels marked in `map` ([N][H*W], nonzero = X may have changed there) only; y holds the last
// output everywhere else (the caller copied Y_prev there, or y is Y_prev's own buffer). One task per batch item
// and channel block; the marked pixels are listed once per item. Where most pixels are marked whole planes are
// moved, unless `x_unmarked_unset` (x holds nothing at the unmarked pixels: DeltaConv's blocked_out scratch).
void reorder_marked_pixels(const ReorderShape& shape, bool to_blocked, const float* x, const uint8_t* map, float* y,
                           const ParallelFor& parallel_for, const KernelTable& kernels, bool x_unmarked_unset = false);

}  // namespace deltaonnx

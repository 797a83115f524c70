// DeltaConv's phase split: the input of one batch item, zero-padded and split into stride phases
// (space-to-depth): tap (ky, kx) of output (oy, ox) is element (oy + qy) * width + ox + qx of phase plane
// (c, py, px), with py, qy the remainder and quotient of ky*dilation by the stride. Every conv becomes stride 1
// over these planes, and a run of output pixels of one row reads, for each tap, one contiguous run of a plane:
// no gathers, no border cases. The GEMM engine builds it for strided convs, at the rows its raster panels read.
#pragma once
#include <cstdint>

#include "common/change_map.h"
#include "common/kernel_table.h"
#include "common/parallel.h"

namespace deltaonnx {

struct PhaseSplit {
  int64_t sy = 1, sx = 1, rows = 0, width = 0, plane = 0;
  const float* base = nullptr;  // set by fill_phase_split
  const float* at(int64_t c, int64_t py, int64_t px) const { return base + ((c * sy + py) * sx + px) * plane; }
};

// The split's shape for C channels through window w (no buffer yet).
PhaseSplit phase_split_geometry(int64_t C, const Window2D& w);

// Fills the split of src [C, H, W] into a buffer of the calling thread (kept across runs) and points ps.base at
// it. Only the padded rows some raster panel reads are filled (needed_rows[r] for padded row r = input row +
// pad_begin; nullptr: all): rows never read stay stale.
void fill_phase_split(PhaseSplit& ps, const float* src, int64_t C, const Window2D& w, const uint8_t* needed_rows,
                      const KernelTable& k, const ParallelFor& parallel_for);

}  // namespace deltaonnx

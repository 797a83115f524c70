// Change maps on the CPU: per-pixel uint8 masks of one batch item, and what the ops derive from them.
#pragma once
#include <cstdint>
#include <vector>

#include "common/geometry.h"

namespace deltaonnx {

// A 2-D sliding window (Conv or Pool) resolved for one input size.
struct Window2D {
  Axis y, x;
  int64_t in_pixels() const { return y.in * x.in; }
  int64_t out_pixels() const { return y.out * x.out; }
};

// out[oy*Wo + ox] = 1 iff some tap of the window of (oy, ox) inside the input reads a marked pixel of `in`
// (rule 4: the OR-pool of the input change map with the op's own window). Separable: rows, then columns.
// `scratch` grows as needed. Returns the number of marked output pixels; once more than stop_above are marked
// (the dense rule will mark everything) it stops there and returns that count, the later rows of `out` unwritten.
int64_t or_pool_mask(const uint8_t* in, const Window2D& w, uint8_t* out, std::vector<uint8_t>& scratch,
                     int64_t stop_above = INT64_MAX);

// A run of marked pixels in one row: [x_begin, x_end) of row y.
struct RowRun {
  int64_t y;
  int64_t x_begin;
  int64_t x_end;
};

// The number of nonzero bytes of map[0, n).
int64_t count_marks(const uint8_t* map, int64_t n);

// Appends the runs of nonzero bytes of a [height, width] mask, rows in order.
void mask_runs(const uint8_t* mask, int64_t height, int64_t width, std::vector<RowRun>& runs);

}  // namespace deltaonnx

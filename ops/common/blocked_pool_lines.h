// DeltaPool's whole item on blocked lines (kernel_table.h blocked_max_pool), written once over a vector type of
// one line (a pixel's `block` channels) and instantiated by the AVX-512 (b = 16) and AVX2 (b = 8) tables with
// their Lines traits: load/store/set1, a plain max, and the NaN carried beside it (ordered_lanes / keep_ordered /
// nan_unless_ordered). A block of several vectors runs vector by vector; one that is not a multiple of the vector
// runs the scalar table's kernel.
//
// Why the NaN goes beside the max: vmaxps drops a NaN that an earlier tap brought into the accumulator, so a
// NaN-keeping max must test the accumulator before every tap (a compare and a masked max, both on the
// accumulator's chain). Here the max is the plain one and a lane mask of "no NaN yet" is kept with one compare
// per pair of taps (a NaN in either operand clears it), off that chain; the lanes it cleared become NaN once, at
// the store. ORT's NCHWc MaxPool runs the plain max alone and loses the NaN (docs/design.md#deltapool).
#pragma once
#include <algorithm>
#include <cstdint>

#include "common/geometry.h"
#include "common/kernel_table.h"

namespace deltaonnx {

// Accumulates the max over `count` taps of N outputs: output n's tap t is the line at base + n * step + offsets[t]
// (floats). acc / ordered are the outputs' running max and "no NaN yet" lanes.
template <class L, int N>
inline void max_lines(const float* base, int64_t step, const int64_t* offsets, int64_t count, typename L::V* acc,
                      typename L::M* ordered) {
  int64_t t = 0;
  for (; t + 2 <= count; t += 2) {
    const float *p = base + offsets[t], *q = base + offsets[t + 1];
#pragma GCC unroll 8
    for (int n = 0; n < N; ++n) {
      const typename L::V u = L::load(p + n * step), v = L::load(q + n * step);
      ordered[n] = L::keep_ordered(ordered[n], u, v);
      acc[n] = L::max(acc[n], L::max(u, v));
    }
  }
  if (t < count) {
    const float* p = base + offsets[t];
#pragma GCC unroll 8
    for (int n = 0; n < N; ++n) {
      const typename L::V u = L::load(p + n * step);
      ordered[n] = L::keep_ordered(ordered[n], u, u);
      acc[n] = L::max(acc[n], u);
    }
  }
}

template <class L, int N>
inline void start_lines(typename L::V* acc, typename L::M* ordered) {
#pragma GCC unroll 8
  for (int n = 0; n < N; ++n) {
    acc[n] = L::set1(kLowestFloat);
    ordered[n] = L::ordered_lanes();
  }
}

// N outputs at out + n * out_step, each the max of the lowest float and its taps (max_lines), NaN where a tap was NaN.
template <class L, int N>
inline void pool_lines(const float* base, int64_t step, const int64_t* offsets, int64_t count, float* out,
                       int64_t out_step) {
  typename L::V acc[N];
  typename L::M ordered[N];
  start_lines<L, N>(acc, ordered);
  max_lines<L, N>(base, step, offsets, count, acc, ordered);
#pragma GCC unroll 8
  for (int n = 0; n < N; ++n) L::store(out + n * out_step, L::nan_unless_ordered(acc[n], ordered[n]));
}

// Consecutive outputs [0, n) (at out + j * out_step): output j's taps at base + j * step + offsets[t]; four at a
// time (independent chains), then one by one.
template <class L>
inline void pool_line_run(const float* base, int64_t step, const int64_t* offsets, int64_t count, int64_t n,
                          float* out, int64_t out_step) {
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) pool_lines<L, 4>(base + j * step, step, offsets, count, out + j * out_step, out_step);
  for (; j < n; ++j) pool_lines<L, 1>(base + j * step, step, offsets, count, out + j * out_step, out_step);
}

// Output rows [oy0, oy1) of the kLanes channels at x / y whose pixels lie P floats apart (lines of P = block
// floats; a block of several vectors runs once per vector). Per output row: the rows of its window inside the
// input; then either each output's taps directly (kh x kw loads an output), or, where that reads less (SPPF's 5x5 at
// stride 1), separably: the max over those rows of every input column into `columns` (NaN kept, kLanes floats a
// column), then each output's max over its kw columns. Outputs whose window leaves the input at the left or right
// take their inside taps one output at a time.
template <class L>
void max_pool_vector_rows(const float* x, const Axis& ay, const Axis& ax, int64_t P, int64_t oy0, int64_t oy1,
                          float* y, float* columns) {
  constexpr int64_t B = L::kLanes;
  const int64_t W = ax.in, Wo = ax.out, line_row = W * P;
  // Interior outputs [lo, hi): every horizontal tap inside the input.
  int64_t lo = 0, hi = Wo;
  while (lo < Wo && ax.input_of(lo, 0) < 0) ++lo;
  while (hi > lo && ax.input_of(hi - 1, ax.kernel - 1) >= W) --hi;
  constexpr int kMaxTaps = 64;  // offsets kept on the stack; longer windows go in chunks of taps
  int64_t offsets[kMaxTaps];
  for (int64_t oy = oy0; oy < oy1; ++oy) {
    float* out = y + oy * Wo * P;
    int64_t rows[kMaxTaps], row_count = 0;  // offsets of the window's rows inside the input
    bool rows_fit = true;
    for (int64_t ky = 0; ky < ay.kernel; ++ky) {
      const int64_t iy = ay.input_of(oy, ky);
      if (iy < 0 || iy >= ay.in) continue;
      if (row_count == kMaxTaps) rows_fit = false;
      else rows[row_count++] = iy * line_row;
    }
    const int64_t interior = hi - lo, taps = row_count * ax.kernel;
    // Separable where it reads less: the column pass reads every input column once per window row, the row pass
    // kw columns per output (an edge output its inside ones), against kh x kw taps per output read directly.
    const bool separable = rows_fit && row_count > 1 && ax.kernel > 1 && ax.kernel <= kMaxTaps &&
                           W * row_count + Wo * ax.kernel < Wo * taps;
    // Output ox from its taps in columns [k0, k1) of the window; from the column maxima when separable, else from
    // the input in chunks of kMaxTaps offsets.
    const auto one_output = [&](int64_t ox, int64_t k0, int64_t k1) {
      typename L::V acc[1];
      typename L::M ordered[1];
      start_lines<L, 1>(acc, ordered);
      int64_t count = 0;
      if (separable) {
        for (int64_t kx = k0; kx < k1; ++kx) offsets[count++] = ax.input_of(ox, kx) * B;
        max_lines<L, 1>(columns, 0, offsets, count, acc, ordered);
      } else {
        for (int64_t ky = 0; ky < ay.kernel; ++ky) {
          const int64_t iy = ay.input_of(oy, ky);
          if (iy < 0 || iy >= ay.in) continue;
          for (int64_t kx = k0; kx < k1; ++kx) {
            if (count == kMaxTaps) {
              max_lines<L, 1>(x, 0, offsets, count, acc, ordered);
              count = 0;
            }
            offsets[count++] = iy * line_row + ax.input_of(ox, kx) * P;
          }
        }
        max_lines<L, 1>(x, 0, offsets, count, acc, ordered);
      }
      L::store(out + ox * P, L::nan_unless_ordered(acc[0], ordered[0]));
    };
    // The edge outputs take their inside columns only (none: the lowest float, a window wholly in the padding).
    const auto edges = [&] {
      const auto edge = [&](int64_t ox) {
        int64_t k0 = 0, k1 = ax.kernel;
        while (k0 < k1 && ax.input_of(ox, k0) < 0) ++k0;
        while (k1 > k0 && ax.input_of(ox, k1 - 1) >= W) --k1;
        one_output(ox, k0, k1);
      };
      for (int64_t ox = 0; ox < lo; ++ox) edge(ox);
      for (int64_t ox = hi; ox < Wo; ++ox) edge(ox);
    };
    if (separable) {
      // Column pass: columns[c] = max over the window's rows of input column c (NaN kept).
      pool_line_run<L>(x, P, rows, row_count, W, columns, B);
      edges();
      // Row pass over the columns: output lo + j reads column input_of(lo + j, kx).
      for (int64_t kx = 0; kx < ax.kernel; ++kx) offsets[kx] = ax.input_of(lo, kx) * B;
      pool_line_run<L>(columns, ax.stride * B, offsets, ax.kernel, interior, out + lo * P, P);
      continue;
    }
    edges();
    if (rows_fit && taps <= kMaxTaps) {  // the taps of output lo, then the same moved stride lines on
      for (int64_t r = 0, t = 0; r < row_count; ++r)
        for (int64_t kx = 0; kx < ax.kernel; ++kx) offsets[t++] = rows[r] + ax.input_of(lo, kx) * P;
      pool_line_run<L>(x, ax.stride * P, offsets, taps, interior, out + lo * P, P);
    } else {
      for (int64_t ox = lo; ox < hi; ++ox) one_output(ox, 0, ax.kernel);
    }
  }
}

// The kernel-table entry: each vector of a line in turn (AVX2 on lines of 16 floats: two passes); a block that is not
// a multiple of the vector runs the scalar kernel.
template <class L>
void blocked_max_pool_lines(const float* x, const Axis& ay, const Axis& ax, int64_t block, int64_t oy0, int64_t oy1,
                            float* y, float* columns) {
  if (block % L::kLanes != 0) return scalar_kernel_table().blocked_max_pool(x, ay, ax, block, oy0, oy1, y, columns);
  for (int64_t lane = 0; lane < block; lane += L::kLanes)
    max_pool_vector_rows<L>(x + lane, ay, ax, block, oy0, oy1, y + lane, columns);
}

}  // namespace deltaonnx

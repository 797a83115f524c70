// DeltaPool (MaxPool) on the CPU without ORT types: rules 1-5 of docs/design.md with the pool's window.
#pragma once
#include <cstdint>
#include <string>

#include "common/delta_state.h"
#include "common/parallel.h"
#include "common/window_spec.h"

namespace deltaonnx {

struct PoolSpec {
  WindowSpec window;
  float threshold = 0.f;
  float dense_fraction = 0.5f;
  // The change rule of the threshold: the pixel rule, or the block rule (GateSpec::make("block", threshold, ...)).
  GateSpec gate = pixel_rule();
  std::string validate() const;
};

struct PoolRun : DeltaRun {
  const KernelTable* kernels = nullptr;  // nullptr: the table in use
};

// Max over the window's taps inside the input, and at least the lowest float: a window with no such tap gives
// it (as ORT), and so does one whose taps are all -inf (ORT's MaxPool gives -inf there, except at some borders).
// NaN in a window gives NaN. Separable (a row pass into a buffer, then a column pass) where that reads less,
// else each output's whole window; the loops are the kernel table's max_taps. run.block > 1: blocked tensors
// (docs/ops.md#blocked-layout), the change test on lines and the max over b-float lines: at a horizontal stride
// of 1 the same passes over rows of W*b floats, else output by output; an item recomputed everywhere plans no
// runs and goes to the kernel table's blocked_max_pool (common/blocked_pool_lines.h).
void run_delta_pool(const PoolSpec& spec, const PoolRun& run, const ParallelFor& parallel_for,
                    RunStats* stats = nullptr);

}  // namespace deltaonnx

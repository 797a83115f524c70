// DeltaPool (MaxPool) on the CPU without ORT types: rules 1-5 of DESIGN.md with the pool's window.
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
  std::string validate() const;
};

struct PoolRun : DeltaRun {
  const KernelTable* kernels = nullptr;  // nullptr: the table in use
};

// Max over the window's taps inside the input; a window with no such tap gives the lowest float (as ORT);
// NaN in a window gives NaN.
void run_delta_pool(const PoolSpec& spec, const PoolRun& run, const ParallelFor& parallel_for,
                    RunStats* stats = nullptr);

}  // namespace deltaonnx

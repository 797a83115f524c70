// DeltaGate's engine, free of ORT types: the input gate of docs/design.md#rule-1 to #rule-3 in its pixel form (rule 2) or
// its block form (rule 2b), for one batch item. The numpy reference is reference.delta_gate; every variant of
// the kernel table and the CUDA kernel round exactly as it does.
#pragma once
#include <cstdint>
#include <vector>

#include "common/kernel_table.h"
#include "common/parallel.h"
#include "delta_gate/gate_spec.h"

namespace deltaonnx {

struct GateItem {
  const float* x = nullptr;      // [C, H, W]
  const float* x_ref = nullptr;  // [C, H, W], nullptr without state (rule 1: everything changed)
  const uint8_t* marks = nullptr;  // [H, W] external change map at frame resolution, nullptr: all marked
  float* x_gated = nullptr;      // [C, H, W]: the gated frame = the next X_ref; may equal x_ref (in place);
                                 // nullptr: only the verdict (map_out), nothing else written (gate_probe.cc)
  uint8_t* map_out = nullptr;    // [H, W]: 1 where x_gated took X's value
  int64_t channels = 0, height = 0, width = 0;
};

// Runs the gate on one batch item; returns the number of changed pixels.
int64_t run_gate_item(const GateSpec& spec, const GateItem& item, const KernelTable& kernels);

// A whole batch: x, x_ref (nullptr: no state), map_in (nullable; per_block: at block resolution), x_gated
// and map_out point at the batch's tensors. Items run through parallel_for. Returns the changed pixels.
struct GateRun {
  int64_t batch = 0, channels = 0, height = 0, width = 0;
  const float* x = nullptr;
  const float* x_ref = nullptr;
  const uint8_t* map_in = nullptr;
  bool map_per_block = false;
  float* x_gated = nullptr;
  uint8_t* map_out = nullptr;
};
int64_t run_gate(const GateSpec& spec, const GateRun& run, const KernelTable& kernels, const ParallelFor& parallel_for);

}  // namespace deltaonnx

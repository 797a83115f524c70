// DeltaGate's engine, free of ORT types: the input gate of DESIGN.md rules 1-3 in its pixel form (rule 2) or
// its block form (rule 2b), for one batch item. The numpy reference is reference.delta_gate; every variant of
// the kernel table and the CUDA kernel round exactly as it does.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/kernel_table.h"
#include "common/parallel.h"

namespace deltaonnx {

// The defaults of the block gate (reference.DEFAULT_GATE_BLOCK, DEFAULT_GATE_HARD): k, and tau_hard =
// kDefaultGateHardFactor x tau when gate_hard is not given.
constexpr int64_t kDefaultGateBlock = 8;
constexpr float kDefaultGateHardFactor = 3.f;

struct GateSpec {
  bool block_rule = true;  // false: the pixel rule (k = 1, tau_hard = tau, no block means)
  int64_t block = kDefaultGateBlock;  // k of the k x k blocks (edge blocks smaller)
  float tau = 0.f;         // bound on each channel's block mean of X - X_ref
  float hard = 0.f;        // bound on every pixel's max_c |X - X_ref|

  // The spec a node's attributes give: rule "pixel" or "block"; hard < 0 means default_hard_factor x tau.
  // Returns an error message naming the attribute, or "" when valid.
  static std::string make(const std::string& rule, float tau, int64_t block, float hard, GateSpec* out);
};

struct GateItem {
  const float* x = nullptr;      // [C, H, W]
  const float* x_ref = nullptr;  // [C, H, W], nullptr without state (rule 1: everything changed)
  const uint8_t* marks = nullptr;  // [H, W] external change map at frame resolution, nullptr: all marked
  float* x_gated = nullptr;      // [C, H, W]: the gated frame = the next X_ref; may equal x_ref (in place)
  uint8_t* map_out = nullptr;    // [H, W]: 1 where x_gated took X's value
  int64_t channels = 0, height = 0, width = 0;
};

// Runs the gate on one batch item; returns the number of changed pixels.
int64_t run_gate_item(const GateSpec& spec, const GateItem& item, const KernelTable& kernels);

// An external map at block resolution [ceil(H/k), ceil(W/k)] spread to frame resolution [H, W].
void spread_block_map(const uint8_t* cells, int64_t height, int64_t width, int64_t block, uint8_t* marks);

// Whether an external map of [map_h, map_w] fits a frame of [height, width]: at frame resolution, or (block
// rule, k > 1) one cell per block. Returns "" (and sets *per_block) or an error message.
std::string check_gate_map(const GateSpec& spec, int64_t height, int64_t width, int64_t map_h, int64_t map_w,
                           bool* per_block);

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

// DeltaConv on the CPU without ORT types: the attributes fixed when the session is created, the weights
// packed once for the GEMM micro kernels, and one run over a batch (docs/design.md rules 1-5).
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/activation.h"
#include "common/conv_activation.h"
#include "common/change_map.h"
#include "common/delta_state.h"
#include "common/window_spec.h"
#include "common/kernel_table.h"
#include "common/parallel.h"

namespace deltaonnx {

struct ConvSpec {
  WindowSpec window;
  int64_t out_channels = 0;          // M
  int64_t in_channels_per_group = 0; // C / group
  int64_t group = 1;
  ConvActivation activation;          // resolved once (common/conv_activation.h), as on every provider
  float threshold = 0.f;
  float dense_fraction = 0.5f;
  // The change rule of the threshold: the pixel rule, or the block rule (GateSpec::make("block", threshold, ...)).
  GateSpec gate = pixel_rule();

  // Empty when valid, else what is wrong (attribute names as in the ONNX node).
  std::string validate() const;
  // The per-element activation of output channel m (PRelu slopes differ per channel).
  ActivationParams activation_for(int64_t m) const { return activation.for_channel(m); }
};

// Weights laid out for the micro kernels: per group, panels of gemm_mr output channels, each [K][gemm_mr]
// (zero rows past the group's channels); groups of one output channel (depthwise) keep plain [Mg][K] rows.
class PackedConvWeights {
 public:
  PackedConvWeights(const ConvSpec& spec, const float* weights, const KernelTable& kernels);
  int64_t depth() const { return depth_; }           // K = C/group * kH * kW
  bool row_layout() const { return row_layout_; }    // true: gemm_row over plain rows
  int64_t panels_per_group() const { return panels_; }
  const float* panel(int64_t g, int64_t p) const { return data_.data() + (g * panels_ + p) * depth_ * mr_; }
  const float* row(int64_t m) const { return data_.data() + m * depth_; }
  const KernelTable& kernels() const { return *kernels_; }  // the micro kernels this packing is for

 private:
  const KernelTable* kernels_;
  int64_t depth_ = 0, panels_ = 0, mr_ = 1;
  bool row_layout_ = false;
  std::vector<float> data_;
};

// One run over a batch (common/delta_state.h), with the bias (nullptr when absent). out_block > 1: layout
// "blocked_out", X and X_ref NCHW, Y and Y_prev blocked by it (docs/ops.md#blocked-layout).
// z, map_z: the sum input (Y's shape and layout) and its change map [N,1,Ho,Wo], or nullptr (docs/design.md#deltaconv).
struct ConvRun : DeltaRun {
  const float* bias = nullptr;
  int64_t out_block = 1;
  const float* z = nullptr;
  const uint8_t* map_z = nullptr;
};

// A dense engine for whole batch items: y [M, Ho, Wo] = act(conv(src [C, H, W]) + bias + z) for an item recomputed
// everywhere (z: the item's sum, or nullptr). False leaves the item to the engine's own kernels. The CPU EP's
// kernel passes ORT's NCHWc Conv (delta_conv/cpu/nchwc_dense_conv.h). With ConvRun::out_block > 1 it writes y blocked.
// A reference (common/function_ref.h): the caller's lambda outlives the run.
using DenseItemConv = FunctionRef<bool(const float* src, const float* z, float* y)>;

// Rule 1 (no state): every item recomputed whole by `dense`, so nothing needs a plan: map_out marks everything, a kept
// reference becomes the item, the engine writes Y (y_channels per item: M, or roundup(M, b) on a blocked output side).
// A stateless run's every op (docs/design.md#stateless-runs). False when the engine declines an item (its layout
// check failed): the caller then runs every item the general way, which writes the same.
bool run_items_whole(const ConvSpec& spec, const Window2D& w, const ConvRun& run, int64_t block, int64_t y_channels,
                     const ParallelFor& parallel_for, RunStats* stats, const DenseItemConv& dense);

void run_delta_conv(const ConvSpec& spec, const PackedConvWeights& weights, const ConvRun& run,
                    const ParallelFor& parallel_for, RunStats* stats = nullptr, const DenseItemConv* dense = nullptr);

}  // namespace deltaonnx

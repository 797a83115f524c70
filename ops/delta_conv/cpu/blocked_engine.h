// DeltaConv on blocked tensors (attribute layout = "blocked", docs/ops.md#blocked-layout): X, X_ref [C/b][H][W][b]
// and Y, Y_prev [M/b][Ho][Wo][b] per batch item, so one pixel's b channels are one line; group 1, or depthwise
// (group = C = M: an output's block cb reads its window's block cb alone, kernel_table.h blocked_depthwise_pixels).
// The steps of docs/decisions/nchwc-exchange.md: the change test of the (marked) input pixels line by line and rule 3's
// reference move, the or-pool to the output map (rule 4, shared with the NCHW engine), then the recomputed outputs
// times the blocked weights with bias and activation in the store: those whose windows lie inside X read where
// they lie, the border's patches gathered into tiles of lines. Items recomputed everywhere go to the dense engine
// (ORT's NCHWc Conv, no reorders) when one is given.
#pragma once
#include <cstdint>
#include <vector>

#include "delta_conv/cpu/conv_engine.h"

namespace deltaonnx {

// W [M, C, kH, kW] (group 1) as rows of the pixel GEMM: row (cb, tap, lane) holds input channel cb*b + lane at
// tap (ky*kW + kx) for all M output channels, the order in which a window's lines are listed. A depthwise W
// [C, 1, kH, kW] (group = C = M) as [C/b][kH*kW][b]: line (cb, tap) holds the b channels' weights at that tap.
class BlockedConvWeights {
 public:
  // real_in_channels: a padded conv's logical C (pad_conv_channels), whose last block's pad lanes the GEMM skips
  // (0: every lane real).
  BlockedConvWeights(const ConvSpec& spec, const float* weights, int64_t block, int64_t real_in_channels = 0);
  int64_t block() const { return block_; }
  int64_t lines() const { return lines_; }  // (C/b) * kH * kW: a patch's lines
  // The last tail_lines() lines (the last channel block's taps) hold tail_lanes() real lanes (group 1).
  int64_t tail_lines() const { return tail_lines_; }
  int64_t tail_lanes() const { return tail_lanes_; }
  bool depthwise() const { return depthwise_; }
  // The GEMM's row (line, lane); a depthwise conv's weights from line `line` (row(0, 0): all of them).
  const float* row(int64_t line, int64_t lane) const {
    return data_.data() + (line * block_ + lane) * (depthwise_ ? 1 : out_);
  }

 private:
  int64_t block_ = 1, lines_ = 0, out_ = 0, tail_lines_ = 0, tail_lanes_ = 0;
  bool depthwise_ = false;
  std::vector<float> data_;
};

// A blocked conv whose C or M is no multiple of b as the blocked engines run it (docs/ops.md#blocked-layout): its
// channels padded to roundup(., b) with zero weights (a depthwise conv's group with them) and PRelu's slopes with
// zeros, so every line is whole. Its outputs past M are act(0 + 0) = 0 (zero bias there too): the op definition
// refuses an activation with act(0) != 0 on a padded output. With C and M multiples of b: the conv as it is.
struct PaddedConv {
  ConvSpec spec;
  std::vector<float> weights;  // [roundup(M, b), roundup(C, b) / group, kH, kW]
};
PaddedConv pad_conv_channels(const ConvSpec& spec, const float* weights, int64_t block);
ConvSpec padded_conv_spec(const ConvSpec& spec, int64_t block);  // pad_conv_channels' spec alone

// One run over a batch whose X, X_ref, Y_prev, Y and X_ref_next are blocked by weights.block(); maps are per
// pixel as in every layout. dense: y [M/b][Ho][Wo][b] = act(conv(src blocked) + bias) for an item recomputed
// everywhere, or nullptr / false for the tile engine. spec, weights and run.bias are the padded conv's
// (pad_conv_channels): C and M multiples of b.
void run_blocked_delta_conv(const ConvSpec& spec, const BlockedConvWeights& weights, const ConvRun& run,
                            const ParallelFor& parallel_for, RunStats* stats = nullptr,
                            const DenseItemConv* dense = nullptr);

}  // namespace deltaonnx

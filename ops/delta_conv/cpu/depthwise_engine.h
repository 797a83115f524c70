// Depthwise DeltaConv on the CPU (group == C == M: output channel c reads input channel c alone). The GEMM path
// has K = kH*kW (9 for 3x3) there, too short to pay for its panels; this engine convolves each channel directly
// over the runs of recomputed output pixels: the taps of a run are contiguous input (stride 1, straight from the
// source) or contiguous stride phases of a few input rows (stride > 1), accumulated with vector FMAs by the
// kernel table's depthwise_run, bias and activation fused.
#pragma once
#include <cstdint>
#include <vector>

#include "common/activation.h"
#include "common/change_map.h"
#include "common/parallel.h"
#include "delta_conv/cpu/conv_engine.h"

namespace deltaonnx {

// True for the convolutions this engine computes: one input and one output channel per group (channel
// multipliers > 1 stay on the GEMM path).
bool depthwise_applies(const ConvSpec& spec, const PackedConvWeights& weights);

// Computes the outputs of one batch item marked in out_flags ([Ho, Wo], the recompute plan = map_out) from
// src ([C, H, W], the recompute source) into y ([M, Ho, Wo]); pixels not marked are not written. acts holds
// the activation of each output channel, bias M values or nullptr. Returns false, having done nothing, when
// the conv is not depthwise (depthwise_applies).
bool run_depthwise_item(const ConvSpec& spec, const PackedConvWeights& weights, const Window2D& w, const float* src,
                        const uint8_t* out_flags, float* y, const float* bias,
                        const std::vector<ActivationParams>& acts, const ParallelFor& parallel_for);

}  // namespace deltaonnx

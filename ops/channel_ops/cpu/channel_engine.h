// The CPU loops of DeltaGlobalAveragePool and DeltaChannelScale (channel_ops/channel_step.h), ORT-free: one plane
// ([pixels][lane] floats of one item) per parallel task, the lane a compile-time count where it is 1, 4, 8 or 16 so
// the inner loops are whole vectors.
#pragma once
#include "channel_ops/channel_step.h"
#include "common/parallel.h"

namespace deltaonnx {

// y [N, C]: each channel's mean, summed over the pixels in four interleaved partial sums.
void global_pool(const GlobalPoolStep& step, const ParallelFor& parallel_for);

// y = x times each channel's scale, pad lanes 0.
void channel_scale(const ChannelScaleStep& step, const ParallelFor& parallel_for);

}  // namespace deltaonnx

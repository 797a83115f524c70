// DeltaConv's sum input (docs/design.md#deltaconv): Y = act(conv(X_ref_next) + B + Z). The NCHW and blocked_out
// engines write conv + B at the recomputed pixels with their activation left out; this pass then adds Z and
// applies the activation there, in Y's layout (NCHW, or blocked by `block`: [M/b][plane][b]). The blocked engine
// adds Z in its pixel GEMM's store instead, and the dense path of the blocked layouts passes Z to ORT's NCHWc Conv
// (its Sum input; delta_conv/cpu/nchwc_dense_conv.h).
#pragma once
#include <cstdint>
#include <vector>

#include "common/activation.h"
#include "common/change_map.h"
#include "common/kernel_table.h"
#include "common/parallel.h"

namespace deltaonnx {

// y, z: one item's [M, plane] (or blocked); flags [plane]: the recomputed pixels (all of them when recompute ==
// plane); acts: M per-channel activations. runs: scratch.
void add_sum_activate(const KernelTable& k, float* y, const float* z, const uint8_t* flags, int64_t channels,
                      int64_t plane, int64_t block, const ActivationParams* acts, int64_t recompute,
                      const ParallelFor& parallel_for, std::vector<RowRun>& runs);

}  // namespace deltaonnx

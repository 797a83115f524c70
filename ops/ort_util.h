// What the CPU op kernels need from ORT beyond the shared op definition (op_definition/): ORT's intra-op
// thread pool as the engines' ParallelFor, and a run's tensors handed to the ORT-free engines.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <vector>

#include "common/delta_state.h"
#include "common/parallel.h"
#include "op_definition/ort_tensors.h"

namespace deltaonnx {

// ORT's intra-op thread pool as the engines' ParallelFor.
ParallelFor ort_parallel_for(const Ort::KernelContext& ctx);

// The outputs of a Delta op for one run, allocated from ORT: Y; X_ref_next (empty when the reference is
// dropped, absent when the node leaves it out); map_out (in `fallback` when the node leaves it out).
struct DeltaOutputs {
  float* y = nullptr;
  float* x_ref_next = nullptr;
  uint8_t* map_out = nullptr;
};
DeltaOutputs delta_outputs(Ort::KernelContext& ctx, const std::vector<int64_t>& xs, const std::vector<int64_t>& ys,
                           const StateInputs& st, std::vector<uint8_t>& fallback);

// Fills the shared fields of a run from X (shape xs, data x), the state inputs and the outputs.
void fill_delta_run(DeltaRun& run, const std::vector<int64_t>& xs, const float* x, const StateInputs& st,
                    const DeltaOutputs& out);

}  // namespace deltaonnx

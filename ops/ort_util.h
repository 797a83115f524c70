// What the CPU op kernels need from ORT beyond the shared op definition (op_definition/): ORT's intra-op
// thread pool as the engines' ParallelFor, and a run's tensors handed to the ORT-free engines.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <cstdint>

#include "common/delta_state.h"
#include "common/parallel.h"
#include "op_definition/ort_tensors.h"

namespace deltaonnx {

// ORT's intra-op thread pool as the engines' ParallelFor.
ParallelFor ort_parallel_for(const Ort::KernelContext& ctx);

// The outputs of a Delta op for one run, allocated from ORT: Y; X_ref_next (empty when the reference is
// dropped, absent when the node leaves it out); map_out (in the calling thread's scratch when the node leaves it
// out: valid until the thread's next run).
struct DeltaOutputs {
  float* y = nullptr;
  float* x_ref_next = nullptr;
  uint8_t* map_out = nullptr;
};
DeltaOutputs delta_outputs(Ort::KernelContext& ctx, const Shape& xs, const Shape& ys, const StateInputs& st);

// The fast exit of a run whose change map marks nothing (X of shape xs, Y of shape ys), with state and no sum
// marks (map_z nullptr or all 0): nothing is recomputed (rule 4), so map_out is all 0, Y is Y_prev and X_ref_next
// is X_ref (copied unless bound in place), as the engines would leave them, without their setup. Returns false,
// writing nothing, for any other run.
bool carry_unmarked_run(const StateInputs& st, const DeltaOutputs& out, const uint8_t* map_z, const Shape& xs,
                        const Shape& ys);

// Fills the shared fields of a run from X (shape xs, data x), the state inputs and the outputs.
void fill_delta_run(DeltaRun& run, const Shape& xs, const float* x, const StateInputs& st,
                    const DeltaOutputs& out);

}  // namespace deltaonnx

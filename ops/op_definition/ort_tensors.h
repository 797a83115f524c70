// Reading a Delta op's tensors from ORT's kernel context, the same on every execution provider (the data
// pointers are the provider's: host memory on the CPU EP, device memory on the CUDA EP).
#pragma once
#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <vector>

#include "op_definition/op_status.h"
#include "op_definition/state_decision.h"

namespace deltaonnx {

// Optional input `index`: nullptr when the node leaves it out (absent or empty name).
inline const OrtValue* optional_input(const Ort::KernelContext& ctx, size_t index) {
  if (index >= ctx.GetInputCount()) return nullptr;
  return static_cast<const OrtValue*>(ctx.GetInput(index));
}

inline std::vector<int64_t> shape_of(const OrtValue* value) {
  return Ort::ConstValue(value).GetTensorTypeAndShapeInfo().GetShape();
}

// X as a 4-D NCHW tensor; throws UserError otherwise.
std::vector<int64_t> input_shape_4d(const Ort::KernelContext& ctx, size_t index, const char* name);

// The state inputs of one run with rule 1 applied.
struct StateInputs {
  bool has_state = false;
  bool reference_dropped = false;
  bool map_given = false;          // the node has a change map input (its data may be null when it is empty)
  const float* x_ref = nullptr;    // with state and a kept reference
  const float* y_prev = nullptr;   // with state
  const uint8_t* map_in = nullptr;
};

// Reads them for input shape xs and output shape ys; errors are UserError.
StateInputs read_state_inputs(const Ort::KernelContext& ctx, size_t x_ref_index, size_t y_prev_index,
                              size_t map_index, const std::vector<int64_t>& xs, const std::vector<int64_t>& ys,
                              float threshold);

// DeltaConv's sum input Z and its change map map_z (op_definition/sum_input.h), both nullptr when the node has none;
// shapes checked against the output shape ys (UserError; on a blocked output side ys holds roundup(M, b) channels,
// and so must Z).
struct SumInputs {
  const float* z = nullptr;
  const uint8_t* map_z = nullptr;
};
SumInputs read_sum_inputs(const Ort::KernelContext& ctx, size_t z_index, size_t map_index,
                          const std::vector<int64_t>& ys);

// DeltaReorder's optional state (docs/ops.md#deltareorder): y_prev and map_in when both are given, Y_prev has Y's
// shape ys and the map is [N,1,H,W] of X (then only marked pixels are redone); y_prev null otherwise (every pixel:
// an empty or other-shaped Y_prev is rule 1). A non-empty map of another shape is a UserError.
struct ReorderState {
  const float* y_prev = nullptr;
  const uint8_t* map_in = nullptr;
};
ReorderState read_reorder_state(const Ort::KernelContext& ctx, const std::vector<int64_t>& xs,
                                const std::vector<int64_t>& ys);

}  // namespace deltaonnx

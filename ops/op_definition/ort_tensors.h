// Reading a Delta op's tensors from ORT's kernel context, the same on every execution provider (the data
// pointers are the provider's: host memory on the CPU EP, device memory on the CUDA EP). A run reads each input,
// each shape and each data pointer once (every one is a call through ORT's API table, and a shape query allocates
// inside ORT), and holds shapes inline (op_definition/tensor_shape.h): no allocation on the steady-state path.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <array>
#include <cstdint>

#include "op_definition/op_status.h"
#include "op_definition/state_decision.h"
#include "op_definition/tensor_shape.h"

namespace deltaonnx {

// The shape of a tensor value.
Shape shape_of(const OrtValue* value);

// The inputs of one run, each fetched once, their shapes on first use.
class KernelInputs {
 public:
  static constexpr size_t kMaxInputs = 8;  // DeltaConv's; DeltaMapUnion's variadic maps are read by their own loop
  explicit KernelInputs(const Ort::KernelContext& ctx);
  // Input `index`: nullptr when the node leaves it out (absent or empty name).
  const OrtValue* value(size_t index) const { return index < count_ ? values_[index] : nullptr; }
  const Shape& shape(size_t index) const;  // of a given input
  template <class T>
  const T* data(size_t index) const {
    return Ort::ConstValue(value(index)).GetTensorData<T>();
  }

 private:
  size_t count_ = 0;
  std::array<const OrtValue*, kMaxInputs> values_{};
  mutable std::array<Shape, kMaxInputs> shapes_;
  mutable std::array<bool, kMaxInputs> shape_read_{};
};

// Output `index` of shape `shape` (nullptr inside when the node leaves it out).
inline Ort::UnownedValue output_of(Ort::KernelContext& ctx, size_t index, const Shape& shape) {
  return ctx.GetOutput(index, shape.data(), shape.size());
}

// The outputs of a Delta op's run as ORT allocates them, the same on every provider: Y (shape ys); X_ref_next (shape
// xs; nullptr when the reference is dropped, which leaves it empty, or when the node leaves it out, which only a
// dropped reference may: UserError otherwise); map_out (map_shape_of(ys); nullptr when the node leaves it out, the
// caller then supplies scratch).
struct AllocatedOutputs {
  float* y = nullptr;
  float* x_ref_next = nullptr;
  uint8_t* map_out = nullptr;
};
AllocatedOutputs allocate_delta_outputs(Ort::KernelContext& ctx, const Shape& xs, const Shape& ys,
                                        bool reference_dropped);

// X as a 4-D NCHW tensor; throws UserError otherwise.
Shape input_shape_4d(const KernelInputs& in, size_t index, const char* name);

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
StateInputs read_state_inputs(const KernelInputs& in, size_t x_ref_index, size_t y_prev_index, size_t map_index,
                              const Shape& xs, const Shape& ys, float threshold);

// DeltaConv's sum input Z and its change map map_z (op_definition/sum_input.h), both nullptr when the node has none;
// shapes checked against the output shape ys (UserError; on a blocked output side ys holds roundup(M, b) channels,
// and so must Z).
struct SumInputs {
  const float* z = nullptr;
  const uint8_t* map_z = nullptr;
};
SumInputs read_sum_inputs(const KernelInputs& in, size_t z_index, size_t map_index, const Shape& ys);

// The optional state of an op whose state is its last output (DeltaReorder, DeltaResize: inputs X, Y_prev, map_in;
// docs/ops.md#deltareorder): y_prev and map_in when rule 1 (state_decision.h decide_output_state) finds state, then
// only the outputs of marked pixels are redone; y_prev null otherwise (every pixel). A non-empty map of another
// shape than [N,1,H,W] of X is a UserError.
struct OutputState {
  const float* y_prev = nullptr;
  const uint8_t* map_in = nullptr;
};
OutputState read_output_state(const KernelInputs& in, const Shape& xs, const Shape& ys);

}  // namespace deltaonnx

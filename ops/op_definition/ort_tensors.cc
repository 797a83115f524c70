#include "op_definition/ort_tensors.h"

#include "op_definition/op_schemas.h"
#include "op_definition/sum_input.h"

namespace deltaonnx {

std::vector<int64_t> input_shape_4d(const Ort::KernelContext& ctx, size_t index, const char* name) {
  const OrtValue* value = optional_input(ctx, index);
  if (value == nullptr) throw UserError(std::string("input ") + name + " is required");
  const std::vector<int64_t> shape = shape_of(value);
  if (shape.size() != 4) throw UserError(std::string(name) + " must be 4-D NCHW, got shape " + shape_text(shape));
  return shape;
}

StateInputs read_state_inputs(const Ort::KernelContext& ctx, size_t x_ref_index, size_t y_prev_index,
                              size_t map_index, const std::vector<int64_t>& xs, const std::vector<int64_t>& ys,
                              float threshold) {
  const OrtValue* x_ref = optional_input(ctx, x_ref_index);
  const OrtValue* y_prev = optional_input(ctx, y_prev_index);
  const OrtValue* map = optional_input(ctx, map_index);
  if (y_prev == nullptr) throw UserError("the state input Y_prev is required (feed an empty tensor on the first frame)");
  StateShapes shapes;
  shapes.x = xs;
  shapes.y = ys;
  shapes.x_ref_given = x_ref != nullptr;
  if (x_ref != nullptr) shapes.x_ref = shape_of(x_ref);
  shapes.y_prev = shape_of(y_prev);
  shapes.map_given = map != nullptr;
  if (map != nullptr) shapes.map = shape_of(map);
  StateDecision decision;
  try {
    decision = decide_state(shapes, threshold);
  } catch (const std::invalid_argument& e) {
    throw UserError(e.what());
  }
  StateInputs s;
  s.has_state = decision.has_state;
  s.reference_dropped = decision.reference_dropped;
  s.map_given = map != nullptr;
  if (map != nullptr) s.map_in = Ort::ConstValue(map).GetTensorData<uint8_t>();
  if (s.has_state) {
    s.y_prev = Ort::ConstValue(y_prev).GetTensorData<float>();
    if (!s.reference_dropped) s.x_ref = Ort::ConstValue(x_ref).GetTensorData<float>();
  }
  return s;
}

SumInputs read_sum_inputs(const Ort::KernelContext& ctx, size_t z_index, size_t map_index,
                          const std::vector<int64_t>& ys) {
  const OrtValue* z = optional_input(ctx, z_index);
  const OrtValue* map = optional_input(ctx, map_index);
  SumInputs s;
  if (z == nullptr && map == nullptr) return s;
  if (z == nullptr || map == nullptr)  // the kernels refuse such a node when created; a guard for the others
    throw UserError("the sum input Z and its change map input map_z go together");
  try {
    check_sum_shapes(shape_of(z), shape_of(map), ys);
  } catch (const std::invalid_argument& e) {
    throw UserError(e.what());
  }
  s.z = Ort::ConstValue(z).GetTensorData<float>();
  s.map_z = Ort::ConstValue(map).GetTensorData<uint8_t>();
  return s;
}

ReorderState read_reorder_state(const Ort::KernelContext& ctx, const std::vector<int64_t>& xs,
                                const std::vector<int64_t>& ys) {
  const OrtValue* y_prev = optional_input(ctx, delta_reorder::kYPrev);
  const OrtValue* map = optional_input(ctx, delta_reorder::kMapIn);
  ReorderState state;
  if (map == nullptr) return state;
  const std::vector<int64_t> ms = shape_of(map), want = {xs[0], 1, xs[2], xs[3]};
  if (ms != want) {
    int64_t count = 1;
    for (int64_t d : ms) count *= d;
    if (count == 0) return state;  // an empty map says nothing: every pixel
    throw UserError("map_in must be [N,1,H,W] = " + shape_text(want) + " of X, got " + shape_text(ms));
  }
  if (y_prev == nullptr || shape_of(y_prev) != ys) return state;
  state.y_prev = Ort::ConstValue(y_prev).GetTensorData<float>();
  state.map_in = Ort::ConstValue(map).GetTensorData<uint8_t>();
  return state;
}

}  // namespace deltaonnx

#include "op_definition/ort_tensors.h"

#include <vector>

#include "op_definition/op_schemas.h"
#include "op_definition/shape_reference.h"
#include "op_definition/sum_input.h"

namespace deltaonnx {

Shape shape_of(const OrtValue* value) {
  Shape shape;
  if (shape_by_reference(value, &shape)) return shape;
  const OrtApi& api = Ort::GetApi();
  OrtTensorTypeAndShapeInfo* raw = nullptr;
  Ort::ThrowOnError(api.GetTensorTypeAndShape(value, &raw));
  const Ort::TensorTypeAndShapeInfo info(raw);  // released on every path
  const size_t rank = info.GetDimensionsCount();
  if (rank > Shape::kMaxRank) {  // never an op's 4-D tensor: read whole only to tell it apart
    std::vector<int64_t> dims(rank);
    info.GetDimensions(dims.data(), rank);
    return Shape(dims);
  }
  std::array<int64_t, Shape::kMaxRank> dims{};
  info.GetDimensions(dims.data(), rank);
  return Shape(dims.data(), rank);
}

KernelInputs::KernelInputs(const Ort::KernelContext& ctx) : count_(ctx.GetInputCount()) {
  if (count_ > kMaxInputs) throw UserError("the node has " + std::to_string(count_) + " inputs, more than the op takes");
  for (size_t i = 0; i < count_; ++i) values_[i] = static_cast<const OrtValue*>(ctx.GetInput(i));
}

const Shape& KernelInputs::shape(size_t index) const {
  if (!shape_read_[index]) {
    shapes_[index] = shape_of(value(index));
    shape_read_[index] = true;
  }
  return shapes_[index];
}

AllocatedOutputs allocate_delta_outputs(Ort::KernelContext& ctx, const Shape& xs, const Shape& ys,
                                        bool reference_dropped) {
  AllocatedOutputs out;
  out.y = output_of(ctx, 0, ys).GetTensorMutableData<float>();
  const size_t outputs = ctx.GetOutputCount();
  // A dropped reference has an empty (or absent) X_ref_next. An empty batch has null data but an output.
  bool has_ref_output = false;
  if (outputs > 1) {
    Ort::UnownedValue ref = output_of(ctx, 1, reference_dropped ? Shape{0, 0, 0, 0} : xs);
    has_ref_output = static_cast<OrtValue*>(ref) != nullptr;
    if (has_ref_output && !reference_dropped) out.x_ref_next = ref.GetTensorMutableData<float>();
  }
  if (!reference_dropped && !has_ref_output)
    throw UserError("the output X_ref_next may be left out only without an X_ref input");
  if (outputs > 2) {
    Ort::UnownedValue map = output_of(ctx, 2, map_shape_of(ys));
    if (static_cast<OrtValue*>(map) != nullptr) out.map_out = map.GetTensorMutableData<uint8_t>();
  }
  return out;
}

Shape input_shape_4d(const KernelInputs& in, size_t index, const char* name) {
  if (in.value(index) == nullptr) throw UserError(std::string("input ") + name + " is required");
  const Shape& shape = in.shape(index);
  if (shape.size() != 4) throw UserError(std::string(name) + " must be 4-D NCHW, got shape " + shape_text(shape));
  return shape;
}

StateInputs read_state_inputs(const KernelInputs& in, size_t x_ref_index, size_t y_prev_index, size_t map_index,
                              const Shape& xs, const Shape& ys, float threshold) {
  const OrtValue* x_ref = in.value(x_ref_index);
  const OrtValue* y_prev = in.value(y_prev_index);
  const OrtValue* map = in.value(map_index);
  if (y_prev == nullptr) throw UserError("the state input Y_prev is required (feed an empty tensor on the first frame)");
  StateShapes shapes;
  shapes.x = xs;
  shapes.y = ys;
  shapes.x_ref_given = x_ref != nullptr;
  if (x_ref != nullptr) shapes.x_ref = in.shape(x_ref_index);
  shapes.y_prev = in.shape(y_prev_index);
  shapes.map_given = map != nullptr;
  if (map != nullptr) shapes.map = in.shape(map_index);
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
  if (map != nullptr) s.map_in = in.data<uint8_t>(map_index);
  if (s.has_state) {
    s.y_prev = in.data<float>(y_prev_index);
    if (!s.reference_dropped) s.x_ref = in.data<float>(x_ref_index);
  }
  return s;
}

SumInputs read_sum_inputs(const KernelInputs& in, size_t z_index, size_t map_index, const Shape& ys) {
  const OrtValue* z = in.value(z_index);
  const OrtValue* map = in.value(map_index);
  SumInputs s;
  if (z == nullptr && map == nullptr) return s;
  if (z == nullptr || map == nullptr)  // the kernels refuse such a node when created; a guard for the others
    throw UserError("the sum input Z and its change map input map_z go together");
  try {
    check_sum_shapes(in.shape(z_index), in.shape(map_index), ys);
  } catch (const std::invalid_argument& e) {
    throw UserError(e.what());
  }
  s.z = in.data<float>(z_index);
  s.map_z = in.data<uint8_t>(map_index);
  return s;
}

OutputState read_output_state(const KernelInputs& in, const Shape& xs, const Shape& ys) {
  // DeltaReorder's and DeltaResize's inputs: X, Y_prev, map_in
  StateShapes shapes;
  shapes.x = xs;
  shapes.y = ys;
  shapes.map_given = in.value(delta_reorder::kMapIn) != nullptr;
  if (shapes.map_given) shapes.map = in.shape(delta_reorder::kMapIn);
  if (in.value(delta_reorder::kYPrev) != nullptr) shapes.y_prev = in.shape(delta_reorder::kYPrev);
  bool has_state = false;
  try {
    has_state = decide_output_state(shapes);
  } catch (const std::invalid_argument& e) {
    throw UserError(e.what());
  }
  OutputState state;
  if (!has_state) return state;
  state.y_prev = in.data<float>(delta_reorder::kYPrev);
  state.map_in = in.data<uint8_t>(delta_reorder::kMapIn);
  return state;
}

}  // namespace deltaonnx

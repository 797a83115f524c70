#include "delta_reorder/cpu/delta_reorder_kernel.h"

#include <cstring>

#include "common/channel_block.h"
#include "delta_reorder/cpu/reorder_engine.h"
#include "op_definition/delta_attributes.h"
#include "op_definition/ort_tensors.h"
#include "ort_util.h"

namespace deltaonnx {

DeltaReorderKernel::DeltaReorderKernel(const OrtKernelInfo* info) : SchemaKernel(info) {
  attributes_ = read_delta_reorder_attributes(AttributeReader(info));
  block_ = cpu_channel_block();
}

void DeltaReorderKernel::compute(OrtKernelContext* raw) const {
  Ort::KernelContext ctx(raw);
  const KernelInputs in(ctx);
  const Shape xs = input_shape_4d(in, delta_reorder::kX, "X");
  const ReorderGeometry geometry = reorder_geometry(attributes_, xs, block_);
  const bool to_blocked = attributes_.to == ReorderTarget::kBlocked;
  ReorderShape shape;
  shape.batch = xs[0];
  shape.channels = geometry.channels;
  shape.pixels = checked_product({xs[2], xs[3]}, "X");
  shape.block = block_;
  checked_product({xs[0], xs[1], shape.pixels}, "X");
  const Shape& ys = geometry.y_shape;
  const int64_t y_count = checked_product({ys[0], ys[1], shape.pixels}, "Y");
  float* y = output_of(ctx, 0, ys).GetTensorMutableData<float>();
  const float* x = in.data<float>(delta_reorder::kX);
  const OutputState state = read_output_state(in, xs, ys);
  if (state.y_prev == nullptr) {  // no state (first run, another shape) or no map: every pixel
    reorder_channels(shape, to_blocked, x, y, ort_parallel_for(ctx), kernels());
    return;
  }
  if (state.y_prev != y) std::memcpy(y, state.y_prev, static_cast<size_t>(y_count) * sizeof(float));  // bound apart: carry, then redo
  reorder_marked_pixels(shape, to_blocked, x, state.map_in, y, ort_parallel_for(ctx), kernels());
}

}  // namespace deltaonnx

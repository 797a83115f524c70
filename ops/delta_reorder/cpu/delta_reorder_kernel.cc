#include "delta_reorder/cpu/delta_reorder_kernel.h"

#include <cstring>

#include "common/channel_block.h"
#include "delta_reorder/cpu/reorder_engine.h"
#include "op_definition/delta_attributes.h"
#include "op_definition/ort_tensors.h"
#include "ort_util.h"

namespace deltaonnx {

DeltaReorderKernel::DeltaReorderKernel(const OrtKernelInfo* info) : SchemaKernel(info) {
  to_blocked_ = read_delta_reorder_attributes(AttributeReader(info)) == ReorderTarget::kBlocked;
  block_ = cpu_channel_block();
}

void DeltaReorderKernel::compute(OrtKernelContext* raw) const {
  Ort::KernelContext ctx(raw);
  const std::vector<int64_t> xs = input_shape_4d(ctx, 0, "X");
  check_channel_block(xs, block_, "X");
  ReorderShape shape;
  shape.batch = xs[0];
  shape.channels = xs[1];
  shape.pixels = checked_product({xs[2], xs[3]}, "X");
  checked_product({xs[0], xs[1], shape.pixels}, "X");
  shape.block = block_;
  float* y = ctx.GetOutput(0, xs).GetTensorMutableData<float>();
  const float* x = ctx.GetInput(delta_reorder::kX).GetTensorData<float>();
  const ReorderState state = read_reorder_state(ctx, xs);
  if (state.y_prev == nullptr) {  // no state (first run, another shape) or no map: every pixel
    reorder_channels(shape, to_blocked_, x, y, ort_parallel_for(ctx), kernels());
    return;
  }
  const size_t count = static_cast<size_t>(shape.batch * shape.channels * shape.pixels);
  if (state.y_prev != y) std::memcpy(y, state.y_prev, count * sizeof(float));  // bound apart: carry, then redo
  reorder_marked_pixels(shape, to_blocked_, x, state.map_in, y, ort_parallel_for(ctx), kernels());
}

}  // namespace deltaonnx

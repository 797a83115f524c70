#include "delta_resize/cpu/delta_resize_kernel.h"

#include <cstring>

#include "common/channel_block.h"
#include "delta_resize/cpu/resize_engine.h"
#include "delta_resize/resize_launch.h"
#include "op_definition/ort_tensors.h"
#include "ort_util.h"

namespace deltaonnx {

DeltaResizeKernel::DeltaResizeKernel(const OrtKernelInfo* info) : SchemaKernel(info) {
  attributes_ = read_delta_resize_attributes(AttributeReader(info));
  block_ = cpu_channel_block();
}

void DeltaResizeKernel::compute(OrtKernelContext* raw) const {
  Ort::KernelContext ctx(raw);
  const KernelInputs in(ctx);
  ResizeRun run = prepare_resize_run(ctx, in, attributes_, block_);
  if (run.state.y_prev == nullptr) {  // no state (first run, another shape) or no map: every output
    resize_whole(run.step, ort_parallel_for(ctx));
    return;
  }
  if (run.state.y_prev != run.step.y && run.y_count > 0)  // bound apart: carry, then redo
    std::memcpy(run.step.y, run.state.y_prev, static_cast<size_t>(run.y_count) * sizeof(float));
  resize_marked(run.step, ort_parallel_for(ctx));
}

}  // namespace deltaonnx

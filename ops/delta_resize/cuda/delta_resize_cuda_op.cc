#include "delta_resize/cuda/delta_resize_cuda_op.h"

#include "delta_resize/cuda/resize_kernel.h"
#include "delta_resize/resize_launch.h"

namespace deltaonnx {
namespace cuda {

void DeltaResizeCudaKernel::compute(OrtKernelContext* raw_context) const {
  Ort::KernelContext ctx(raw_context);
  const KernelInputs in(ctx);
  const ResizeRun run = prepare_resize_run(ctx, in, attributes_, /*block=*/1);
  const cudaStream_t stream = compute_stream(ctx);
  if (run.state.y_prev != nullptr && run.state.y_prev != run.step.y)  // bound apart: carry, then redo
    check_cuda(cudaMemcpyAsync(run.step.y, run.state.y_prev, static_cast<size_t>(run.y_count) * sizeof(float),
                               cudaMemcpyDeviceToDevice, stream),
               "DeltaResize carry");
  check_cuda(launch_resize(run.step, stream), "DeltaResize");
  if (run.step.map_out != nullptr) check_cuda(launch_resize_map(run.step, stream), "DeltaResize map");
}

}  // namespace cuda
}  // namespace deltaonnx

#include "delta_pool/cuda/delta_pool_cuda_op.h"

#include "cuda_common/device_run.h"
#include "delta_pool/cuda/max_pool_kernel.h"

namespace deltaonnx {
namespace cuda {

using namespace delta_pool;

void DeltaPoolCudaKernel::compute(OrtKernelContext* raw_context) const {
  Ort::KernelContext ctx(raw_context);
  const KernelInputs in(ctx);
  const Shape xs = input_shape_4d(in, kX, "X");
  const int64_t N = xs[0], C = xs[1];
  const OutputGeometry out_geometry = output_geometry(attributes_.window, xs, C);
  const Window2D& win = out_geometry.window;
  const Shape& ys = out_geometry.shape;
  if (C > kMaxBatch) throw UserError("channels must be <= " + std::to_string(kMaxBatch));

  const StateInputs st = read_state_inputs(in, kXRef, kYPrev, kMapIn, xs, ys, attributes_.knobs.threshold);
  DeviceRun run = start_device_run(ctx, in.value(kX), st, xs, ys, win, attributes_.knobs, 0);
  if (run.empty) return;
  const PixelList list = enqueue_pipeline(run);

  MaxPoolStep pool;
  pool.x = recompute_source(run.tensors);
  pool.y = run.tensors.y;
  pool.list = list;
  pool.batch = N;
  pool.channels = C;
  pool.y_axis = win.y;
  pool.x_axis = win.x;
  check_cuda(launch_max_pool(pool, run.stream), "max pool");
}

}  // namespace cuda
}  // namespace deltaonnx

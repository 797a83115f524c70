#include "delta_conv/cuda/delta_conv_cuda_op.h"

#include <cstdint>
#include <limits>

#include "cuda_common/device_run.h"
#include "delta_conv/cuda/gather_gemm_kernel.h"

namespace deltaonnx {
namespace cuda {

using namespace delta_conv;

void DeltaConvCudaKernel::compute(OrtKernelContext* raw_context) const {
  Ort::KernelContext ctx(raw_context);
  const KernelInputs in(ctx);
  const Shape xs = input_shape_4d(in, kX, "X");
  const int64_t N = xs[0], C = xs[1];
  const OrtValue* w = in.value(kW);
  const Shape& ws = in.shape(kW);
  const WindowSpec window = attributes_.window_for_weights(ws);
  const int64_t M = ws[0];
  attributes_.check_x_channels(C, ws);  // b = 1 on CUDA: C itself
  const OutputGeometry out_geometry = output_geometry(window, xs, M);
  const Window2D& win = out_geometry.window;
  const Shape& ys = out_geometry.shape;
  const OrtValue* b = in.value(kB);
  if (b != nullptr && in.shape(kB) != Shape{M})
    throw UserError("B must have shape [" + std::to_string(M) + "], got " + shape_text(in.shape(kB)));

  ConvShape shape;
  shape.channels = C;
  shape.out_channels = M;
  shape.group = attributes_.group;
  shape.y = win.y;
  shape.x = win.x;
  if (shape.depth() > std::numeric_limits<int32_t>::max()) throw UserError("C/group*kH*kW exceeds 2^31");

  const StateInputs st = read_state_inputs(in, kXRef, kYPrev, kMapIn, xs, ys, attributes_.knobs.threshold);
  const SumInputs sum = read_sum_inputs(in, kZ, kMapZ, ys);  // device pointers, like the other inputs
  const std::vector<float>& slopes = attributes_.activation.slopes;
  DeviceRun run = start_device_run(ctx, in.value(kX), st, xs, ys, win, attributes_.knobs, slopes.size() * sizeof(float));
  if (run.empty) return;
  float* device_slopes = static_cast<float*>(run.extra);
  if (device_slopes != nullptr) {
    // From the kernel's own vector, which outlives the copy (pageable memory is staged before this returns).
    check_cuda(cudaMemcpyAsync(device_slopes, slopes.data(), slopes.size() * sizeof(float), cudaMemcpyHostToDevice,
                               run.stream),
               "PRelu slopes upload");
  }
  run.tensors.map_z = sum.map_z;
  const PixelList list = enqueue_pipeline(run);

  GatherGemm gemm;
  gemm.x = recompute_source(run.tensors);  // rule 4: X_ref_next, or X when the reference is dropped
  gemm.weights = Ort::ConstValue(w).GetTensorData<float>();
  gemm.bias = b != nullptr ? Ort::ConstValue(b).GetTensorData<float>() : nullptr;
  gemm.y = run.tensors.y;
  gemm.z = sum.z;
  gemm.list = list;
  gemm.shape = shape;
  gemm.batch = N;
  gemm.act = attributes_.activation.params;
  gemm.slopes = device_slopes;
  gemm.num_slopes = static_cast<int64_t>(slopes.size());
  if (!gather_gemm_grid_fits(gemm)) throw UserError("too many groups x output channel blocks for one launch");
  check_cuda(launch_gather_gemm(gemm, run.stream), "gather-GEMM");
}

}  // namespace cuda
}  // namespace deltaonnx

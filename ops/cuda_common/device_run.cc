#include "cuda_common/device_run.h"

#include <limits>

namespace deltaonnx {
namespace cuda {

DeviceRun start_device_run(Ort::KernelContext& ctx, const OrtValue* x, const StateInputs& st,
                           const Shape& xs, const Shape& ys, const Window2D& window,
                           const DeltaKnobs& knobs, size_t extra_bytes) {
  DeviceRun run;
  const int64_t N = xs[0], H = xs[2], W = xs[3];
  const int64_t out_plane = ys[2] * ys[3];
  const AllocatedOutputs allocated = allocate_delta_outputs(ctx, xs, ys, st.reference_dropped);
  float* x_ref_next = allocated.x_ref_next;
  uint8_t* map_out = allocated.map_out;
  if (xs.holds_no_elements() || ys.holds_no_elements()) {
    run.empty = true;
    return run;
  }
  if (N > kMaxBatch) throw UserError("batch " + std::to_string(N) + " exceeds " + std::to_string(kMaxBatch));
  if (out_plane > std::numeric_limits<int32_t>::max() || H * W > std::numeric_limits<int32_t>::max())
    throw UserError("the spatial size exceeds 2^31");
  run.stream = compute_stream(ctx);

  DeltaTensors& t = run.tensors;
  t.has_state = st.has_state;
  t.reference_dropped = st.reference_dropped;
  t.x = Ort::ConstValue(x).GetTensorData<float>();
  t.x_ref = st.x_ref;
  t.y_prev = st.y_prev;
  t.map_in = st.map_in;
  t.x_ref_next = x_ref_next;
  t.y = allocated.y;
  t.batch = N;
  t.channels = xs[1];
  t.out_channels = ys[1];
  t.y_axis = window.y;
  t.x_axis = window.x;
  t.tau = knobs.threshold;
  t.dense_fraction = knobs.dense_fraction;

  // One scratch allocation: the pipeline's, map_out when the node has no such output, the op's extra.
  const size_t pipeline_bytes = DeviceScratch::align_up(pipeline_scratch_bytes(t));
  const size_t map_bytes = map_out == nullptr ? DeviceScratch::align_up(static_cast<size_t>(N * out_plane)) : 0;
  run.scratch = std::make_unique<DeviceScratch>(ctx, x, pipeline_bytes + map_bytes + DeviceScratch::align_up(extra_bytes));
  run.pipeline_scratch = run.scratch->take<char>(pipeline_bytes);
  if (map_out == nullptr) map_out = run.scratch->take<uint8_t>(static_cast<size_t>(N * out_plane));
  if (extra_bytes > 0) run.extra = run.scratch->take<char>(extra_bytes);
  t.map_out = map_out;
  return run;
}

PixelList enqueue_pipeline(DeviceRun& run) {
  cudaError_t error = cudaSuccess;
  const char* failed_step = "";
  const PixelList list = enqueue_delta_pipeline(run.tensors, run.pipeline_scratch, run.stream, &error, &failed_step);
  check_cuda(error, failed_step);
  return list;
}

}  // namespace cuda
}  // namespace deltaonnx

#include "delta_pool/cuda/delta_pool_cuda_op.h"

#include <cstdint>
#include <limits>
#include <vector>

#include "cuda_common/delta_pipeline.h"
#include "delta_pool/cuda/max_pool_kernel.h"

namespace deltaonnx {
namespace cuda {
namespace {

constexpr const char* kOp = "DeltaPool";

}  // namespace

DeltaPoolCudaKernel::DeltaPoolCudaKernel(const OrtKernelInfo* info) {
  AttributeReader attributes(info, kOp);
  node_ = attributes.node();
  window_ = read_window_attributes(attributes, /*pool=*/true);
}

void DeltaPoolCudaKernel::fail(const std::string& what) const { cuda::fail(kOp, node_, what); }

void DeltaPoolCudaKernel::Compute(OrtKernelContext* raw_context) const {
  Ort::KernelContext ctx(raw_context);
  const OrtValue* x = optional_input(ctx, 0);
  const OrtValue* x_ref = optional_input(ctx, 1);
  const OrtValue* y_prev = optional_input(ctx, 2);
  const OrtValue* map_in = optional_input(ctx, 3);
  if (x == nullptr || x_ref == nullptr || y_prev == nullptr) fail("X, X_ref and Y_prev are required");

  const std::vector<int64_t> xs = shape_of(x);
  if (xs.size() != 4) fail("X must be 4-D [N,C,H,W], got " + shape_string(xs));
  const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
  const Axis y_axis = window_.axis(0, H, window_.kernel_shape[0]);
  const Axis x_axis = window_.axis(1, W, window_.kernel_shape[1]);
  const std::vector<int64_t> y_dims{N, C, y_axis.out, x_axis.out};
  const std::vector<int64_t> map_dims{N, 1, y_axis.out, x_axis.out};

  const std::vector<int64_t> ref_shape = shape_of(x_ref);
  const bool has_state = element_count(ref_shape) > 0 && ref_shape == xs;
  if (has_state && shape_of(y_prev) != y_dims) {
    fail("Y_prev has shape " + shape_string(shape_of(y_prev)) + " but Y is " + shape_string(y_dims) +
         " (X_ref matches X, so Y_prev must be the last run's Y)");
  }
  if (map_in != nullptr && shape_of(map_in) != std::vector<int64_t>{N, 1, H, W}) {
    fail("map_in must be " + shape_string({N, 1, H, W}) + ", got " + shape_string(shape_of(map_in)));
  }

  Ort::UnownedValue y_out = ctx.GetOutput(0, y_dims);
  Ort::UnownedValue ref_out = ctx.GetOutput(1, xs);
  uint8_t* map_out = nullptr;
  if (ctx.GetOutputCount() > 2) {
    Ort::UnownedValue m = ctx.GetOutput(2, map_dims);
    if (static_cast<OrtValue*>(m) != nullptr) map_out = m.GetTensorMutableData<uint8_t>();
  }
  if (element_count(xs) == 0) return;

  const int64_t out_plane = y_axis.out * x_axis.out;
  if (N > kMaxBatch || C > kMaxBatch) fail("batch and channels must be <= " + std::to_string(kMaxBatch));
  if (out_plane > std::numeric_limits<int32_t>::max() || H * W > std::numeric_limits<int32_t>::max()) {
    fail("the spatial size exceeds 2^31");
  }
  const cudaStream_t stream = compute_stream(ctx, kOp, node_);

  DeltaTensors t;
  t.x = Ort::ConstValue(x).GetTensorData<float>();
  t.x_ref = has_state ? Ort::ConstValue(x_ref).GetTensorData<float>() : nullptr;
  t.y_prev = has_state ? Ort::ConstValue(y_prev).GetTensorData<float>() : nullptr;
  t.map_in = map_in != nullptr ? Ort::ConstValue(map_in).GetTensorData<uint8_t>() : nullptr;
  t.x_ref_next = ref_out.GetTensorMutableData<float>();
  t.y = y_out.GetTensorMutableData<float>();
  t.batch = N;
  t.channels = C;
  t.out_channels = C;
  t.y_axis = y_axis;
  t.x_axis = x_axis;
  t.tau = window_.threshold;
  t.dense_fraction = window_.dense_fraction;

  const size_t pipeline_bytes = DeviceScratch::align_up(pipeline_scratch_bytes(t));
  const size_t map_bytes = map_out == nullptr ? DeviceScratch::align_up(static_cast<size_t>(N * out_plane)) : 0;
  DeviceScratch scratch(ctx, x, pipeline_bytes + map_bytes);
  void* pipeline_scratch = scratch.take<char>(pipeline_bytes);
  if (map_out == nullptr) map_out = scratch.take<uint8_t>(static_cast<size_t>(N * out_plane));
  t.map_out = map_out;

  cudaError_t error = cudaSuccess;
  const char* failed_step = "";
  const PixelList list = enqueue_delta_pipeline(t, pipeline_scratch, stream, &error, &failed_step);
  check_cuda(error, kOp, node_, failed_step);
  if (N * C * out_plane == 0) return;

  MaxPoolStep pool;
  pool.x = t.x_ref_next;
  pool.y = t.y;
  pool.list = list;
  pool.batch = N;
  pool.channels = C;
  pool.y_axis = y_axis;
  pool.x_axis = x_axis;
  check_cuda(launch_max_pool(pool, stream), kOp, node_, "max pool");
}

}  // namespace cuda
}  // namespace deltaonnx

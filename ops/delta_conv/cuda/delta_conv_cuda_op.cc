#include "delta_conv/cuda/delta_conv_cuda_op.h"

#include <cstdint>
#include <limits>

#include "cuda_common/delta_pipeline.h"
#include "delta_conv/cuda/gather_gemm_kernel.h"

namespace deltaonnx {
namespace cuda {
namespace {

constexpr const char* kOp = "DeltaConv";

}  // namespace

DeltaConvCudaKernel::DeltaConvCudaKernel(const OrtKernelInfo* info) {
  AttributeReader attributes(info, kOp);
  node_ = attributes.node();
  window_ = read_window_attributes(attributes, /*pool=*/false);
  group_ = attributes.get_int("group", 1);
  if (group_ < 1) attributes.fail("attribute 'group' must be >= 1, got " + std::to_string(group_));
  activation_ = read_conv_activation(attributes);
}

void DeltaConvCudaKernel::fail(const std::string& what) const { cuda::fail(kOp, node_, what); }

void DeltaConvCudaKernel::Compute(OrtKernelContext* raw_context) const {
  Ort::KernelContext ctx(raw_context);
  const OrtValue* x = optional_input(ctx, 0);
  const OrtValue* w = optional_input(ctx, 1);
  const OrtValue* b = optional_input(ctx, 2);
  const OrtValue* x_ref = optional_input(ctx, 3);
  const OrtValue* y_prev = optional_input(ctx, 4);
  const OrtValue* map_in = optional_input(ctx, 5);
  if (x == nullptr || w == nullptr || x_ref == nullptr || y_prev == nullptr) fail("X, W, X_ref and Y_prev are required");

  const std::vector<int64_t> xs = shape_of(x);
  if (xs.size() != 4) fail("X must be 4-D [N,C,H,W], got " + shape_string(xs));
  const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
  const std::vector<int64_t> ws = shape_of(w);
  if (ws.size() != 4) fail("W must be 4-D [M,C/group,kH,kW], got " + shape_string(ws));
  const int64_t M = ws[0];
  if (M % group_ != 0) fail("W has " + std::to_string(M) + " output channels, not a multiple of group " + std::to_string(group_));
  if (ws[1] * group_ != C) {
    fail("W " + shape_string(ws) + " with group " + std::to_string(group_) + " expects " + std::to_string(ws[1] * group_) +
         " input channels, X " + shape_string(xs) + " has " + std::to_string(C));
  }
  if (!window_.kernel_shape.empty() && (window_.kernel_shape[0] != ws[2] || window_.kernel_shape[1] != ws[3])) {
    fail("attribute 'kernel_shape' " + shape_string(window_.kernel_shape) + " disagrees with W " + shape_string(ws));
  }
  if (b != nullptr && shape_of(b) != std::vector<int64_t>{M}) fail("B must be [" + std::to_string(M) + "], got " + shape_string(shape_of(b)));
  const size_t num_slopes = activation_.slopes.size();
  if (num_slopes > 1 && static_cast<int64_t>(num_slopes) != M) {
    fail("PRelu has " + std::to_string(num_slopes) + " slopes for " + std::to_string(M) + " output channels");
  }

  ConvShape shape;
  shape.channels = C;
  shape.out_channels = M;
  shape.group = group_;
  shape.y = window_.axis(0, H, ws[2]);
  shape.x = window_.axis(1, W, ws[3]);
  const std::vector<int64_t> y_dims{N, M, shape.y.out, shape.x.out};
  const std::vector<int64_t> map_dims{N, 1, shape.y.out, shape.x.out};

  // Rule 1 and the state conventions of docs/ops.md.
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
  if (element_count(xs) == 0) return;  // nothing to read; the outputs are empty too (or Y has no pixels)

  const int64_t out_plane = shape.y.out * shape.x.out;
  if (N > kMaxBatch) fail("batch " + std::to_string(N) + " exceeds " + std::to_string(kMaxBatch));
  if (out_plane > std::numeric_limits<int32_t>::max() || H * W > std::numeric_limits<int32_t>::max() ||
      shape.depth() > std::numeric_limits<int32_t>::max()) {
    fail("the spatial size or C/group*kH*kW exceeds 2^31");
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
  t.out_channels = M;
  t.y_axis = shape.y;
  t.x_axis = shape.x;
  t.tau = window_.threshold;
  t.dense_fraction = window_.dense_fraction;

  // One scratch allocation: the pipeline's, map_out when the node has no such output, PRelu's slopes.
  const size_t pipeline_bytes = DeviceScratch::align_up(pipeline_scratch_bytes(t));
  const size_t map_bytes = map_out == nullptr ? DeviceScratch::align_up(static_cast<size_t>(N * out_plane)) : 0;
  const size_t slope_bytes = DeviceScratch::align_up(num_slopes * sizeof(float));
  DeviceScratch scratch(ctx, x, pipeline_bytes + map_bytes + slope_bytes);
  void* pipeline_scratch = scratch.take<char>(pipeline_bytes);
  if (map_out == nullptr) map_out = scratch.take<uint8_t>(static_cast<size_t>(N * out_plane));
  float* slopes = num_slopes > 0 ? scratch.take<float>(num_slopes) : nullptr;
  t.map_out = map_out;
  if (slopes != nullptr) {
    // From the kernel's own vector, which outlives the copy (pageable memory is staged before this returns).
    check_cuda(cudaMemcpyAsync(slopes, activation_.slopes.data(), num_slopes * sizeof(float), cudaMemcpyHostToDevice, stream),
               kOp, node_, "PRelu slopes upload");
  }

  cudaError_t error = cudaSuccess;
  const char* failed_step = "";
  const PixelList list = enqueue_delta_pipeline(t, pipeline_scratch, stream, &error, &failed_step);
  check_cuda(error, kOp, node_, failed_step);
  if (N * M * out_plane == 0) return;

  GatherGemm gemm;
  gemm.x = t.x_ref_next;  // rule 4: recomputed values come from X_ref_next
  gemm.weights = Ort::ConstValue(w).GetTensorData<float>();
  gemm.bias = b != nullptr ? Ort::ConstValue(b).GetTensorData<float>() : nullptr;
  gemm.y = t.y;
  gemm.list = list;
  gemm.shape = shape;
  gemm.batch = N;
  gemm.act = activation_.params;
  gemm.slopes = slopes;
  gemm.num_slopes = static_cast<int64_t>(num_slopes);
  if (!gather_gemm_grid_fits(gemm)) fail("too many groups x output channel blocks for one launch");
  check_cuda(launch_gather_gemm(gemm, stream), kOp, node_, "gather-GEMM");
}

}  // namespace cuda
}  // namespace deltaonnx

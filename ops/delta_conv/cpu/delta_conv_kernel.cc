#include "delta_conv/cpu/delta_conv_kernel.h"

#include "common/channel_block.h"
#include "delta_reorder/cpu/reorder_engine.h"
#include "ort_util.h"

namespace deltaonnx {

using namespace delta_conv;

DeltaConvKernel::DeltaConvKernel(const OrtKernelInfo* raw_info) : SchemaKernel(raw_info) {
  attributes_ = read_delta_conv_attributes(AttributeReader(raw_info));
  if (attributes_.layout != TensorLayout::kNchw) attributes_.block = cpu_channel_block();
  // b = 1 (no NCHWc kernels on this CPU): blocked memory is NCHW memory, so the NCHW engine runs, at its speed.
  if (attributes_.block == 1) attributes_.layout = TensorLayout::kNchw;
  const bool blocked = attributes_.layout == TensorLayout::kBlocked;
  // blocked_out: the NCHW engine over X, Y blocked (conv_engine.h ConvRun::out_block); ORT's NCHWc Conv writes
  // an item recomputed everywhere straight into Y when our block is MLAS's, else the NCHW engine does.
  const bool blocked_out = attributes_.layout == TensorLayout::kBlockedOut;
  Ort::ConstKernelInfo info(raw_info);
  int is_constant = 0;
  Ort::ConstValue w = info.GetTensorConstantInput(kW, &is_constant);
  if (is_constant) {
    spec_ = spec_for(w.GetTensorTypeAndShapeInfo().GetShape());
    if (blocked) {  // both engines run the conv padded to whole channel blocks
      const PaddedConv padded = pad_conv_channels(spec_, w.GetTensorData<float>(), attributes_.block);
      blocked_ = std::make_unique<BlockedConvWeights>(padded.spec, padded.weights.data(), attributes_.block,
                                                      spec_.in_channels_per_group);
      blocked_spec_ = padded.spec;
      // ORT's NCHWc Conv reads the tensors as they are only when our block is MLAS's. With fewer input channels
      // than a block (unet_like's 8 at b = 16) the padded Conv would do twice the FMAs of dense ORT's, which
      // reads such an input as NCHW: the item's one block is unblocked first and read so (blocked_out's Conv).
      dense_reads_nchw_ = spec_.group == 1 && spec_.in_channels_per_group < attributes_.block;
      if (attributes_.block == mlas_nchwc_block_size())
        dense_ = dense_reads_nchw_
                     ? NchwcDenseConv::create(raw_info, spec_, w.GetTensorData<float>(), false, /*blocked_out=*/true,
                                              attributes_.has_sum)
                     : NchwcDenseConv::create(raw_info, padded.spec, padded.weights.data(), /*blocked_io=*/true,
                                              false, attributes_.has_sum);
    } else {
      packed_ = std::make_unique<PackedConvWeights>(spec_, w.GetTensorData<float>(), kernels());
      if (!blocked_out)
        dense_ = NchwcDenseConv::create(raw_info, spec_, w.GetTensorData<float>(), false, false, attributes_.has_sum,
                                        /*versus_nchw_engine=*/true);
      else if (attributes_.block == mlas_nchwc_block_size())
        dense_ = NchwcDenseConv::create(raw_info, spec_, w.GetTensorData<float>(), false, /*blocked_out=*/true,
                                        attributes_.has_sum, /*versus_nchw_engine=*/true);
    }
  }
}

ConvSpec DeltaConvKernel::spec_for(const std::vector<int64_t>& w_shape) const {
  ConvSpec spec;
  spec.window = attributes_.window_for_weights(w_shape);
  spec.group = attributes_.group;
  spec.activation = attributes_.activation;
  spec.threshold = attributes_.knobs.threshold;
  spec.dense_fraction = attributes_.knobs.dense_fraction;
  spec.gate = attributes_.knobs.gate;
  spec.out_channels = w_shape[0];
  spec.in_channels_per_group = w_shape[1];
  const std::string error = spec.validate();
  if (!error.empty()) throw UserError(error);
  return spec;
}

void DeltaConvKernel::compute(OrtKernelContext* raw) const {
  Ort::KernelContext ctx(raw);
  const std::vector<int64_t> xs = input_shape_4d(ctx, kX, "X");
  const float* x = ctx.GetInput(kX).GetTensorData<float>();

  ConvSpec spec = spec_;
  const bool blocked = attributes_.layout == TensorLayout::kBlocked;
  std::unique_ptr<PackedConvWeights> packed_now;
  std::unique_ptr<BlockedConvWeights> blocked_now;
  const ConvSpec* blocked_spec = &blocked_spec_;  // the blocked engine's: the conv padded to whole channel blocks
  ConvSpec blocked_spec_now;
  const PackedConvWeights* packed = packed_.get();
  const BlockedConvWeights* blocked_weights = blocked_.get();
  if (packed == nullptr && blocked_weights == nullptr) {  // W is computed by the graph: check and pack it for this run
    Ort::ConstValue w = ctx.GetInput(kW);
    spec = spec_for(w.GetTensorTypeAndShapeInfo().GetShape());
    if (blocked) {
      const PaddedConv padded = pad_conv_channels(spec, w.GetTensorData<float>(), attributes_.block);
      blocked_now = std::make_unique<BlockedConvWeights>(padded.spec, padded.weights.data(), attributes_.block,
                                                         spec.in_channels_per_group);
      blocked_weights = blocked_now.get();
      blocked_spec_now = padded.spec;
      blocked_spec = &blocked_spec_now;
    } else {
      packed_now = std::make_unique<PackedConvWeights>(spec, w.GetTensorData<float>(), kernels());
      packed = packed_now.get();
    }
  }
  const std::vector<int64_t> w_shape{spec.out_channels, spec.in_channels_per_group, spec.window.kernel_h,
                                     spec.window.kernel_w};
  attributes_.check_x_channels(xs[1], w_shape);
  // Y holds roundup(M, b) channels on a blocked output side, its pad lanes zero (docs/ops.md#blocked-layout).
  const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3], M = spec.out_channels;
  const int64_t y_channels = attributes_.tensor_channels(w_shape).y;
  const OutputGeometry out_geometry = output_geometry(spec.window, xs, y_channels);
  const int64_t Ho = out_geometry.window.y.out, Wo = out_geometry.window.x.out;
  const std::vector<int64_t>& ys = out_geometry.shape;

  const float* bias = nullptr;
  if (const OrtValue* b = optional_input(ctx, kB)) {
    const std::vector<int64_t> bs = shape_of(b);
    if (bs != std::vector<int64_t>{M}) throw UserError("B must have shape [" + std::to_string(M) + "], got " + shape_text(bs));
    bias = Ort::ConstValue(b).GetTensorData<float>();
  }
  std::vector<float> padded_bias;  // the blocked engines' bias: zeros past M
  if (blocked && bias != nullptr && y_channels != M) {
    padded_bias.assign(static_cast<size_t>(y_channels), 0.f);
    std::copy_n(bias, M, padded_bias.data());
    bias = padded_bias.data();
  }
  const StateInputs st = read_state_inputs(ctx, kXRef, kYPrev, kMapIn, xs, ys, spec.threshold);
  const SumInputs sum = read_sum_inputs(ctx, kZ, kMapZ, ys);
  std::vector<uint8_t> map_scratch;
  const DeltaOutputs out = delta_outputs(ctx, xs, ys, st, map_scratch);
  if (N * C * H * W == 0 || Ho * Wo * M == 0) return;

  const bool blocked_out = attributes_.layout == TensorLayout::kBlockedOut;
  ConvRun run;
  fill_delta_run(run, xs, x, st, out);
  run.bias = bias;
  run.z = sum.z;
  run.map_z = sum.map_z;
  if (blocked_out) run.out_block = attributes_.block;
  const ParallelFor parallel_for = ort_parallel_for(ctx);
  DenseItemConv dense;
  if (dense_ != nullptr && (blocked || blocked_out || st.reference_dropped || !dense_->own_engine_reads_in_place())) {
    const NchwcDenseConv* engine = dense_.get();
    if (dense_reads_nchw_) {  // one block of C < b real lanes: NCHW in a scratch, then the Conv writes Y blocked
      ReorderShape item;  // the item's one channel block, to NCHW as DeltaReorder moves it
      item.batch = 1;
      item.channels = spec.in_channels_per_group;
      item.pixels = H * W;
      item.block = attributes_.block;
      dense = [engine, raw, H, W, bias, Ho, Wo, item, &parallel_for](const float* src, const float* z, float* item_y) {
        thread_local AlignedScratch nchw;
        float* x_nchw = nchw.get(checked_count({item.channels, H, W}, "the unblocked input"));
        reorder_channels(item, /*to_blocked=*/false, src, x_nchw, parallel_for, kernels());
        return engine->compute(raw, x_nchw, H, W, bias, z, item_y, Ho, Wo, parallel_for);
      };
    } else {
      dense = [engine, raw, H, W, bias, Ho, Wo, &parallel_for](const float* src, const float* z, float* item_y) {
        return engine->compute(raw, src, H, W, bias, z, item_y, Ho, Wo, parallel_for);
      };
    }
  }
  if (blocked) run_blocked_delta_conv(*blocked_spec, *blocked_weights, run, parallel_for, nullptr, &dense);
  else run_delta_conv(spec, *packed, run, parallel_for, nullptr, &dense);
}

}  // namespace deltaonnx

#include "delta_conv/cpu/delta_conv_kernel.h"

#include <algorithm>

#include "common/aligned_scratch.h"
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
    w_shape_ = w.GetTensorTypeAndShapeInfo().GetShape();
    spec_ = spec_for(w_shape_);
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
    // A constant B of shape [M] is checked once (and padded once for "blocked"); another shape is refused when
    // the node runs, as a B computed by the graph is.
    int bias_constant = 0;
    const int64_t M = spec_.out_channels, y_channels = attributes_.tensor_channels(w_shape_).y;
    Ort::ConstValue b = info.GetInputCount() > kB ? info.GetTensorConstantInput(kB, &bias_constant) : Ort::ConstValue(nullptr);
    bias_fits_ = bias_constant && Shape(b.GetTensorTypeAndShapeInfo().GetShape()) == Shape{M};
    if (bias_fits_ && blocked && y_channels != M) {
      padded_bias_.assign(static_cast<size_t>(y_channels), 0.f);
      std::copy_n(b.GetTensorData<float>(), M, padded_bias_.data());
    }
    // the bias compute() hands the dense Conv (padded_bias_, or the initializer's own memory) held by it once
    if (bias_fits_ && dense_ != nullptr)
      dense_->set_constant_bias(padded_bias_.empty() ? b.GetTensorData<float>() : padded_bias_.data(),
                                padded_bias_.empty() ? M : y_channels);
  }
}

ConvSpec DeltaConvKernel::spec_for(const Shape& w_shape) const {
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

// Z may share Y's buffer (a run without state binds them so: docs/ops.md#the-sum-input). Where every item goes whole
// to ORT's NCHWc Conv (`whole_items_in_place`), the Conv adds onto Z where it lies (it copies Z into Y only when they
// differ); every other path writes parts of Y before it has read all of Z, so it reads a copy of Z (count floats).
const float* DeltaConvKernel::sum_read_in_place(const float* z, const float* y, size_t count,
                                                bool whole_items_in_place) {
  if (z == nullptr || count == 0 || z + count <= y || y + count <= z) return z;
  if (z == y && whole_items_in_place) return z;
  thread_local AlignedScratch copy;
  float* z_copy = copy.get(count);
  std::copy_n(z, count, z_copy);
  return z_copy;
}

// Per run: each input, shape and data pointer read once (op_definition/ort_tensors.h), the constant W's spec and
// packing used in place, scratch from the calling thread; a W computed by the graph is checked and packed here.
void DeltaConvKernel::compute(OrtKernelContext* raw) const {
  Ort::KernelContext ctx(raw);
  const KernelInputs in(ctx);
  const Shape xs = input_shape_4d(in, kX, "X");
  const float* x = in.data<float>(kX);

  const bool blocked = attributes_.layout == TensorLayout::kBlocked;
  const ConvSpec* spec = &spec_;
  const ConvSpec* blocked_spec = &blocked_spec_;  // the blocked engine's: the conv padded to whole channel blocks
  const PackedConvWeights* packed = packed_.get();
  const BlockedConvWeights* blocked_weights = blocked_.get();
  const Shape* w_shape = &w_shape_;
  ConvSpec spec_now, blocked_spec_now;
  std::unique_ptr<PackedConvWeights> packed_now;
  std::unique_ptr<BlockedConvWeights> blocked_now;
  if (packed == nullptr && blocked_weights == nullptr) {  // W is computed by the graph: check and pack it for this run
    w_shape = &in.shape(kW);
    spec_now = spec_for(*w_shape);
    spec = &spec_now;
    if (blocked) {
      const PaddedConv padded = pad_conv_channels(spec_now, in.data<float>(kW), attributes_.block);
      blocked_now = std::make_unique<BlockedConvWeights>(padded.spec, padded.weights.data(), attributes_.block,
                                                         spec_now.in_channels_per_group);
      blocked_weights = blocked_now.get();
      blocked_spec_now = padded.spec;
      blocked_spec = &blocked_spec_now;
    } else {
      packed_now = std::make_unique<PackedConvWeights>(spec_now, in.data<float>(kW), kernels());
      packed = packed_now.get();
    }
  }
  attributes_.check_x_channels(xs[1], *w_shape);
  // Y holds roundup(M, b) channels on a blocked output side, its pad lanes zero (docs/ops.md#blocked-layout).
  const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3], M = spec->out_channels;
  const int64_t y_channels = attributes_.tensor_channels(*w_shape).y;
  const OutputGeometry out_geometry = output_geometry(spec->window, xs, y_channels);
  const int64_t Ho = out_geometry.window.y.out, Wo = out_geometry.window.x.out;
  const Shape& ys = out_geometry.shape;

  const float* bias = nullptr;
  const bool constant_w = spec == &spec_;
  if (in.value(kB) != nullptr) {
    if (!(bias_fits_ && constant_w) && in.shape(kB) != Shape{M})
      throw UserError("B must have shape [" + std::to_string(M) + "], got " + shape_text(in.shape(kB)));
    bias = in.data<float>(kB);
  }
  if (blocked && bias != nullptr && y_channels != M) {  // the blocked engines' bias: zeros past M
    if (!padded_bias_.empty() && constant_w) {
      bias = padded_bias_.data();
    } else {
      thread_local std::vector<float> padded_bias;
      padded_bias.assign(static_cast<size_t>(y_channels), 0.f);
      std::copy_n(bias, M, padded_bias.data());
      bias = padded_bias.data();
    }
  }
  const StateInputs st = read_state_inputs(in, kXRef, kYPrev, kMapIn, xs, ys, spec->threshold);
  const SumInputs sum = read_sum_inputs(in, kZ, kMapZ, ys);
  const DeltaOutputs out = delta_outputs(ctx, xs, ys, st);
  if (N * C * H * W == 0 || Ho * Wo * M == 0) return;
  if (carry_unmarked_run(st, out, sum.map_z, xs, ys)) return;

  const bool blocked_out = attributes_.layout == TensorLayout::kBlockedOut;
  const NchwcDenseConv* engine = dense_.get();
  const bool dense_items =
      engine != nullptr && (blocked || blocked_out || st.reference_dropped || !engine->own_engine_reads_in_place());
  ConvRun run;
  fill_delta_run(run, xs, x, st, out);
  run.bias = bias;
  run.z = sum_read_in_place(sum.z, out.y, static_cast<size_t>(N * y_channels * Ho * Wo),
                            !st.has_state && dense_items && engine->adds_sum_in_place());
  run.map_z = sum.map_z;
  if (blocked_out) run.out_block = attributes_.block;
  const ParallelFor parallel_for = ort_parallel_for(ctx);
  // One block of C < b real lanes: NCHW in a scratch, then ORT's Conv writes Y blocked.
  auto dense_unblocked = [&](const float* src, const float* z, float* item_y) {
    ReorderShape item;  // the item's one channel block, to NCHW as DeltaReorder moves it
    item.batch = 1;
    item.channels = spec->in_channels_per_group;
    item.pixels = H * W;
    item.block = attributes_.block;
    thread_local AlignedScratch nchw;
    float* x_nchw = nchw.get(checked_count({item.channels, H, W}, "the unblocked input"));
    reorder_channels(item, /*to_blocked=*/false, src, x_nchw, parallel_for, kernels());
    return engine->compute(raw, x_nchw, H, W, bias, z, item_y, Ho, Wo, parallel_for);
  };
  auto dense_direct = [&](const float* src, const float* z, float* item_y) {
    return engine->compute(raw, src, H, W, bias, z, item_y, Ho, Wo, parallel_for);
  };
  const DenseItemConv unblocked_ref(dense_unblocked), direct_ref(dense_direct);
  const DenseItemConv* dense = nullptr;
  if (dense_items) dense = dense_reads_nchw_ ? &unblocked_ref : &direct_ref;
  if (blocked) run_blocked_delta_conv(*blocked_spec, *blocked_weights, run, parallel_for, nullptr, dense);
  else run_delta_conv(*spec, *packed, run, parallel_for, nullptr, dense);
}

}  // namespace deltaonnx

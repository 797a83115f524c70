// DeltaGlobalAveragePool's, DeltaChannelScale's and DeltaChannelGate's runs read from ORT's kernel context, the same on
// every execution provider (the pointers are the provider's memory): shapes checked, the outputs allocated, the step
// filled.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <string>

#include "channel_ops/channel_step.h"
#include "common/checked_size.h"
#include "common/channel_block.h"
#include "op_definition/delta_attributes.h"
#include "op_definition/op_schemas.h"
#include "op_definition/ort_tensors.h"
#include "op_definition/state_decision.h"

namespace deltaonnx {

// X's geometry for C logical channels under the layout and the channel block (the CPU library's b, 1 on CUDA).
inline ChannelGeometry channel_geometry(const Shape& xs, int64_t channels, bool blocked, int64_t block) {
  ChannelGeometry g;
  g.lane = blocked ? block : 1;
  g.batch = xs[0];
  g.planes = xs[1] / g.lane;
  g.pixels = xs[2] * xs[3];
  g.channels = channels;
  return g;
}

// The pooled input X (input 0 of DeltaGlobalAveragePool and DeltaChannelGate) checked, its C resolved from the
// 'channels' attribute or X itself, and read as a pool's step (the output y is the caller's).
inline GlobalPoolStep pooled_input(const KernelInputs& in, const ChannelOpAttributes& a, int64_t block) {
  const Shape xs = input_shape_4d(in, channel_ops::kX, "X");
  checked_product({xs[0], xs[1], xs[2], xs[3]}, "X");
  int64_t channels = a.channels;
  if (channels == 0) {  // not given: X's own count, which blocked memory holds only as whole blocks
    if (a.blocked) check_channel_block(xs, block, "X");
    channels = xs[1];
  }
  check_channels_fit(xs, channels, a.blocked, block, "X");
  GlobalPoolStep s;
  s.g = channel_geometry(xs, channels, a.blocked, block);
  s.x = in.data<float>(channel_ops::kX);
  return s;
}

inline GlobalPoolStep prepare_global_pool(Ort::KernelContext& ctx, const KernelInputs& in,
                                          const ChannelOpAttributes& a, int64_t block) {
  GlobalPoolStep s = pooled_input(in, a, block);
  s.y = output_of(ctx, 0, Shape{s.g.batch, s.g.channels, 1, 1}).GetTensorMutableData<float>();
  return s;
}

inline ChannelScaleStep prepare_channel_scale(Ort::KernelContext& ctx, const KernelInputs& in,
                                              const ChannelOpAttributes& a, int64_t block) {
  const Shape xs = input_shape_4d(in, channel_ops::kX, "X");
  checked_product({xs[0], xs[1], xs[2], xs[3]}, "X");
  const Shape ss = in.shape(channel_ops::kScale);
  if (ss.size() != 4 || ss[2] != 1 || ss[3] != 1 || ss[1] < 1 || (ss[0] != 1 && ss[0] != xs[0]))
    throw UserError("S must be [" + std::to_string(xs[0]) + " or 1, C, 1, 1] (one scale per channel of X " +
                    shape_text(xs) + "), got " + shape_text(ss));
  check_channels_fit(xs, ss[1], a.blocked, block, "X");
  ChannelScaleStep s;
  s.g = channel_geometry(xs, ss[1], a.blocked, block);
  s.x = in.data<float>(channel_ops::kX);
  s.scale = in.data<float>(channel_ops::kScale);
  s.scale_batch = ss[0];
  s.y = output_of(ctx, 0, xs).GetTensorMutableData<float>();
  return s;
}

// One 1x1 conv of the gate: W [outputs, inputs, 1, 1] (or [outputs, inputs]) and B [outputs] checked.
inline GateLayer gate_layer(const KernelInputs& in, size_t w_slot, size_t b_slot, int64_t inputs,
                            const ActivationParams& activation, const char* w_name, const char* b_name) {
  const Shape& ws = in.shape(w_slot);
  const bool fits = (ws.size() == 4 && ws[2] == 1 && ws[3] == 1) || ws.size() == 2;
  if (!fits || ws[0] < 1 || ws[1] != inputs)
    throw UserError(std::string(w_name) + " must be [outputs, " + std::to_string(inputs) + ", 1, 1], got " +
                    shape_text(ws));
  GateLayer layer;
  layer.w = in.data<float>(w_slot);
  layer.inputs = inputs;
  layer.outputs = ws[0];
  layer.activation = activation;
  if (in.value(b_slot) != nullptr) {
    if (in.shape(b_slot) != Shape{ws[0]})
      throw UserError(std::string(b_name) + " must have shape [" + std::to_string(ws[0]) + "], got " +
                      shape_text(in.shape(b_slot)));
    layer.b = in.data<float>(b_slot);
  }
  return layer;
}

// DeltaChannelGate's run: X and the weights checked, S [N, C2, 1, 1] and map_out [N, 1, 1, 1] (when the node has it)
// allocated. The scratch (pool.y: N * C floats, hidden: N * R) is the caller's, in its provider's memory.
inline ChannelGateStep prepare_channel_gate(Ort::KernelContext& ctx, const KernelInputs& in,
                                            const ChannelGateAttributes& a, int64_t block) {
  using namespace channel_gate;
  static_assert(static_cast<size_t>(kX) == static_cast<size_t>(channel_ops::kX),
                "the gate's pooled input is the pool's");
  ChannelGateStep s;
  s.pool = pooled_input(in, a.channel, block);
  const Shape& xs = in.shape(kX);
  s.reduce = gate_layer(in, kW1, kB1, s.pool.g.channels, a.activation, "W1", "B1");
  s.expand = gate_layer(in, kW2, kB2, s.reduce.outputs, a.gate_activation, "W2", "B2");
  if (in.value(kMapIn) != nullptr && !holds_no_elements(in.shape(kMapIn))) {  // an empty map: every item changed
    const Shape& ms = in.shape(kMapIn);
    if (ms != Shape{xs[0], 1, xs[2], xs[3]})
      throw UserError("map_in must be [" + std::to_string(xs[0]) + ", 1, " + std::to_string(xs[2]) + ", " +
                      std::to_string(xs[3]) + "] (X's change map), got " + shape_text(ms));
    s.map_in = in.data<uint8_t>(kMapIn);
  }
  s.s = output_of(ctx, kS, Shape{xs[0], s.expand.outputs, 1, 1}).GetTensorMutableData<float>();
  if (ctx.GetOutputCount() > kMapOut) {
    Ort::UnownedValue map = output_of(ctx, kMapOut, Shape{xs[0], 1, 1, 1});
    if (static_cast<OrtValue*>(map) != nullptr) s.map_out = map.GetTensorMutableData<uint8_t>();
  }
  return s;
}

}  // namespace deltaonnx

// DeltaGlobalAveragePool's and DeltaChannelScale's runs read from ORT's kernel context, the same on every execution
// provider (the pointers are the provider's memory): shapes checked, the output allocated, the step filled.
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

inline GlobalPoolStep prepare_global_pool(Ort::KernelContext& ctx, const KernelInputs& in,
                                          const ChannelOpAttributes& a, int64_t block) {
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
  s.y = output_of(ctx, 0, Shape{xs[0], channels, 1, 1}).GetTensorMutableData<float>();
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

}  // namespace deltaonnx

// The attributes of DeltaConv and DeltaPool (docs/ops.md), read and validated once when a kernel is created,
// the same way for the CPU and the CUDA library: bounds on every window extent (common/checked_size.h),
// type-strict reading (attribute_reader.h), one activation resolution (common/conv_activation.h).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "common/conv_activation.h"
#include "common/delta_state.h"
#include "common/window_spec.h"
#include "op_definition/attribute_reader.h"
#include "op_definition/tensor_shape.h"

namespace deltaonnx {

// threshold, dense_fraction and the change rule of the threshold, which every Delta op has.
struct DeltaKnobs {
  float threshold = 0.f;       // tau >= 0, finite
  float dense_fraction = 0.5f; // in [0, 1]
  // gate ("pixel": rule 2, the default | "block": rule 2b), gate_block (k), gate_hard (< 0: the default).
  GateSpec gate = pixel_rule();
};

// The CUDA library has no block rule in its change step: a node asking for it is refused when the session is
// created (never run by the pixel rule instead). Throws UserError naming the attribute.
void refuse_block_gate(const DeltaKnobs& knobs, const char* provider);

// How DeltaConv's and DeltaPool's X, X_ref, Y and Y_prev lie in memory (attribute 'layout',
// docs/ops.md#blocked-layout): "nchw", or
// "blocked": [N][Cb/b][H][W][b] under the 4-D shape [N, Cb, H, W], b the library's channel block
// (common/channel_block.h) and Cb = roundup(C, b) for C logical channels, the pad lanes zero;
// "blocked_out" (DeltaConv only): X and X_ref NCHW, Y and Y_prev blocked (a conv entering a blocked region itself).
enum class TensorLayout { kNchw, kBlocked, kBlockedOut };

struct DeltaConvAttributes {
  WindowSpec window;
  TensorLayout layout = TensorLayout::kNchw;
  // The layout as the node declares it: the CPU library runs "blocked" as "nchw" when b = 1, but what the
  // attribute refuses (a grouped conv other than depthwise) is refused whatever b.
  TensorLayout declared_layout = TensorLayout::kNchw;
  // The channel block of blocked tensors: set by the library after reading (the CPU library's b, 1 on CUDA,
  // where blocked memory is plain NCHW). Blocked X and Y hold roundup(C, b) and roundup(M, b) channels.
  int64_t block = 1;           // kernel_h/kernel_w: kernel_shape, or W's when the attribute is absent
  bool kernel_given = false;   // kernel_shape was given (it must then agree with W)
  int64_t group = 1;
  ConvActivation activation;
  DeltaKnobs knobs;
  // The node gives the sum Z (and its change map map_z): Y = act(conv + B + Z) (op_definition/sum_input.h).
  bool has_sum = false;

  // The window for weights W of shape [M, C/group, kH, kW], checked against the attributes: kernel_shape
  // agrees with W, group divides M, PRelu's slopes fit M, "blocked" has group 1 or is depthwise (W [M, 1, kH, kW]
  // with group = M), and a blocked output padded past M channels has act(0) = 0 (its pad lanes hold act(0 + 0),
  // which must stay 0). Throws UserError.
  WindowSpec window_for_weights(const Shape& w_shape) const;

  // X's and Y's channel counts for W [M, C/group, kH, kW]: C and M, or roundup(., block) on a blocked side.
  struct TensorChannels {
    int64_t x = 0, y = 0;
  };
  TensorChannels tensor_channels(const Shape& w_shape) const;
  // X's channel count checked against tensor_channels(w_shape).x. Throws UserError.
  void check_x_channels(int64_t x_channels, const Shape& w_shape) const;
};

struct DeltaPoolAttributes {
  WindowSpec window;
  DeltaKnobs knobs;
  TensorLayout layout = TensorLayout::kNchw;  // blocked: C must be a multiple of the library's block (at run time)
};

// The window over X of shape xs [N, C, H, W] and the output shape [N, out_channels, Ho, Wo], checked for every
// op the same way: the input fits the window, X's and Y's sizes are overflow-checked products. Throws UserError.
struct OutputGeometry {
  Window2D window;
  Shape shape;
};
OutputGeometry output_geometry(const WindowSpec& window, const Shape& xs, int64_t out_channels);

// DeltaReorder's attributes (docs/ops.md#deltareorder): 'to' (required), the memory order Y gets, X having the
// other; 'channels' (optional, >= 1), the logical channel count C (0 when absent: X's count).
enum class ReorderTarget { kBlocked, kNchw };
struct ReorderAttributes {
  ReorderTarget to = ReorderTarget::kBlocked;
  int64_t channels = 0;
};
ReorderAttributes read_delta_reorder_attributes(const AttributeReader& attributes);

// Y's shape for X of shape xs under the channel block `block`, and C: "blocked" takes X [N, C, H, W] (C = channels
// if given, which must equal X's) to [N, roundup(C, b), H, W]; "nchw" takes X [N, roundup(C, b), H, W] (without
// channels C = X's count, a multiple of b) to [N, C, H, W]. Throws UserError.
struct ReorderGeometry {
  Shape y_shape;
  int64_t channels = 0;
};
ReorderGeometry reorder_geometry(const ReorderAttributes& attributes, const Shape& xs, int64_t block);

// DeltaResize's attributes (docs/ops.md#deltaresize): 'factors' (required) [fh, fw], integers in [1, 65536];
// 'layout' "nchw" (default) or "blocked" (X and Y [N][C/b][H][W][b], C a multiple of b).
struct ResizeAttributes {
  int64_t factor_h = 1, factor_w = 1;
  bool blocked = false;
};
ResizeAttributes read_delta_resize_attributes(const AttributeReader& attributes);

// Y's shape [N, C, H * fh, W * fw] for X of shape xs, overflow-checked; a blocked X's C must be a multiple of
// `block`. Throws UserError.
Shape resize_output_shape(const ResizeAttributes& attributes, const Shape& xs, int64_t block);

// DeltaGlobalAveragePool's and DeltaChannelScale's attributes (docs/ops.md#deltaglobalaveragepool): 'layout' "nchw"
// (default) or "blocked" (X [N][Cb/b][H][W][b], Cb = roundup(C, b)); the pool's 'channels' C >= 1 (0: not given, C is
// X's count). DeltaChannelScale takes C from its scale's shape.
struct ChannelOpAttributes {
  bool blocked = false;
  int64_t channels = 0;
};
ChannelOpAttributes read_channel_op_attributes(const AttributeReader& attributes, bool with_channels);

// DeltaChannelGate's attributes (docs/ops.md#deltachannelgate): 'layout' and 'channels' as DeltaGlobalAveragePool's;
// 'activation' / 'activation_params' of the first 1x1 conv (W1) and 'gate_activation' / 'gate_activation_params' of
// the second (W2), as DeltaConv's (no channel Softmax; PRelu with one slope).
struct ChannelGateAttributes {
  ChannelOpAttributes channel;
  ActivationParams activation, gate_activation;
};
ChannelGateAttributes read_channel_gate_attributes(const AttributeReader& attributes);

// X's channel count Cx for C logical channels: roundup(C, block) blocked, C otherwise; a UserError naming both when
// xs[1] is not it.
void check_channels_fit(const Shape& xs, int64_t channels, bool blocked, int64_t block, const char* what);

// A tensor of shape xs [N, C, H, W] whose memory is (or becomes) blocked by `block` channels: C must be a multiple
// of it. Throws UserError naming `what` and the block.
void check_channel_block(const Shape& xs, int64_t block, const char* what);

DeltaConvAttributes read_delta_conv_attributes(const AttributeReader& attributes);
DeltaPoolAttributes read_delta_pool_attributes(const AttributeReader& attributes);

}  // namespace deltaonnx

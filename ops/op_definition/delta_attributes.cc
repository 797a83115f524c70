#include "op_definition/delta_attributes.h"

#include <cmath>

#include "common/channel_block.h"
#include "op_definition/op_schemas.h"
#include "op_definition/state_decision.h"  // shape_text

namespace deltaonnx {
namespace {

std::string list_text(const std::vector<int64_t>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s + "]";
}

// The attributes Conv and MaxPool share, with the kernel given (kernel_shape is read by the caller).
WindowSpec read_window(const AttributeReader& a, const std::vector<int64_t>& kernel, bool ceil_mode) {
  WindowSpec w;
  const std::string error =
      window_from_lists(kernel, a.get_ints("strides", {1, 1}), a.get_ints("pads", {0, 0, 0, 0}),
                        a.get_ints("dilations", {1, 1}), a.get_string("auto_pad", "NOTSET"), ceil_mode, &w);
  if (!error.empty()) a.fail(error);
  return w;
}

DeltaKnobs read_knobs(const AttributeReader& a) {
  DeltaKnobs k;
  k.threshold = a.get_float("threshold", 0.f);
  if (!std::isfinite(k.threshold) || k.threshold < 0.f)
    a.fail("attribute 'threshold' must be finite and >= 0, got " + std::to_string(k.threshold));
  k.dense_fraction = a.get_float("dense_fraction", 0.5f);
  if (!(k.dense_fraction >= 0.f && k.dense_fraction <= 1.f))
    a.fail("attribute 'dense_fraction' must lie in [0, 1], got " + std::to_string(k.dense_fraction));
  const std::string rule = a.get_string("gate", "pixel");
  const std::string error = GateSpec::make(rule, k.threshold, a.get_int("gate_block", kDefaultGateBlock),
                                           a.get_float("gate_hard", -1.f), &k.gate);
  if (!error.empty()) a.fail(rule == "pixel" || rule == "block" ? "attribute " + error : "attribute 'gate': " + error);
  if (!k.gate.block_rule) k.gate = pixel_rule(k.threshold);
  return k;
}

// The attribute 'layout' of DeltaConv and DeltaPool, with what both blocked engines refuse. "blocked_out" (X NCHW,
// Y blocked) is DeltaConv's only.
TensorLayout read_layout(const AttributeReader& a, const DeltaKnobs& knobs, bool conv) {
  const std::string layout = a.get_string("layout", "nchw");
  if (layout == "nchw") return TensorLayout::kNchw;
  const bool blocked_out = conv && layout == "blocked_out";
  if (layout != "blocked" && !blocked_out)
    a.fail(std::string("attribute 'layout' must be \"nchw\"") + (conv ? ", \"blocked\" or \"blocked_out\"" : " or \"blocked\"") +
           ", got \"" + layout + "\"");
  if (knobs.gate.block_rule) a.fail("attribute 'layout' = \"" + layout + "\" needs gate = \"pixel\"");
  return blocked_out ? TensorLayout::kBlockedOut : TensorLayout::kBlocked;
}

}  // namespace

void refuse_block_gate(const DeltaKnobs& knobs, const char* provider) {
  if (knobs.gate.block_rule)
    throw UserError(std::string("attribute 'gate' = \"block\" is not implemented by the ") + provider +
                    " library (only \"pixel\"); run this node on the CPU library or convert with the pixel rule");
}

DeltaConvAttributes read_delta_conv_attributes(const AttributeReader& a) {
  DeltaConvAttributes c;
  c.kernel_given = a.has("kernel_shape");
  // Without kernel_shape the window is validated with a 1x1 kernel now and with W's kernel at run time.
  c.window = read_window(a, c.kernel_given ? a.get_ints("kernel_shape", {}) : std::vector<int64_t>{1, 1}, false);
  c.group = a.get_int("group", 1);
  if (c.group < 1 || c.group > kMaxSpatialExtent) a.fail("attribute 'group' must be >= 1, got " + std::to_string(c.group));
  std::string error;
  if (!resolve_conv_activation(a.get_string("activation", ""), a.get_floats("activation_params", {}), &c.activation, &error))
    a.fail(error);
  c.knobs = read_knobs(a);
  c.layout = read_layout(a, c.knobs, /*conv=*/true);
  c.declared_layout = c.layout;
  if (c.layout != TensorLayout::kNchw) {
    // What the blocked engine does not do yet (docs/ops.md#blocked-layout): refused, never run another way.
    const std::string layout = a.get_string("layout", "");
    // "blocked" also takes a depthwise conv (group = C = M), checked against W in window_for_weights.
    if (c.group != 1 && c.layout == TensorLayout::kBlockedOut)
      a.fail("attribute 'layout' = \"" + layout + "\" needs group = 1, got " + std::to_string(c.group));
    if (c.activation.channel_softmax())
      a.fail("attribute 'layout' = \"" + layout + "\" does not take the channel activation '" + a.get_string("activation", "") + "'");
  }
  // The sum input (docs/design.md#deltaconv): Z and map_z come together; the engines add Z per output channel of
  // a group-1 conv before a per-element activation (depthwise and grouped convs, and Softmax, refuse it).
  c.has_sum = a.has_input(delta_conv::kZ);
  if (c.has_sum != a.has_input(delta_conv::kMapZ))
    a.fail(c.has_sum ? "the sum input Z needs its change map input map_z (uint8 [N,1,Ho,Wo])"
                     : "the change map input map_z is given without the sum input Z");
  if (c.has_sum && c.group != 1)
    a.fail("the sum input Z needs group = 1 (depthwise and grouped convs refuse it), got group " +
           std::to_string(c.group));
  if (c.has_sum && c.activation.channel_softmax())
    a.fail("the sum input Z does not take the channel activation 'Softmax'");
  return c;
}

WindowSpec DeltaConvAttributes::window_for_weights(const Shape& ws) const {
  if (ws.size() != 4) throw UserError("W must be 4-D [M, C/group, kH, kW], got " + shape_text(ws));
  for (int64_t d : ws)
    if (d < 1) throw UserError("W must have no empty dimension, got " + shape_text(ws));
  if (kernel_given && (ws[2] != window.kernel_h || ws[3] != window.kernel_w))
    throw UserError("attribute 'kernel_shape' " + list_text({window.kernel_h, window.kernel_w}) + " disagrees with W " +
                    shape_text(ws));
  if (ws[0] % group != 0)
    throw UserError("attribute 'group' (" + std::to_string(group) + ") must divide W's " + std::to_string(ws[0]) +
                    " output channels");
  if (declared_layout == TensorLayout::kBlocked && group != 1 && !(ws[1] == 1 && ws[0] == group))
    throw UserError("attribute 'layout' = \"blocked\" needs group = 1 or a depthwise conv (group = C = M, W [M, 1, "
                    "kH, kW]), got group " + std::to_string(group) + " and W " + shape_text(ws));
  const std::string slopes = activation.check_channels(ws[0]);
  if (!slopes.empty()) throw UserError(slopes);
  if (layout != TensorLayout::kNchw && padded_channels(ws[0], block) != ws[0])
    for (int64_t m = 0; m < ws[0]; ++m)
      if (apply_activation(activation.for_channel(m), 0.f) != 0.f)
        throw UserError("attribute 'layout' = \"" + std::string(layout == TensorLayout::kBlocked ? "blocked" : "blocked_out") +
                        "\" pads " + std::to_string(ws[0]) + " output channels to " +
                        std::to_string(padded_channels(ws[0], block)) + " (channel block " + std::to_string(block) +
                        "), whose pad lanes must stay 0, but the activation gives act(0) = " +
                        std::to_string(apply_activation(activation.for_channel(m), 0.f)) + " != 0");
  WindowSpec w = window;
  w.kernel_h = ws[2];
  w.kernel_w = ws[3];
  const std::string error = w.validate();
  if (!error.empty()) throw UserError(error + " (W " + shape_text(ws) + ")");
  checked_product({ws[0], ws[1], ws[2], ws[3]}, "W");
  return w;
}

DeltaConvAttributes::TensorChannels DeltaConvAttributes::tensor_channels(const Shape& ws) const {
  const int64_t C = ws[1] * group, M = ws[0];
  return {layout == TensorLayout::kBlocked ? padded_channels(C, block) : C,
          layout == TensorLayout::kNchw ? M : padded_channels(M, block)};
}

void DeltaConvAttributes::check_x_channels(int64_t x_channels, const Shape& ws) const {
  const int64_t C = ws[1] * group, expected = tensor_channels(ws).x;
  if (x_channels == expected) return;
  std::string want = std::to_string(C);
  if (expected != C)
    want += ", held as roundup(" + want + ", " + std::to_string(block) + ") = " + std::to_string(expected) +
            " channels in layout \"blocked\"";
  throw UserError("X has " + std::to_string(x_channels) + " input channels but W and group expect " + want);
}

OutputGeometry output_geometry(const WindowSpec& window, const Shape& xs, int64_t out_channels) {
  const int64_t N = xs[0], C = xs[1], H = xs[2], W = xs[3];
  // An empty X with a non-empty Y (padding around nothing, or no channels) would leave Y and map_out unwritten:
  // refused (ORT's Conv and MaxPool refuse an image without rows or columns; issue 17).
  if (N > 0 && (C == 0 || H == 0 || W == 0))
    throw UserError("X has shape " + shape_text(xs) + ": only its batch may be 0");
  const std::string error = window.check_input(H, W);
  if (!error.empty()) throw UserError(error);
  OutputGeometry g;
  g.window = window.resolve(H, W);
  g.shape = {N, out_channels, g.window.y.out, g.window.x.out};
  checked_product({N, C, H, W}, "X");
  checked_product({N, out_channels, g.window.y.out, g.window.x.out}, "Y");
  return g;
}

DeltaPoolAttributes read_delta_pool_attributes(const AttributeReader& a) {
  DeltaPoolAttributes p;
  if (!a.has("kernel_shape")) a.fail("attribute 'kernel_shape' is required");
  const int64_t ceil_mode = a.get_int("ceil_mode", 0);
  if (ceil_mode != 0 && ceil_mode != 1) a.fail("attribute 'ceil_mode' must be 0 or 1");
  p.window = read_window(a, a.get_ints("kernel_shape", {}), ceil_mode == 1);
  if (a.get_int("storage_order", 0) != 0) a.fail("attribute 'storage_order' must be 0 (DeltaPool has no Indices output)");
  p.knobs = read_knobs(a);
  p.layout = read_layout(a, p.knobs, /*conv=*/false);
  return p;
}

ReorderAttributes read_delta_reorder_attributes(const AttributeReader& a) {
  if (!a.has("to")) a.fail("attribute 'to' is required (\"blocked\" or \"nchw\")");
  ReorderAttributes r;
  const std::string to = a.get_string("to", "");
  if (to == "blocked") r.to = ReorderTarget::kBlocked;
  else if (to == "nchw") r.to = ReorderTarget::kNchw;
  else a.fail("attribute 'to' must be \"blocked\" or \"nchw\", got \"" + to + "\"");
  if (a.has("channels")) {
    r.channels = a.get_int("channels", 0);
    if (r.channels < 1 || r.channels > kMaxSpatialExtent)
      a.fail("attribute 'channels' must be >= 1, got " + std::to_string(r.channels));
  }
  return r;
}

ReorderGeometry reorder_geometry(const ReorderAttributes& a, const Shape& xs, int64_t block) {
  ReorderGeometry g;
  const bool to_blocked = a.to == ReorderTarget::kBlocked;
  g.channels = a.channels > 0 ? a.channels : xs[1];
  const int64_t expected = to_blocked ? g.channels : padded_channels(g.channels, block);
  if (xs[1] != expected)
    throw UserError("X has shape " + shape_text(xs) + ", but attribute 'to' = \"" + (to_blocked ? "blocked" : "nchw") +
                    "\" with " + std::to_string(g.channels) + " channels" + (a.channels > 0 ? " (attribute 'channels')" : "") +
                    " needs " + std::to_string(expected) + (to_blocked ? "" : " (roundup to the library's channel block " +
                    std::to_string(block) + ")") + " channels in X");
  g.y_shape = {xs[0], to_blocked ? padded_channels(g.channels, block) : g.channels, xs[2], xs[3]};
  return g;
}

ResizeAttributes read_delta_resize_attributes(const AttributeReader& a) {
  if (!a.has("factors")) a.fail("attribute 'factors' is required ([fh, fw], integers >= 1)");
  const std::vector<int64_t> factors = a.get_ints("factors", {});
  if (factors.size() != 2)
    a.fail("attribute 'factors' must hold 2 integers [fh, fw], got " + std::to_string(factors.size()));
  for (int64_t f : factors)
    if (f < 1 || f > kMaxWindowExtent)
      a.fail("attribute 'factors' must be in [1, " + std::to_string(kMaxWindowExtent) + "], got " + std::to_string(f));
  ResizeAttributes r;
  r.factor_h = factors[0];
  r.factor_w = factors[1];
  const std::string layout = a.get_string("layout", "nchw");
  if (layout == "blocked") r.blocked = true;
  else if (layout != "nchw") a.fail("attribute 'layout' must be \"nchw\" or \"blocked\", got \"" + layout + "\"");
  return r;
}

Shape resize_output_shape(const ResizeAttributes& a, const Shape& xs, int64_t block) {
  if (a.blocked) check_channel_block(xs, block, "X");
  checked_product({xs[0], xs[1], xs[2], xs[3]}, "X");
  const int64_t height = checked_product({xs[2], a.factor_h}, "Y"), width = checked_product({xs[3], a.factor_w}, "Y");
  if (height > kMaxSpatialExtent || width > kMaxSpatialExtent)
    throw UserError("Y would be " + std::to_string(height) + " x " + std::to_string(width) + " pixels (X " +
                    shape_text(xs) + " upsampled by 'factors'), above the ops' bound of " +
                    std::to_string(kMaxSpatialExtent) + " per side");
  checked_bytes<float>({xs[0], xs[1], height, width}, "Y");
  return {xs[0], xs[1], height, width};
}

ChannelOpAttributes read_channel_op_attributes(const AttributeReader& a, bool with_channels) {
  ChannelOpAttributes r;
  const std::string layout = a.get_string("layout", "nchw");
  if (layout == "blocked") r.blocked = true;
  else if (layout != "nchw") a.fail("attribute 'layout' must be \"nchw\" or \"blocked\", got \"" + layout + "\"");
  if (with_channels) {
    r.channels = a.get_int("channels", 0);
    if (a.has("channels") && r.channels < 1) a.fail("attribute 'channels' must be >= 1, got " + std::to_string(r.channels));
  }
  return r;
}

namespace {
ActivationParams read_gate_activation(const AttributeReader& a, const std::string& name) {
  ConvActivation activation;
  std::string error;
  const std::string kind = a.get_string(name.c_str(), "");
  if (!resolve_conv_activation(kind, a.get_floats((name + "_params").c_str(), {}), &activation, &error))
    a.fail(error + " (attribute '" + name + "')");
  if (activation.channel_softmax()) a.fail("attribute '" + name + "' does not take the channel activation 'Softmax'");
  if (activation.slopes.size() > 1)
    a.fail("attribute '" + name + "': PRelu takes one slope here, got " + std::to_string(activation.slopes.size()));
  return activation.for_channel(0);
}
}  // namespace

ChannelGateAttributes read_channel_gate_attributes(const AttributeReader& a) {
  ChannelGateAttributes r;
  r.channel = read_channel_op_attributes(a, /*with_channels=*/true);
  r.activation = read_gate_activation(a, "activation");
  r.gate_activation = read_gate_activation(a, "gate_activation");
  return r;
}

void check_channels_fit(const Shape& xs, int64_t channels, bool blocked, int64_t block, const char* what) {
  const int64_t wanted = blocked ? padded_channels(channels, block) : channels;
  if (xs[1] != wanted)
    throw UserError(std::string(what) + " has " + std::to_string(xs[1]) + " channels (shape " + shape_text(xs) +
                    "), not the " + std::to_string(wanted) + " that " + std::to_string(channels) + " channels " +
                    (blocked ? "take blocked by the library's channel block " + std::to_string(block) : "take NCHW"));
}

void check_channel_block(const Shape& xs, int64_t block, const char* what) {
  if (block > 1 && xs[1] % block != 0)
    throw UserError(std::string(what) + " has " + std::to_string(xs[1]) + " channels (shape " + shape_text(xs) +
                    "), not a multiple of the library's channel block " + std::to_string(block));
}

}  // namespace deltaonnx

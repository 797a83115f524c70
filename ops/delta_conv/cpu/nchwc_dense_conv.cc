#include "delta_conv/cpu/nchwc_dense_conv.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "common/aligned_scratch.h"
#include "common/channel_block.h"
#include "common/checked_size.h"
#include "common/kernel_table.h"

namespace deltaonnx {

namespace {

constexpr const char* kNchwcDomain = "com.microsoft.nchwc";
constexpr int kNchwcVersion = 1;

// Per layout family: 0 not yet checked, 1 checked and equal, 2 differs (path off for the process).
std::atomic<int> g_layout_state[3];

thread_local AlignedScratch t_blocked_in, t_blocked_out, t_bias;

// DELTAONNX_DENSE_ENGINE: unset or "auto" (this path where it qualifies), "own" (never), or, for the tests of
// the layout check only, "nchwc-wrong-layout" (the weights blocked in a wrong order, which the check must catch).
bool dense_engine_is(const char* value) {
  const char* v = std::getenv("DELTAONNX_DENSE_ENGINE");
  return v != nullptr && std::strcmp(v, value) == 0;
}

// The activations MLAS's NCHWc Conv applies exactly as apply_activation does (ops/common/activation.h): HardSigmoid
// and HardSwish too, multiplying then adding as MLAS does (measured bitwise equal over 800K values,
// tests/ops/test_fused_activations.py). A runtime whose NCHWc Conv refuses one gets the Conv without it (create).
bool mlas_fusable(const ActivationParams& act) {
  return act.kind == Activation::kRelu || act.kind == Activation::kClip || act.kind == Activation::kLeakyRelu ||
         act.kind == Activation::kHardSigmoid || act.kind == Activation::kHardSwish;
}

// The name ORT's fused-activation attribute gives each of them ("" for none).
std::string mlas_activation_name(Activation kind) {
  switch (kind) {
    case Activation::kRelu: return "Relu";
    case Activation::kClip: return "Clip";
    case Activation::kLeakyRelu: return "LeakyRelu";
    case Activation::kHardSigmoid: return "HardSigmoid";
    case Activation::kHardSwish: return "HardSwish";
    default: return "";
  }
}

// The NCHWc Conv computes roundup(C, b) x roundup(M, b) lanes (C < b: C, read as NCHW); our NCHW engine C x M.
// Where the padded Conv does more than 1.25x the FMAs at stride 1, or 2x at larger strides (our engine's phase
// split is slower there), ours is faster despite the lanes dense ORT wastes too (docs/results.md#lane-waste:
// 8->8 3x3 0.67x dense ORT against 1.00x, 24->8 0.57x against 1.13x, 72->24 s2 at 1.48x the FMAs 1.41x against 1.15x).
bool lane_waste_favours_own_engine(int64_t C, int64_t M, int64_t b, bool reorder_input, const WindowSpec& win) {
  const double Cw = static_cast<double>(reorder_input ? padded_channels(C, b) : C);
  const double waste = Cw * static_cast<double>(padded_channels(M, b)) / (static_cast<double>(C) * static_cast<double>(M));
  const bool stride_1 = win.stride_h == 1 && win.stride_w == 1;
  return waste >= 2.0 || (stride_1 && waste > 1.25);
}

}  // namespace

std::unique_ptr<NchwcDenseConv> NchwcDenseConv::create(const OrtKernelInfo* info, const ConvSpec& spec,
                                                       const float* weights, bool blocked_io, bool blocked_out,
                                                       bool with_sum, bool versus_nchw_engine) {
  if (dense_engine_is("own")) return nullptr;
  // A Sum in plain NCHW would need Z reordered to blocked memory first: the NCHW engine adds it instead.
  if (with_sum && !blocked_io && !blocked_out) return nullptr;
  const bool wrong_layout = dense_engine_is("nchwc-wrong-layout");
  const int64_t b = mlas_nchwc_block_size();
  if (b == 0) return nullptr;
  const WindowSpec& win = spec.window;
  // SAME pads depend on the input's size: the invoked Conv resolves them per run, as dense ORT's does. With a
  // dilation its output size could differ from ours (ONNX leaves that case loose): ours then.
  const bool same = win.auto_pad == AutoPad::kSameUpper || win.auto_pad == AutoPad::kSameLower;
  if (same && (win.dilation_h != 1 || win.dilation_w != 1)) return nullptr;
  const int64_t M = spec.out_channels, Cg = spec.in_channels_per_group, C = Cg * spec.group;
  const bool depthwise = spec.group > 1 && Cg == 1 && M == spec.group;
  std::unique_ptr<NchwcDenseConv> d(new NchwcDenseConv());
  if (depthwise) {
    if (C % b != 0) return nullptr;
    d->layout_ = Layout::kBlockedOut;
  } else if (spec.group == 1) {
    if (C < b) {
      d->reorder_input_ = false;  // the NCHW input is read as it is
      d->layout_ = Layout::kBlockedOut;
    } else if (C % b != 0) {
      // As ORT's NCHWc transformer does for C % 4 == 0 (its ReorderInput refuses other counts; dense ORT runs those
      // NCHW, and so does our engine): the input reordered to roundup(C, b) channels, zero lanes past C, read by
      // filters whose input lanes past C are zero (docs/results.md#padded-dense-input).
      if (C % 4 != 0) return nullptr;
      d->layout_ = Layout::kPaddedIn;
    }
  } else {
    return nullptr;  // grouped convolutions other than depthwise: ours
  }
  if (versus_nchw_engine && spec.group == 1 && lane_waste_favours_own_engine(C, M, b, d->reorder_input_, win))
    return nullptr;
  // blocked_io: group 1, or depthwise (OIHWBo weights, as ORT's NCHWc transformer gives a depthwise Conv)
  if (blocked_io && ((spec.group != 1 && !depthwise) || C % b != 0 || spec.out_channels % b != 0)) return nullptr;
  if (blocked_out && spec.group != 1) return nullptr;  // y holds roundup(M, b) channels: the Conv's padded filters
  d->blocked_io_ = blocked_io;
  d->blocked_out_ = blocked_out;
  if (g_layout_state[static_cast<int>(d->layout_)].load() == 2) return nullptr;
  d->spec_ = spec;
  d->block_ = b;
  d->channels_ = C;
  d->padded_out_ = padded_channels(M, b);
  for (int64_t m = 0; m < spec.out_channels; ++m) d->channel_acts_.push_back(spec.activation_for(m));
  d->channel_acts_.resize(static_cast<size_t>(d->padded_out_));  // zero filters' lanes: none (act(0) = 0 there)
  if (spec.activation.slopes.size() > 1) {  // PRelu's slope per channel, 0 on the pad lanes (act(0) = 0 either way)
    d->prelu_slopes_.assign(static_cast<size_t>(d->padded_out_), 0.f);
    for (int64_t m = 0; m < spec.out_channels; ++m) d->prelu_slopes_[m] = d->channel_acts_[m].a;
  }
  // Relu, Clip (Relu6), LeakyRelu, HardSigmoid and HardSwish run inside MLAS's NCHWc Conv, as in dense ORT's fused
  // Conv: Relu in the kernel's registers (one pass over the output fewer: resnet18_like 0.05 ms a frame), the others
  // on each output block just written, the same work dense ORT does (mobilenetv3_like's HardSwish stem at 224: a
  // separate pass over its 0.8 MB output cost ~25 us). MLAS computes them exactly as ours (no approximation; NaN
  // kept: its max/min return the NaN operand). Sigmoid and Tanh stay ours (MLAS approximates them), as do the rest.
  d->fused_ = mlas_fusable(spec.activation_for(0)) && spec.activation.slopes.size() <= 1
                  ? spec.activation_for(0)
                  : ActivationParams{};
  d->own_in_place_ = depthwise || (win.kernel_h == 1 && win.kernel_w == 1 && win.stride_h == 1 && win.stride_w == 1 &&
                                   win.pads == std::array<int64_t, 4>{0, 0, 0, 0});  // else ours, after (same NaN rules as ours)
  const int64_t kh = win.kernel_h, kw = win.kernel_w, Mp = d->padded_out_, taps = kh * kw;
  // The blocked filters' input channels: C/group, or roundup(C, b) when they read blocked input (zero lanes past C).
  const int64_t Cw = d->layout_ == Layout::kBlockedOut ? Cg : padded_channels(C, b);
  d->weights_.assign(weights, weights + M * Cg * taps);
  d->blocked_weights_ = aligned_floats(static_cast<size_t>(Mp * Cw * taps));
  float* dst = d->blocked_weights_.get();
  std::memset(dst, 0, static_cast<size_t>(Mp * Cw * taps) * sizeof(float));
  // Zero filters pad M up to the block, as ORT's NCHWc transformer pads them.
  if (d->layout_ != Layout::kBlockedOut) {  // [Mp/b][Cw/b][kH][kW][b in][b out]
    for (int64_t m = 0; m < M; ++m)
      for (int64_t c = 0; c < C; ++c)
        for (int64_t t = 0; t < taps; ++t) {
          const int64_t in_out = wrong_layout ? (m % b) * b + c % b : (c % b) * b + m % b;
          dst[(((m / b) * (Cw / b) + c / b) * taps + t) * b * b + in_out] = weights[(m * C + c) * taps + t];
        }
  } else {  // [M/b][C/group][kH][kW][b out]
    for (int64_t m = 0; m < M; ++m)
      for (int64_t c = 0; c < Cg; ++c)
        for (int64_t t = 0; t < taps; ++t) {
          const int64_t lane = wrong_layout ? b - 1 - m % b : m % b;
          dst[(((m / b) * Cg + c) * taps + t) * b + lane] = weights[(m * Cg + c) * taps + t];
        }
  }
  d->blocked_w_shape_ = {Mp, Cw, kh, kw};
  d->cpu_ = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeDefault);
  d->w_value_ = Ort::Value::CreateTensor<float>(d->cpu_, dst, static_cast<size_t>(Mp * Cw * taps),
                                                d->blocked_w_shape_.data(), 4);

  // Invoked nodes get no schema defaults: every attribute the kernels read is given, int arrays as int64.
  const char* type_names[] = {"T"};
  const ONNXTensorElementDataType type_values[] = {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT};
  const int64_t channels_last = 0, group = spec.group;
  const int64_t kernel_shape[2] = {kh, kw}, strides[2] = {win.stride_h, win.stride_w};
  const int64_t dilations[2] = {win.dilation_h, win.dilation_w};
  int64_t pads[4] = {win.pads[0], win.pads[1], win.pads[2], win.pads[3]};
  if (win.auto_pad == AutoPad::kValid) std::fill(pads, pads + 4, 0);
  const std::string auto_pad = win.auto_pad == AutoPad::kSameUpper   ? "SAME_UPPER"
                               : win.auto_pad == AutoPad::kSameLower ? "SAME_LOWER"
                                                                     : "NOTSET";
  try {
    Ort::OpAttr in_attrs[] = {Ort::OpAttr("channels_last", &channels_last, 1, ORT_OP_ATTR_INT)};
    if (d->reorder_input_)
      d->reorder_in_ = Ort::Op::Create(info, "ReorderInput", kNchwcDomain, kNchwcVersion, type_names, type_values, 1,
                                       in_attrs, 1, 1, 1);
    auto create_conv = [&](const ActivationParams& fused, size_t inputs) {
      std::vector<Ort::OpAttr> conv_attrs;
      conv_attrs.emplace_back("kernel_shape", kernel_shape, 2, ORT_OP_ATTR_INTS);
      conv_attrs.emplace_back("strides", strides, 2, ORT_OP_ATTR_INTS);
      conv_attrs.emplace_back("dilations", dilations, 2, ORT_OP_ATTR_INTS);
      if (!same) conv_attrs.emplace_back("pads", pads, 4, ORT_OP_ATTR_INTS);  // SAME: none (given, Create failed)
      conv_attrs.emplace_back("group", &group, 1, ORT_OP_ATTR_INT);
      conv_attrs.emplace_back("auto_pad", auto_pad.data(), static_cast<int>(auto_pad.size()), ORT_OP_ATTR_STRING);
      const std::string name = mlas_activation_name(fused.kind);  // a string's length is its character count
      const float params[2] = {fused.a, fused.b};
      const int param_count = fused.kind == Activation::kClip || fused.kind == Activation::kHardSigmoid ? 2
                              : fused.kind == Activation::kLeakyRelu                                   ? 1
                                                                                                       : 0;
      if (!name.empty())  // the fused activation, and its parameters when it has them
        conv_attrs.emplace_back("activation", name.data(), static_cast<int>(name.size()), ORT_OP_ATTR_STRING);
      if (param_count > 0) conv_attrs.emplace_back("activation_params", params, param_count, ORT_OP_ATTR_FLOATS);
      return Ort::Op::Create(info, "Conv", kNchwcDomain, kNchwcVersion, type_names, type_values, 1, conv_attrs.data(),
                             conv_attrs.size(), inputs, 1);
    };
    try {
      d->conv_ = create_conv(d->fused_, 3);
    } catch (const Ort::Exception&) {
      if (d->fused_.kind == Activation::kNone) throw;
      d->fused_ = ActivationParams{};  // an older runtime's Conv without this activation: ours after it
      d->conv_ = create_conv(d->fused_, 3);
    }
    if (with_sum) d->conv_sum_ = create_conv(d->fused_, 4);
    const Activation act = spec.activation_for(0).kind;
    d->activation_in_conv_ = act == Activation::kNone || d->fused_.kind != Activation::kNone;  // a channel Softmax follows later
    Ort::OpAttr out_attrs[] = {Ort::OpAttr("channels_last", &channels_last, 1, ORT_OP_ATTR_INT),
                               Ort::OpAttr("channels", &spec.out_channels, 1, ORT_OP_ATTR_INT)};
    d->reorder_out_ = Ort::Op::Create(info, "ReorderOutput", kNchwcDomain, kNchwcVersion, type_names, type_values, 1,
                                      out_attrs, 2, 1, 1);
  } catch (const Ort::Exception&) {
    return nullptr;  // this runtime has no NCHWc kernels: the engine's own kernels serve
  }
  return d;
}

bool NchwcDenseConv::adds_sum_in_place() const {
  return conv_sum_ && g_layout_state[static_cast<int>(layout_)].load(std::memory_order_acquire) == 1;
}

bool NchwcDenseConv::compute(OrtKernelContext* raw, const float* src, int64_t H, int64_t W, const float* bias,
                             const float* z, float* y, int64_t Ho, int64_t Wo, const ParallelFor& parallel_for) const {
  if (z != nullptr && !conv_sum_) return false;  // created without the sum: the engine's own kernels add it
  std::atomic<int>& state = g_layout_state[static_cast<int>(layout_)];
  int checked = state.load(std::memory_order_acquire);
  if (checked == 0) {  // first use of this layout in the process: a synthetic item, compared everywhere
    int64_t check_h = 0, check_w = 0;
    if (!check_item_extent(&check_h, &check_w)) return false;  // the own kernels serve this conv; another checks
    const int result = check_layout(raw) ? 1 : 2;
    int expected = 0;
    state.compare_exchange_strong(expected, result);
    checked = state.load(std::memory_order_acquire);
  }
  if (checked == 2) return false;
  run(raw, src, H, W, bias, z, y, Ho, Wo, blocked_io_, blocked_io_ || blocked_out_, parallel_for);
  return true;
}

void NchwcDenseConv::invoke_conv(OrtKernelContext* raw, const OrtValue* x_value, const OrtValue* b_value,
                                 const float* z, int64_t Ho, int64_t Wo, Ort::Value& y_value) const {
  if (z == nullptr) {
    const OrtValue* in[] = {x_value, w_value_, b_value};
    OrtValue* out[] = {y_value};
    conv_.Invoke(raw, in, 3, out, 1);
    return;
  }
  // Sum has Y's shape; ORT copies it into Y unless they are one buffer (a stateless run's scratch,
  // DeltaConvKernel::sum_read_in_place) and accumulates the convolution, bias and fused Relu onto it
  // (contrib_ops/cpu/nchwc_ops.cc, NchwcConv::Compute).
  const std::vector<int64_t> y_shape{1, padded_out_, Ho, Wo};  // y's channels: roundup(M, block)
  const size_t count = static_cast<size_t>(padded_out_ * Ho * Wo);
  Ort::Value z_value = Ort::Value::CreateTensor<float>(cpu_, const_cast<float*>(z), count, y_shape.data(), 4);
  const OrtValue* in[] = {x_value, w_value_, b_value, z_value};
  OrtValue* out[] = {y_value};
  conv_sum_.Invoke(raw, in, 4, out, 1);
}

void NchwcDenseConv::run(OrtKernelContext* raw, const float* src, int64_t H, int64_t W, const float* bias,
                         const float* z, float* y, int64_t Ho, int64_t Wo, bool blocked_in, bool blocked_out,
                         const ParallelFor& parallel_for) const {
  if (blocked_in) {
    run_blocked(raw, src, H, W, bias, z, y, Ho, Wo, parallel_for);
    return;
  }
  const int64_t C = channels_, M = spec_.out_channels, Mp = padded_out_;
  const int64_t Cp = reorder_input_ ? padded_channels(C, kMaxChannelBlock) : C;
  const std::vector<int64_t> x_shape{1, C, H, W}, xb_shape{1, reorder_input_ ? padded_channels(C, block_) : C, H, W};
  const std::vector<int64_t> yb_shape{1, Mp, Ho, Wo}, y_shape{1, M, Ho, Wo}, b_shape{Mp};
  const size_t x_count = static_cast<size_t>(C * H * W), y_count = static_cast<size_t>(M * Ho * Wo);
  // Sized for the largest block, so a runtime whose block differs from ours cannot write past them.
  const size_t xb_count = static_cast<size_t>(Cp * H * W);
  const size_t yb_count = static_cast<size_t>(padded_channels(Mp, kMaxChannelBlock) * Ho * Wo);

  Ort::Value b_value{nullptr};
  const OrtValue* b_tensor = constant_bias_for(bias);
  if (b_tensor == nullptr) {
    float* b = t_bias.get(static_cast<size_t>(padded_channels(Mp, kMaxChannelBlock)));
    std::fill(b, b + Mp, 0.f);
    if (bias != nullptr) std::copy_n(bias, M, b);
    b_value = Ort::Value::CreateTensor<float>(cpu_, b, static_cast<size_t>(Mp), b_shape.data(), 1);
    b_tensor = b_value;
  }
  Ort::Value x_value =
      Ort::Value::CreateTensor<float>(cpu_, const_cast<float*>(src), x_count, x_shape.data(), x_shape.size());
  Ort::Value xb_value{nullptr};
  if (reorder_input_) {  // roundup(C, b) channels, zero lanes past C
    xb_value = Ort::Value::CreateTensor<float>(cpu_, t_blocked_in.get(xb_count), xb_count, xb_shape.data(), 4);
    const OrtValue* in[] = {x_value};
    OrtValue* out[] = {xb_value};
    reorder_in_.Invoke(raw, in, 1, out, 1);
  }
  // blocked_out: the Conv writes y itself, roundup(M, b) channels (the padded filters' lanes act(0 + 0) = 0)
  Ort::Value yb_value = blocked_out
      ? Ort::Value::CreateTensor<float>(cpu_, y, static_cast<size_t>(Mp * Ho * Wo), yb_shape.data(), 4)
      : Ort::Value::CreateTensor<float>(cpu_, t_blocked_out.get(yb_count), yb_count, yb_shape.data(), 4);
  {
    const OrtValue* conv_x = reorder_input_ ? static_cast<const OrtValue*>(xb_value) : static_cast<const OrtValue*>(x_value);
    invoke_conv(raw, conv_x, b_tensor, blocked_out ? z : nullptr, Ho, Wo, yb_value);  // z only with blocked_out
  }
  if (blocked_out) {
    activate_blocked(y, Ho * Wo, parallel_for);
    return;
  }
  if (!activation_in_conv_) {
    unblock_activate(yb_value.GetTensorData<float>(), Ho * Wo, y, parallel_for);
    return;
  }
  Ort::Value y_value = Ort::Value::CreateTensor<float>(cpu_, y, y_count, y_shape.data(), 4);
  const OrtValue* in[] = {yb_value};
  OrtValue* out[] = {y_value};
  reorder_out_.Invoke(raw, in, 1, out, 1);
}

void NchwcDenseConv::unblock_activate(const float* blocked, int64_t plane, float* y,
                                      const ParallelFor& parallel_for) const {
  constexpr int64_t kRun = 1024;  // pixels per task: enough to share among threads, few calls
  const KernelTable& k = kernels();
  const int64_t M = spec_.out_channels, b = block_, blocks = (M + b - 1) / b, runs = (plane + kRun - 1) / kRun;
  parallel_for(blocks * runs, [&](int64_t task) {
    const int64_t cb = task / runs, p0 = (task % runs) * kRun;
    k.unblock_activate(blocked + (cb * plane + p0) * b, b, std::min(b, M - cb * b), std::min(kRun, plane - p0),
                       channel_acts_.data() + cb * b, y + cb * b * plane + p0, plane);
  });
}

void NchwcDenseConv::set_constant_bias(const float* bias, int64_t count) {
  constant_bias_.assign(static_cast<size_t>(padded_channels(padded_out_, kMaxChannelBlock)), 0.f);
  if (bias != nullptr) std::copy_n(bias, std::min(count, padded_out_), constant_bias_.data());
  const int64_t shape[1] = {padded_out_};
  constant_bias_value_ = Ort::Value::CreateTensor<float>(cpu_, constant_bias_.data(), static_cast<size_t>(padded_out_),
                                                         shape, 1);
  constant_bias_source_ = bias;
}

// The calling thread's tensors for this conv's last invocation, made again only when a buffer, a size or the bias
// differs: a stateless run's buffers are the same run after run (a node's share of ~1 us in CreateTensor calls).
// Direct-mapped by conv: a multiplicative hash of its address into 1024 slots (YOLOv8n's 64 convs in 64 slots
// would leave ~40 of them sharing a slot, made anew on every run; in 1024, ~4). A slot holds what the last conv
// mapped there wrote, checked in full, so a conv sharing a slot, or one created where a destroyed one lay, only
// makes them anew.
NchwcDenseConv::InvokeTensors& NchwcDenseConv::invoke_tensors(const float* src, float* y, const float* bias, int64_t H,
                                                              int64_t W, int64_t Ho, int64_t Wo) const {
  constexpr int kSlotBits = 10;
  thread_local std::array<InvokeTensors, size_t{1} << kSlotBits> slots;
  const int64_t C = channels_, M = spec_.out_channels;
  const uint64_t key = static_cast<uint64_t>(reinterpret_cast<uintptr_t>(this)) * 0x9E3779B97F4A7C15ull;
  InvokeTensors& t = slots[key >> (64 - kSlotBits)];
  const bool same_bias = constant_bias_for(bias) != nullptr || (t.b_value && t.bias.size() == static_cast<size_t>(M) &&
      (bias != nullptr ? std::equal(t.bias.begin(), t.bias.end(), bias, [](float a, float b) {
                           return std::memcmp(&a, &b, sizeof(float)) == 0;  // bitwise: NaN and -0 are kept as given
                         })
                       : std::all_of(t.bias.begin(), t.bias.end(), [](float v) { return v == 0.f && !std::signbit(v); })));
  if (!same_bias) {
    t.bias.assign(static_cast<size_t>(M), 0.f);
    if (bias != nullptr) std::copy_n(bias, M, t.bias.data());
    const int64_t b_shape[1] = {M};
    t.b_value = Ort::Value::CreateTensor<float>(cpu_, t.bias.data(), static_cast<size_t>(M), b_shape, 1);
  }
  const std::array<int64_t, 4> x_dims{C, H, W, 0}, y_dims{M, Ho, Wo, 0};
  if (!t.x_value || t.x != src || t.x_dims != x_dims) {
    const int64_t x_shape[4] = {1, C, H, W};
    t.x_value = Ort::Value::CreateTensor<float>(cpu_, const_cast<float*>(src), static_cast<size_t>(C * H * W), x_shape, 4);
    t.x = src;
    t.x_dims = x_dims;
  }
  if (!t.y_value || t.y != y || t.y_dims != y_dims) {
    const int64_t y_shape[4] = {1, M, Ho, Wo};
    t.y_value = Ort::Value::CreateTensor<float>(cpu_, y, static_cast<size_t>(M * Ho * Wo), y_shape, 4);
    t.y = y;
    t.y_dims = y_dims;
  }
  return t;
}

// The Conv alone on blocked src and y (C and M multiples of the block: a padded conv's, pad_conv_channels). Activations MLAS does not
// fuse run over the blocked output in place: uniform ones through the kernel table, PRelu's slopes lane by lane.
void NchwcDenseConv::run_blocked(OrtKernelContext* raw, const float* src, int64_t H, int64_t W, const float* bias,
                                 const float* z, float* y, int64_t Ho, int64_t Wo,
                                 const ParallelFor& parallel_for) const {
  const int64_t M = spec_.out_channels, plane = Ho * Wo;
  InvokeTensors& t = invoke_tensors(src, y, bias, H, W, Ho, Wo);
  const OrtValue* b_tensor = constant_bias_for(bias);
  invoke_conv(raw, t.x_value, b_tensor != nullptr ? b_tensor : static_cast<const OrtValue*>(t.b_value), z, Ho, Wo,
              t.y_value);
  activate_blocked(y, plane, parallel_for);
}

void NchwcDenseConv::activate_blocked(float* y, int64_t plane, const ParallelFor& parallel_for) const {
  if (activation_in_conv_) return;
  const int64_t b = block_;
  constexpr int64_t kRun = 1024;  // pixels per task
  const KernelTable& k = kernels();
  const bool one_act = prelu_slopes_.empty();  // else PRelu's slope per channel
  const int64_t runs = (plane + kRun - 1) / kRun;
  parallel_for(padded_out_ / b * runs, [&](int64_t task) {
    const int64_t cb = task / runs, p0 = (task % runs) * kRun, n = std::min(kRun, plane - p0);
    float* v = y + (cb * plane + p0) * b;
    if (one_act) {  // one activation for every channel: the lines as one run
      k.bias_activate(v, n * b, 0.f, channel_acts_[0]);
      return;
    }
    // PRelu's slopes per channel: the block's b slopes against each pixel's b lanes, apply_activation's prelu_of in a
    // loop the compiler vectorizes (apply_activation's switch per element made a 16->32 3x3 conv at 240x240 take
    // 1.11x as long)
    const float* slopes = prelu_slopes_.data() + cb * b;
    for (int64_t p = 0; p < n; ++p) {
      float* line = v + p * b;
      for (int64_t lane = 0; lane < b; ++lane) line[lane] = prelu_of(line[lane], slopes[lane]);
    }
  });
}

// Runs a small synthetic item (pseudo-random input and bias, every output pixel and channel) through the
// invoked kernels and compares it with a direct computation in double from W as given: a blocked layout that
// differs from what this runtime's MLAS expects cannot pass.
bool NchwcDenseConv::check_item_extent(int64_t* H, int64_t* W) const {
  constexpr int64_t kMaxCheckFloats = int64_t{1} << 22;  // 16 MB: far above any real conv's check item
  const WindowSpec& win = spec_.window;
  int64_t extent = 0;
  if (!mul_fits(win.kernel_h - 1, win.dilation_h, H) || !mul_fits(win.stride_h, 2, &extent)) return false;
  *H += 1 + extent;
  if (!mul_fits(win.kernel_w - 1, win.dilation_w, W) || !mul_fits(win.stride_w, 3, &extent)) return false;
  *W += 1 + extent;
  int64_t floats = 0;
  return mul_fits(channels_, *H, &floats) && mul_fits(floats, *W, &floats) && floats <= kMaxCheckFloats;
}

bool NchwcDenseConv::check_layout(OrtKernelContext* raw) const {
  int64_t H = 0, W = 0;
  if (!check_item_extent(&H, &W)) return false;
  const Window2D w = spec_.window.resolve(H, W);
  const int64_t Ho = w.y.out, Wo = w.x.out, C = channels_, M = spec_.out_channels;
  if (Ho < 1 || Wo < 1) return false;
  const int64_t Cg = spec_.in_channels_per_group, Mg = M / spec_.group;
  std::vector<float> x(checked_count({C, H, W}, "the layout check's input")), bias(static_cast<size_t>(M));
  std::vector<float> y(checked_count({M, Ho, Wo}, "the layout check's output"));
  uint32_t state = 12345u;
  auto next = [&] {  // a small LCG: values in [-1, 1)
    state = state * 1664525u + 1013904223u;
    return static_cast<float>(static_cast<int32_t>(state >> 8) - (1 << 23)) / static_cast<float>(1 << 23);
  };
  for (float& v : x) v = next();
  for (float& v : bias) v = next();
  run(raw, x.data(), H, W, bias.data(), nullptr, y.data(), Ho, Wo, false, false, serial_for);
  for (int64_t m = 0; m < M; ++m) {
    const int64_t g = m / Mg;
    for (int64_t oy = 0; oy < Ho; ++oy)
      for (int64_t ox = 0; ox < Wo; ++ox) {
        double sum = bias[m], magnitude = std::fabs(bias[m]);
        for (int64_t c = 0; c < Cg; ++c)
          for (int64_t ky = 0; ky < w.y.kernel; ++ky) {
            const int64_t iy = w.y.input_of(oy, ky);
            if (iy < 0 || iy >= H) continue;
            for (int64_t kx = 0; kx < w.x.kernel; ++kx) {
              const int64_t ix = w.x.input_of(ox, kx);
              if (ix < 0 || ix >= W) continue;
              const double v = double(weights_[((m * Cg + c) * w.y.kernel + ky) * w.x.kernel + kx]) *
                               x[((g * Cg + c) * H + iy) * W + ix];
              sum += v;
              magnitude += std::fabs(v);
            }
          }
        if (!std::isfinite(magnitude)) continue;  // non-finite weights prove nothing either way
        const double expected = apply_activation(spec_.activation_for(m), static_cast<float>(sum));
        const double got = y[(m * Ho + oy) * Wo + ox];
        if (!(std::fabs(got - expected) <= 1e-4 * std::max(1.0, magnitude))) return false;
      }
  }
  return true;
}

}  // namespace deltaonnx

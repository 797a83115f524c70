// The dense path of DeltaConv on the CPU EP: a batch item recomputed everywhere (first frame, reset, or more
// than dense_fraction of it changed) runs through ORT's own NCHWc Conv kernels, invoked from the op with
// Ort::Op: ReorderInput (NCHW -> NCHWc), com.microsoft.nchwc Conv, ReorderOutput (-> NCHW), the three nodes
// ORT_ENABLE_ALL makes of a Conv. Measured (docs/decisions/ort-invoke.md): 2-8% faster than our own kernels at 100%
// change and as fast as the session's Conv, since they are the same kernels; our kernels stay for partial
// recomputes, which ORT's cannot do.
//
// What it needs, as ORT's NCHWc transformer does: W constant; group 1 (C < block: the NCHW input is read
// directly; else reordered, C % block != 0 padded to whole blocks with zero lanes when C % 4 == 0), or depthwise
// with C a multiple of the block; any auto_pad (SAME without dilation: the Conv resolves the pads per run). M is
// padded up to the block (zero filters), as the transformer pads it. Unlike dense ORT, not where those padded
// lanes make the Conv much more work than our NCHW engine's (versus_nchw_engine below).
// Relu, Clip and LeakyRelu run inside the Conv (MLAS keeps NaN, as ours does); for the others
// our kernel table replaces ReorderOutput and the activation pass with one pass
// (kernel_table.h unblock_activate): the transposed vectors are activated in registers. One pass over the output
// instead of two, though measured no faster on YOLOv8n: SiLU is compute-bound (docs/results.md, "Never slower").
//
// The blocked weight layout is MLAS's, not an API: the first dense run of each layout family in the process
// first runs a small synthetic item through the kernels and compares it with a direct computation; if they
// differ the path is off for the process (the engine's own kernels then do the work). DELTAONNX_DENSE_ENGINE=own turns it off from the start.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "delta_conv/cpu/conv_engine.h"

namespace deltaonnx {

class NchwcDenseConv {
 public:
  // nullptr when the node does not qualify, the dense engine is set to "own", or ORT has no NCHWc kernels
  // (non-x86 builds, CPUs without AVX2). weights: W [M, C/group, kH, kW].
  // blocked_io: src and y are already blocked by MLAS's block (DeltaConv's layout = "blocked"): the Conv reads
  // and writes them as they are, without ReorderInput/ReorderOutput; C and M must be multiples of the block
  // (group 1 or depthwise).
  // blocked_out: src is NCHW (read directly when C < block, else through ReorderInput) and y blocked (DeltaConv's
  // layout = "blocked_out"); group 1; y holds roundup(M, block) channels, the padded filters' lanes act(0) = 0.
  // with_sum: the node has DeltaConv's sum input Z, passed as the NCHWc Conv's Sum input (Y's blocked memory: the
  // Conv adds the convolution to it, then the bias and its fused Relu, as ORT fuses a residual Add); only with
  // blocked_io or blocked_out (nullptr otherwise: the NCHW engine adds Z itself). Z has y's padded shape; its pad
  // lanes are zero, so y's stay zero.
  // versus_nchw_engine: the caller's own engine for the item is the NCHW engine, computing exactly C x M (layouts
  // "nchw" and "blocked_out"; not "blocked", whose engine pads too): nullptr where the Conv's lanes past C and M
  // (roundup to the block) would be many more FMAs than that engine's (lane_waste_favours_own_engine).
  static std::unique_ptr<NchwcDenseConv> create(const OrtKernelInfo* info, const ConvSpec& spec, const float* weights,
                                                bool blocked_io = false, bool blocked_out = false,
                                                bool with_sum = false, bool versus_nchw_engine = false);

  // y [M, Ho, Wo] = act(conv(src [C, H, W]) + bias + z) for one batch item (z: the item's sum in y's layout, or
  // nullptr). False: the path is off (layout check failed, now or earlier): the caller computes the item itself.
  bool compute(OrtKernelContext* context, const float* src, int64_t H, int64_t W, const float* bias, const float* z,
               float* y, int64_t Ho, int64_t Wo, const ParallelFor& parallel_for) const;

  // The node's bias when it is a constant initializer (nullptr: the node has none), `count` floats (up to M): held once
  // as the Conv's bias tensor, used whenever compute() is given `bias` at this very address (or nullptr, for none),
  // so a run neither compares nor copies it (on cold caches, ~10 cache misses a conv). Other biases take the general
  // path. Call before the first compute().
  void set_constant_bias(const float* bias, int64_t count);

  // True where our own engine reads the item in place (depthwise, or 1x1 with stride 1 and no padding): with a
  // reference kept, its detection pass has just brought the source into cache, and ORT's two reorders cost
  // more than they save (measured at 100% change, 1 thread: 1x1 128->128 60x80 1.19 vs 1.11 of ORT's Conv,
  // depthwise 3x3 64 120x160 1.93 vs 1.52); with the reference dropped ORT's kernels are level or faster.
  bool own_engine_reads_in_place() const { return own_in_place_; }

  // True when compute() with a sum surely runs ORT's NCHWc Conv, which adds onto z in place when y == z: the node has
  // the sum and this layout family passed its check in this process.
  bool adds_sum_in_place() const;

  // The layout families, each checked once per process.
  // OIHWBiBo (group 1), OIHWBo (C < block, depthwise), OIHWBiBo over roundup(C, block) input lanes (C % block != 0)
  enum class Layout { kBlockedInOut = 0, kBlockedOut = 1, kPaddedIn = 2 };

 private:
  NchwcDenseConv() = default;
  // blocked_in: src and y blocked (the Conv alone); else src NCHW, and y blocked (blocked_out: no ReorderOutput)
  // or NCHW. The layout check always runs NCHW to NCHW.
  // z: the sum (blocked_out or blocked_in only), or nullptr.
  void run(OrtKernelContext* context, const float* src, int64_t H, int64_t W, const float* bias, const float* z,
           float* y, int64_t Ho, int64_t Wo, bool blocked_in, bool blocked_out, const ParallelFor& parallel_for) const;
  void run_blocked(OrtKernelContext* context, const float* src, int64_t H, int64_t W, const float* bias,
                   const float* z, float* y, int64_t Ho, int64_t Wo, const ParallelFor& parallel_for) const;
  // The tensors of one invocation of the blocked Conv (run_blocked), kept per thread: invoke_tensors.
  struct InvokeTensors {
    const float* x = nullptr;
    float* y = nullptr;
    std::array<int64_t, 4> x_dims{}, y_dims{};
    std::vector<float> bias;  // the bias the b_value holds (M floats; zeros without a bias)
    Ort::Value x_value{nullptr}, y_value{nullptr}, b_value{nullptr};
  };
  InvokeTensors& invoke_tensors(const float* src, float* y, const float* bias, int64_t H, int64_t W, int64_t Ho,
                                int64_t Wo) const;
  // The constant bias tensor when `bias` is the one set_constant_bias was given, else nullptr.
  const OrtValue* constant_bias_for(const float* bias) const {
    return constant_bias_value_ && bias == constant_bias_source_ ? static_cast<const OrtValue*>(constant_bias_value_)
                                                                 : nullptr;
  }
  // The Conv on x_value into y_value (blocked, roundup(M, block) channels), reading z as its Sum when given.
  void invoke_conv(OrtKernelContext* context, const OrtValue* x_value, const OrtValue* b_value, const float* z,
                   int64_t Ho, int64_t Wo, Ort::Value& y_value) const;
  // The activations MLAS does not fuse, in place on a blocked y [Mp/b, plane, b] (Mp = roundup(M, block)).
  void activate_blocked(float* y, int64_t plane, const ParallelFor& parallel_for) const;
  // y [M, plane] = act(blocked [Mp/b, plane, b]) channel by channel: ReorderOutput and the activation in one pass.
  void unblock_activate(const float* blocked, int64_t plane, float* y, const ParallelFor& parallel_for) const;
  bool check_layout(OrtKernelContext* context) const;
  // The synthetic item check_layout runs ([C, H, W], two output rows and three columns), or false when this
  // conv's window (huge strides or dilations) would make it too large to be worth allocating.
  bool check_item_extent(int64_t* H, int64_t* W) const;

  ConvSpec spec_;
  int64_t block_ = 0, channels_ = 0, padded_out_ = 0;
  bool reorder_input_ = true;  // false: C < block, the Conv reads NCHW
  bool activation_in_conv_ = true;  // none, or fused_ inside the NCHWc Conv
  ActivationParams fused_;  // the activation MLAS applies inside the Conv (Relu, Clip, LeakyRelu), else none
  bool own_in_place_ = false;
  bool blocked_io_ = false;
  bool blocked_out_ = false;
  Layout layout_ = Layout::kBlockedInOut;
  std::vector<ActivationParams> channel_acts_;  // the activation of each output channel (PRelu slopes differ)
  std::vector<float> prelu_slopes_;  // with PRelu's slope per channel: those, one per padded output lane
  std::vector<int64_t> blocked_w_shape_;
  std::vector<float> weights_;  // W as given (for the layout check)
  std::shared_ptr<float> blocked_weights_;
  std::vector<float> constant_bias_;  // padded_out_ floats, zeros past the node's
  const float* constant_bias_source_ = nullptr;
  Ort::Value constant_bias_value_{nullptr};  // read-only: every thread's invocations share it
  Ort::MemoryInfo cpu_{nullptr};
  Ort::Value w_value_{nullptr};
  // mutable only because the C++ wrapper's Invoke is not const; the C API's InvokeOp takes a const OrtOp*.
  mutable Ort::Op reorder_in_{nullptr}, conv_{nullptr}, reorder_out_{nullptr};
  mutable Ort::Op conv_sum_{nullptr};  // the same Conv with a Sum input (with_sum)
};

}  // namespace deltaonnx

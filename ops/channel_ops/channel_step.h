// The squeeze-excite ops of a blocked region (docs/ops.md#deltaglobalaveragepool, #deltachannelscale,
// #deltachannelgate), their geometry
// and per-element rules written once for the CPU kernels, the CUDA kernels and their host emulation. A tensor is
// `planes` planes of `lane` floats per pixel: NCHW is lane 1 and C planes, the blocked layout lane b and Cb / b planes
// ([N][Cb/b][H][W][b], Cb = roundup(C, b)), so one rule serves both. ORT-free and CUDA-free (common/host_device.h).
#pragma once
#include <cstdint>

#include "common/activation.h"
#include "common/host_device.h"

namespace deltaonnx {

struct ChannelGeometry {
  int64_t batch = 0, planes = 0;  // N, planes per item
  int64_t pixels = 0;             // H * W
  int64_t lane = 1;               // floats per pixel of a plane
  int64_t channels = 0;           // C, the logical channels (lanes past C in the last plane are pad lanes)

  DELTA_HD int64_t elements() const { return batch * planes * pixels * lane; }
  DELTA_HD int64_t outputs() const { return batch * channels; }  // the pool's [N, C]
  // Channel c's float at pixel p of item n.
  DELTA_HD int64_t offset(int64_t n, int64_t c, int64_t p) const {
    return ((n * planes + c / lane) * pixels + p) * lane + c % lane;
  }
};

// DeltaGlobalAveragePool: y [N, C] (NCHW [N, C, 1, 1]) = the mean over H x W of each channel of x.
struct GlobalPoolStep {
  ChannelGeometry g;
  const float* x = nullptr;
  float* y = nullptr;
};

// Output i (n * C + c): the sum in pixel order, then divided by H * W (a plane without pixels gives NaN, 0 / 0).
DELTA_HD void global_pool_thread(const GlobalPoolStep& s, int64_t i) {
  const int64_t n = i / s.g.channels, c = i % s.g.channels;
  float sum = 0.f;
  for (int64_t p = 0; p < s.g.pixels; ++p) sum += s.x[s.g.offset(n, c, p)];
  s.y[i] = sum / static_cast<float>(s.g.pixels);
}

// DeltaChannelScale: y = x times its channel's scale (a squeeze-excite gate [Ns, C, 1, 1], Ns = N or 1), in x's
// layout; pad lanes are written 0 (the blocked layout's invariant, docs/ops.md#padded-blocks).
struct ChannelScaleStep {
  ChannelGeometry g;
  const float* x = nullptr;
  const float* scale = nullptr;  // [Ns][C]
  int64_t scale_batch = 1;       // Ns
  float* y = nullptr;
};

// The scale of channel c of item n.
DELTA_HD float channel_scale_of(const ChannelScaleStep& s, int64_t n, int64_t c) {
  return s.scale[(s.scale_batch == 1 ? 0 : n) * s.g.channels + c];
}

// Output float i (an index into [N][planes][pixels][lane]).
DELTA_HD void channel_scale_thread(const ChannelScaleStep& s, int64_t i) {
  const int64_t j = i % s.g.lane, plane = i / (s.g.lane * s.g.pixels);  // plane: n * planes + c / lane
  const int64_t n = plane / s.g.planes, c = (plane % s.g.planes) * s.g.lane + j;
  s.y[i] = c < s.g.channels ? s.x[i] * channel_scale_of(s, n, c) : 0.f;
}

// DeltaChannelGate: a squeeze-excite block's gate in one op. Per item n: means = the mean of each channel of x
// (GlobalPoolStep's rule, into `means`), hidden = act1(W1 means + B1), s = act2(W2 hidden + B2) (two 1x1 convs on one
// pixel: W1 [R, C], W2 [C2, R], row-major); changed[n] = 1 when any pixel of the item is marked in map_in (no map:
// 1), the item's gate being a function of all of them. No state: the gate is recomputed on every run (it is C * R +
// R * C2 multiply-adds against a plane's C * H * W reads).
struct GateLayer {
  const float* w = nullptr;  // [outputs][inputs]
  const float* b = nullptr;  // [outputs] or null
  int64_t inputs = 0, outputs = 0;
  ActivationParams activation;
};

struct ChannelGateStep {
  GlobalPoolStep pool;  // pool.y: the means [N, C] (scratch)
  float* hidden = nullptr;  // [N, R] (scratch)
  GateLayer reduce, expand;  // C -> R, R -> C2
  float* s = nullptr;  // [N, C2]
  const uint8_t* map_in = nullptr;  // [N, 1, H, W] or null
  uint8_t* map_out = nullptr;  // [N] or null (not asked for)
};

// Output i (n * outputs + o) of a layer reading in [N][inputs]: the products summed in input order, then the bias.
DELTA_HD void gate_layer_thread(const GateLayer& layer, const float* in, float* out, int64_t i) {
  const int64_t n = i / layer.outputs, o = i % layer.outputs;
  const float* row = layer.w + o * layer.inputs;
  const float* x = in + n * layer.inputs;
  float sum = 0.f;
  for (int64_t k = 0; k < layer.inputs; ++k) sum += row[k] * x[k];
  out[i] = apply_activation(layer.activation, sum + (layer.b != nullptr ? layer.b[o] : 0.f));
}

// Item n's change flag: any marked pixel of map_in (1 without a map).
DELTA_HD uint8_t gate_changed(const ChannelGateStep& s, int64_t n) {
  if (s.map_in == nullptr) return 1;
  const uint8_t* m = s.map_in + n * s.pool.g.pixels;
  for (int64_t p = 0; p < s.pool.g.pixels; ++p)
    if (m[p] != 0) return 1;
  return 0;
}

}  // namespace deltaonnx

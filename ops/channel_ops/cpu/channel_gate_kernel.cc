#include "channel_ops/cpu/channel_gate_kernel.h"

#include <algorithm>
#include <cstring>

#include "channel_ops/channel_launch.h"
#include "channel_ops/cpu/channel_engine.h"
#include "common/aligned_scratch.h"
#include "common/channel_block.h"
#include "ort_util.h"

namespace deltaonnx {
namespace {

// W [outputs][inputs] -> [inputs][outputs].
void transpose_into(const float* w, int64_t outputs, int64_t inputs, float* t) {
  for (int64_t o = 0; o < outputs; ++o)
    for (int64_t k = 0; k < inputs; ++k) t[k * outputs + o] = w[o * inputs + k];
}

std::vector<float> constant_transposed(const OrtKernelInfo* raw, size_t slot) {
  Ort::ConstKernelInfo info(raw);
  int is_constant = 0;
  Ort::ConstValue w = info.GetTensorConstantInput(slot, &is_constant);
  if (!is_constant) return {};
  const std::vector<int64_t> ws = w.GetTensorTypeAndShapeInfo().GetShape();
  if (ws.size() < 2 || ws[0] < 1 || ws[1] < 1) return {};  // refused with its shape when the node runs
  std::vector<float> t(static_cast<size_t>(ws[0] * ws[1]));
  transpose_into(w.GetTensorData<float>(), ws[0], ws[1], t.data());
  return t;
}

// One layer over every item: out[n] = act(sum over k of in[n][k] * W[:, k], then + B), wt = W transposed. The sum
// runs in input order, as gate_layer_thread's (channel_step.h) does.
void run_layer(const GateLayer& layer, const float* wt, const float* in, float* out, int64_t items) {
  const int64_t O = layer.outputs, K = layer.inputs;
  for (int64_t n = 0; n < items; ++n) {
    float* y = out + n * O;
    std::fill_n(y, O, 0.f);
    for (int64_t k = 0; k < K; ++k) {
      const float v = in[n * K + k];
      const float* row = wt + k * O;
      for (int64_t o = 0; o < O; ++o) y[o] += row[o] * v;
    }
    for (int64_t o = 0; o < O; ++o)
      y[o] = apply_activation(layer.activation, y[o] + (layer.b != nullptr ? layer.b[o] : 0.f));
  }
}

const float* transposed(const GateLayer& layer, const std::vector<float>& constant, AlignedScratch& scratch) {
  if (static_cast<int64_t>(constant.size()) == layer.inputs * layer.outputs) return constant.data();
  float* t = scratch.get(static_cast<size_t>(layer.inputs * layer.outputs));
  transpose_into(layer.w, layer.outputs, layer.inputs, t);
  return t;
}

}  // namespace

ChannelGateKernel::ChannelGateKernel(const OrtKernelInfo* info)
    : SchemaKernel(info),
      attributes_(read_channel_gate_attributes(AttributeReader(info))),
      block_(cpu_channel_block()),
      reduce_t_(constant_transposed(info, channel_gate::kW1)),
      expand_t_(constant_transposed(info, channel_gate::kW2)) {}

void ChannelGateKernel::compute(OrtKernelContext* raw) const {
  Ort::KernelContext ctx(raw);
  const KernelInputs in(ctx);
  ChannelGateStep s = prepare_channel_gate(ctx, in, attributes_, block_);
  const int64_t items = s.pool.g.batch;
  thread_local AlignedScratch means, hidden, reduce_t, expand_t;
  s.pool.y = means.get(static_cast<size_t>(std::max<int64_t>(1, items * s.pool.g.channels)));
  s.hidden = hidden.get(static_cast<size_t>(std::max<int64_t>(1, items * s.reduce.outputs)));
  global_pool(s.pool, ort_parallel_for(ctx));
  run_layer(s.reduce, transposed(s.reduce, reduce_t_, reduce_t), s.pool.y, s.hidden, items);
  run_layer(s.expand, transposed(s.expand, expand_t_, expand_t), s.hidden, s.s, items);
  if (s.map_out != nullptr)
    for (int64_t n = 0; n < items; ++n) s.map_out[n] = gate_changed(s, n);
}

}  // namespace deltaonnx

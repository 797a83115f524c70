// DeltaChannelGate for ORT's CPU execution provider (docs/ops.md#deltachannelgate): a squeeze-excite block's pool, its
// two 1x1 convs and their activations in one node, reading the region's blocked tensor as it lies. Constant weights
// are transposed once ([inputs][outputs]), so each layer is a sum of scaled weight rows the compiler vectorises.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <vector>

#include "op_definition/delta_attributes.h"
#include "op_definition/op_schemas.h"

namespace deltaonnx {

class ChannelGateKernel : public SchemaKernel<kChannelGateSchema> {
 public:
  explicit ChannelGateKernel(const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
  ChannelGateAttributes attributes_;
  int64_t block_ = 1;
  // W1 and W2 transposed when they are constant initializers (empty otherwise: transposed per run).
  std::vector<float> reduce_t_, expand_t_;
};

struct ChannelGateOp : SchemaOp<ChannelGateOp, ChannelGateKernel, kChannelGateSchema> {};

}  // namespace deltaonnx

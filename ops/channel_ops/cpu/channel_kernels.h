// DeltaGlobalAveragePool and DeltaChannelScale for ORT's CPU execution provider: the ops as op_definition/ declares
// them, blocked memory with the library's channel block b (common/channel_block.h). One kernel class for both: the
// same attributes, the op's run chosen by its schema.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <cstdint>

#include "op_definition/delta_attributes.h"
#include "op_definition/op_schemas.h"

namespace deltaonnx {

template <const OpSchema& Schema>
class ChannelOpKernel : public SchemaKernel<Schema> {
 public:
  explicit ChannelOpKernel(const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return this->guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
  ChannelOpAttributes attributes_;
  int64_t block_ = 1;
};

using GlobalPoolKernel = ChannelOpKernel<kGlobalPoolSchema>;
using ChannelScaleKernel = ChannelOpKernel<kChannelScaleSchema>;
struct GlobalPoolOp : SchemaOp<GlobalPoolOp, GlobalPoolKernel, kGlobalPoolSchema> {};
struct ChannelScaleOp : SchemaOp<ChannelScaleOp, ChannelScaleKernel, kChannelScaleSchema> {};

}  // namespace deltaonnx

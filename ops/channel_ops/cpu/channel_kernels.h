// DeltaGlobalAveragePool and DeltaChannelScale for ORT's CPU execution provider: the ops as op_definition/ declares
// them, blocked memory with the library's channel block b (common/channel_block.h).
#pragma once
#include <onnxruntime_cxx_api.h>

#include <cstdint>

#include "op_definition/delta_attributes.h"
#include "op_definition/op_schemas.h"

namespace deltaonnx {

class GlobalPoolKernel : public SchemaKernel<kGlobalPoolSchema> {
 public:
  explicit GlobalPoolKernel(const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
  ChannelOpAttributes attributes_;
  int64_t block_ = 1;
};

class ChannelScaleKernel : public SchemaKernel<kChannelScaleSchema> {
 public:
  explicit ChannelScaleKernel(const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
  ChannelOpAttributes attributes_;
  int64_t block_ = 1;
};

struct GlobalPoolOp : SchemaOp<GlobalPoolOp, GlobalPoolKernel, kGlobalPoolSchema> {};
struct ChannelScaleOp : SchemaOp<ChannelScaleOp, ChannelScaleKernel, kChannelScaleSchema> {};

}  // namespace deltaonnx

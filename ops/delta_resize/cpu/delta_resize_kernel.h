// DeltaResize for ORT's CPU execution provider: the op as op_definition/ declares it, blocked memory with the
// library's channel block b (common/channel_block.h, DeltaConv's layout = "blocked").
#pragma once
#include <onnxruntime_cxx_api.h>

#include <cstdint>

#include "op_definition/delta_attributes.h"
#include "op_definition/op_schemas.h"

namespace deltaonnx {

class DeltaResizeKernel : public SchemaKernel<kDeltaResizeSchema> {
 public:
  explicit DeltaResizeKernel(const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
  ResizeAttributes attributes_;
  int64_t block_ = 1;
};

struct DeltaResizeOp : SchemaOp<DeltaResizeOp, DeltaResizeKernel, kDeltaResizeSchema> {};

}  // namespace deltaonnx

// DeltaReorder for ORT's CPU execution provider: the op as op_definition/ declares it, with the library's
// channel block b (common/channel_block.h, the one DeltaConv's layout = "blocked" uses).
#pragma once
#include <onnxruntime_cxx_api.h>

#include <cstdint>

#include "op_definition/delta_attributes.h"
#include "op_definition/op_schemas.h"

namespace deltaonnx {

class DeltaReorderKernel : public SchemaKernel<kDeltaReorderSchema> {
 public:
  explicit DeltaReorderKernel(const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
  ReorderAttributes attributes_;
  int64_t block_ = 1;
};

struct DeltaReorderOp : SchemaOp<DeltaReorderOp, DeltaReorderKernel, kDeltaReorderSchema> {};

}  // namespace deltaonnx

// DeltaConv for ORT's CPU execution provider: the op as op_definition/ declares it for every provider, with a
// kernel that packs constant weights once and runs the CPU engine on each call. The kernel object is
// immutable after creation: ORT may call Compute from several threads at once.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <memory>
#include <vector>

#include "delta_conv/cpu/blocked_engine.h"
#include "delta_conv/cpu/conv_engine.h"
#include "delta_conv/cpu/nchwc_dense_conv.h"
#include "op_definition/delta_attributes.h"
#include "op_definition/op_schemas.h"

namespace deltaonnx {

class DeltaConvKernel : public SchemaKernel<kDeltaConvSchema> {
 public:
  explicit DeltaConvKernel(const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
  // The engine's spec for weights of shape w_shape (throws UserError when they do not fit the attributes).
  ConvSpec spec_for(const Shape& w_shape) const;
  // Z where the run reads it: in place, or a copy when it overlaps Y otherwise (count: Z's floats).
  static const float* sum_read_in_place(const float* z, const float* y, size_t count, bool whole_items_in_place);

  DeltaConvAttributes attributes_;
  Shape w_shape_;                              // when W is a constant initializer: its shape,
  ConvSpec spec_;                              // the engine's spec for it
  ConvSpec blocked_spec_;                      // and that padded to whole channel blocks (layout "blocked")
  bool bias_fits_ = false;                     // B is a constant of shape [M] for the constant W: not checked per run
  std::vector<float> padded_bias_;             // that B padded with zeros to Y's channels (layout "blocked")
  std::unique_ptr<PackedConvWeights> packed_;  // W packed once when constant (layout "nchw")
  std::unique_ptr<BlockedConvWeights> blocked_;  // W as the blocked engine reads it, when constant (layout "blocked")
  std::unique_ptr<NchwcDenseConv> dense_;      // ORT's NCHWc Conv for items recomputed everywhere, if usable
  bool dense_reads_nchw_ = false;  // "blocked" with C < b: dense_ is blocked_out's, fed the item unblocked
};

struct DeltaConvOp : SchemaOp<DeltaConvOp, DeltaConvKernel, kDeltaConvSchema> {};

}  // namespace deltaonnx

// DeltaConv for ORT's CPU execution provider: reads and checks the node's attributes once (errors name the
// node and the attribute), packs constant weights once, and runs the engine on each call. The kernel object
// is immutable after creation: ORT may call Compute from several threads at once.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <memory>
#include <string>

#include "delta_conv/cpu/conv_engine.h"
#include "delta_conv/cpu/nchwc_dense_conv.h"

namespace deltaonnx {

class DeltaConvKernel {
 public:
  DeltaConvKernel(const OrtApi& api, const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  void compute(OrtKernelContext* context);

  std::string node_;
  ConvSpec spec_;               // out/in channels filled from W (at creation when W is constant)
  bool spec_from_weights_ = false;
  std::unique_ptr<PackedConvWeights> packed_;  // when W is a constant initializer
  std::unique_ptr<NchwcDenseConv> dense_;       // ORT's NCHWc Conv for items recomputed everywhere, if usable
};

struct DeltaConvOp : Ort::CustomOpBase<DeltaConvOp, DeltaConvKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const { return "DeltaConv"; }
  size_t GetInputTypeCount() const { return 6; }
  ONNXTensorElementDataType GetInputType(size_t index) const;
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const;
  size_t GetOutputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetOutputType(size_t index) const;
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t index) const {
    return index == 1 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;  // X_ref_next: absent when dropped
  }
};

}  // namespace deltaonnx

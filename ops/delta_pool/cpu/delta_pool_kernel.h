// DeltaPool (MaxPool) for ORT's CPU execution provider; immutable after creation like DeltaConvKernel.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <string>

#include "delta_pool/cpu/pool_engine.h"

namespace deltaonnx {

class DeltaPoolKernel {
 public:
  DeltaPoolKernel(const OrtApi& api, const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  void compute(OrtKernelContext* context);
  std::string node_;
  PoolSpec spec_;
};

struct DeltaPoolOp : Ort::CustomOpBase<DeltaPoolOp, DeltaPoolKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const { return "DeltaPool"; }
  size_t GetInputTypeCount() const { return 4; }
  ONNXTensorElementDataType GetInputType(size_t index) const;
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const;
  size_t GetOutputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetOutputType(size_t index) const;
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t index) const {
    return index == 1 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;  // X_ref_next: absent when dropped
  }
};

}  // namespace deltaonnx

// InvokedConv (experimental): a custom op that runs ORT's own CPU Conv kernel through Ort::Op.
// Inputs X [N,C,H,W], W [M,C/group,kH,kW], B [M] (optional); output Y. Conv attributes as in ONNX.
// The Op is created once, in the kernel constructor, from the kernel info ORT hands to CreateKernel;
// Compute sizes Y and lets the invoked Conv write into it.
#pragma once
#include <onnxruntime_cxx_api.h>

#include "conv_geometry.h"

namespace ort_invoke {

class InvokedConvKernel {
 public:
  InvokedConvKernel(const OrtApi& api, const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  void compute(OrtKernelContext* context);

  ConvGeometry geometry_;
  size_t input_count_ = 0;  // 2 (no bias) or 3; the Op is created for exactly this many
  Ort::Op conv_{nullptr};
};

struct InvokedConvOp : Ort::CustomOpBase<InvokedConvOp, InvokedConvKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const { return "InvokedConv"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index == 2 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

}  // namespace ort_invoke

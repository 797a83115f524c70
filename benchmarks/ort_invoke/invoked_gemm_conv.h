// InvokedGemmConv (experimental): a Conv computed as im2col + ORT's own MatMul or Gemm run through Ort::Op,
// the way a Delta op would hand ORT the patches of the pixels it gathered.
// Inputs X [N,C,H,W], W [M,C,kH,kW] (group 1 only), B [M] (optional); output Y [N,M,Ho,Wo].
// Attributes: the Conv ones, plus
//   panel   (int, default 0): output pixels per invoked product; 0 = all pixels of a batch item at once
//           (the product then writes straight into Y; otherwise into a scratch panel copied into Y);
//   product (string, default "Gemm"): "Gemm" (the bias goes in as C [M,1]) or "MatMul" (bias added after).
// Per batch item and panel: col [K = C*kH*kW, P] gathered from X, then [M,K] x [K,P] -> [M,P].
#pragma once
#include <onnxruntime_cxx_api.h>

#include "conv_geometry.h"

namespace ort_invoke {

class InvokedGemmConvKernel {
 public:
  InvokedGemmConvKernel(const OrtApi& api, const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  void compute(OrtKernelContext* context);

  ConvGeometry geometry_;
  bool has_bias_ = false;
  bool use_gemm_ = true;  // false: MatMul
  int64_t panel_ = 0;
  Ort::MemoryInfo cpu_{nullptr};
  Ort::Op product_{nullptr};
};

struct InvokedGemmConvOp : Ort::CustomOpBase<InvokedGemmConvOp, InvokedGemmConvKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const { return "InvokedGemmConv"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index == 2 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

}  // namespace ort_invoke

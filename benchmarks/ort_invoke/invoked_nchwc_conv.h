// InvokedNchwcConv (experimental): ORT's NCHWc Conv kernel (domain com.microsoft.nchwc, the one ORT_ENABLE_ALL
// puts in place of a Conv) run through Ort::Op: ReorderInput (NCHW -> NCHWc), Conv, ReorderOutput (-> NCHW),
// exactly the three nodes ORT's NCHWc transformer makes of a lone Conv. The weights are reordered here, once,
// into the blocked layout the transformer stores, [M/b][C/b][kH][kW][b (input)][b (output)].
// Inputs X [N,C,H,W], W [M,C,kH,kW] (a constant initializer), B [M] (optional); group 1; C and M multiples of b.
// Attributes: `block` (int, default 0 = what MLAS uses on this CPU: 16 with AVX-512F, else 8);
// `band_rows` (int, default 0 = the whole image at once): output rows per invocation, as a Delta op would
// recompute a band of tiles: the band's input rows (halo included, zero rows for the top/bottom padding)
// are copied out, run through the three kernels with no vertical padding, and copied into Y.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <memory>

#include "conv_geometry.h"

namespace ort_invoke {

class InvokedNchwcConvKernel {
 public:
  InvokedNchwcConvKernel(const OrtApi& api, const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  void compute(OrtKernelContext* context);
  void compute_bands(OrtKernelContext* context, const float* x, const std::vector<int64_t>& xs, float* y,
                     int64_t Ho, int64_t Wo);

  ConvGeometry geometry_;
  int64_t block_ = 0;
  int64_t band_rows_ = 0;
  bool has_bias_ = false;
  std::vector<int64_t> w_shape_;
  std::shared_ptr<float> blocked_weights_;  // 64-byte aligned, [M/b][C/b][kH][kW][b][b]
  Ort::MemoryInfo cpu_{nullptr};
  Ort::Value w_value_{nullptr};
  Ort::Op reorder_input_{nullptr};
  Ort::Op conv_{nullptr};
  Ort::Op band_conv_{nullptr};  // band_rows > 0: the same Conv with the top/bottom pads taken out
  Ort::Op reorder_output_{nullptr};
};

struct InvokedNchwcConvOp : Ort::CustomOpBase<InvokedNchwcConvOp, InvokedNchwcConvKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const { return "InvokedNchwcConv"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index == 2 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

}  // namespace ort_invoke

// DeltaConv for ORT's CUDAExecutionProvider: the custom op (signature of docs/ops.md) and its kernel.
#pragma once
#include <string>
#include <vector>

#include <onnxruntime_cxx_api.h>

#include "common/activation.h"
#include "cuda_common/ort_support.h"
#include "cuda_common/window_attributes.h"

namespace deltaonnx {
namespace cuda {

class DeltaConvCudaKernel {
 public:
  explicit DeltaConvCudaKernel(const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return status_of([&] { Compute(context); });
  }

 private:
  void Compute(OrtKernelContext* context) const;
  [[noreturn]] void fail(const std::string& what) const;

  std::string node_;
  WindowAttributes window_;
  int64_t group_ = 1;
  ConvActivation activation_;
};

struct DeltaConvCudaOp : Ort::CustomOpBase<DeltaConvCudaOp, DeltaConvCudaKernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& /*api*/, const OrtKernelInfo* info, void** kernel) const {
    return status_of([&] { *kernel = new DeltaConvCudaKernel(info); });
  }
  const char* GetName() const { return "DeltaConv"; }
  const char* GetExecutionProviderType() const { return kExecutionProvider; }

  // X, W, B (optional), X_ref, Y_prev, map_in (optional)
  size_t GetInputTypeCount() const { return 6; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return index == 5 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index == 2 || index == 5 ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                                    : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
  }
  // Y, X_ref_next, map_out (optional: without it the map lives in scratch)
  size_t GetOutputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetOutputType(size_t index) const {
    return index == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t index) const {
    return index == 2 ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                      : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
  }
};

}  // namespace cuda
}  // namespace deltaonnx

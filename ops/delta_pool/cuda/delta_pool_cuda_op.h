// DeltaPool (MaxPool) for ORT's CUDAExecutionProvider: the custom op (docs/ops.md) and its kernel.
#pragma once
#include <string>

#include <onnxruntime_cxx_api.h>

#include "cuda_common/ort_support.h"
#include "cuda_common/window_attributes.h"

namespace deltaonnx {
namespace cuda {

class DeltaPoolCudaKernel {
 public:
  explicit DeltaPoolCudaKernel(const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return status_of([&] { Compute(context); });
  }

 private:
  void Compute(OrtKernelContext* context) const;
  [[noreturn]] void fail(const std::string& what) const;

  std::string node_;
  WindowAttributes window_;
};

struct DeltaPoolCudaOp : Ort::CustomOpBase<DeltaPoolCudaOp, DeltaPoolCudaKernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& /*api*/, const OrtKernelInfo* info, void** kernel) const {
    return status_of([&] { *kernel = new DeltaPoolCudaKernel(info); });
  }
  const char* GetName() const { return "DeltaPool"; }
  const char* GetExecutionProviderType() const { return kExecutionProvider; }

  // X, X_ref, Y_prev, map_in (optional)
  size_t GetInputTypeCount() const { return 4; }
  ONNXTensorElementDataType GetInputType(size_t index) const {
    return index == 3 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8 : ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t index) const {
    return index == 3 ? OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_OPTIONAL
                      : OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_REQUIRED;
  }
  // Y, X_ref_next, map_out (optional)
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

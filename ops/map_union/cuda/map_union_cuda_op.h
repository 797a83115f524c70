// DeltaMapUnion for ORT's CUDAExecutionProvider: variadic uint8 maps of one shape in, their OR out (0/1).
#pragma once
#include <string>

#include <onnxruntime_cxx_api.h>

#include "cuda_common/ort_support.h"

namespace deltaonnx {
namespace cuda {

class MapUnionCudaKernel {
 public:
  explicit MapUnionCudaKernel(const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return status_of([&] { Compute(context); });
  }

 private:
  void Compute(OrtKernelContext* context) const;
  std::string node_;
};

struct MapUnionCudaOp : Ort::CustomOpBase<MapUnionCudaOp, MapUnionCudaKernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& /*api*/, const OrtKernelInfo* info, void** kernel) const {
    return status_of([&] { *kernel = new MapUnionCudaKernel(info); });
  }
  const char* GetName() const { return "DeltaMapUnion"; }
  const char* GetExecutionProviderType() const { return kExecutionProvider; }

  size_t GetInputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetInputType(size_t /*index*/) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t /*index*/) const {
    return OrtCustomOpInputOutputCharacteristic::INPUT_OUTPUT_VARIADIC;
  }
  int GetVariadicInputMinArity() const { return 1; }
  bool GetVariadicInputHomogeneity() const { return true; }

  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t /*index*/) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8; }
};

}  // namespace cuda
}  // namespace deltaonnx

// DeltaMapUnion: the elementwise OR of change maps of one shape, where maps meet (residual Add, Concat).
#pragma once
#include <onnxruntime_cxx_api.h>

#include <string>

namespace deltaonnx {

class MapUnionKernel {
 public:
  MapUnionKernel(const OrtApi& api, const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  std::string node_;
};

struct MapUnionOp : Ort::CustomOpBase<MapUnionOp, MapUnionKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const { return "DeltaMapUnion"; }
  size_t GetInputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t) const { return INPUT_OUTPUT_VARIADIC; }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8; }
};

}  // namespace deltaonnx

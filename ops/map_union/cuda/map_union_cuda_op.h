// DeltaMapUnion for ORT's CUDAExecutionProvider: variadic uint8 maps of one shape in, their OR out (0/1).
#pragma once
#include <onnxruntime_cxx_api.h>

#include "cuda_common/ort_support.h"
#include "op_definition/op_schemas.h"

namespace deltaonnx {
namespace cuda {

class MapUnionCudaKernel : public SchemaKernel<kMapUnionSchema> {
 public:
  explicit MapUnionCudaKernel(const OrtKernelInfo* info) : SchemaKernel(info) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
};

struct MapUnionCudaOp : SchemaOp<MapUnionCudaOp, MapUnionCudaKernel, kMapUnionSchema> {
  const char* GetExecutionProviderType() const { return kExecutionProvider; }
};

}  // namespace cuda
}  // namespace deltaonnx

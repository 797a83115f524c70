// DeltaMapUnion for ORT's CPU execution provider: the elementwise OR of change maps of one shape, where maps
// meet (residual Add, Concat). The op as op_definition/ declares it for every provider.
#pragma once
#include <onnxruntime_cxx_api.h>

#include "op_definition/op_schemas.h"

namespace deltaonnx {

class MapUnionKernel : public SchemaKernel<kMapUnionSchema> {
 public:
  explicit MapUnionKernel(const OrtKernelInfo* info) : SchemaKernel(info) {}
  OrtStatusPtr ComputeV2(OrtKernelContext* context) {
    return guarded([&] { compute(context); });
  }

 private:
  void compute(OrtKernelContext* context) const;
};

struct MapUnionOp : SchemaOp<MapUnionOp, MapUnionKernel, kMapUnionSchema> {};

}  // namespace deltaonnx

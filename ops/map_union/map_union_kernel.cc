#include "map_union/map_union_kernel.h"

#include "ort_util.h"

namespace deltaonnx {

MapUnionKernel::MapUnionKernel(const OrtApi&, const OrtKernelInfo* info)
    : node_(Ort::ConstKernelInfo(info).GetNodeName()) {}

OrtStatusPtr MapUnionKernel::ComputeV2(OrtKernelContext* raw) {
  return guarded("DeltaMapUnion", node_, [&] {
    Ort::KernelContext ctx(raw);
    const size_t inputs = ctx.GetInputCount();
    Ort::ConstValue first = ctx.GetInput(0);
    const std::vector<int64_t> shape = first.GetTensorTypeAndShapeInfo().GetShape();
    const size_t count = first.GetTensorTypeAndShapeInfo().GetElementCount();
    for (size_t i = 1; i < inputs; ++i) {
      const std::vector<int64_t> s = ctx.GetInput(i).GetTensorTypeAndShapeInfo().GetShape();
      if (s != shape)
        throw UserError("node '" + node_ + "': change maps differ in shape: " + shape_string(shape) + " and " +
                        shape_string(s));
    }
    uint8_t* out = ctx.GetOutput(0, shape).GetTensorMutableData<uint8_t>();
    const uint8_t* a = first.GetTensorData<uint8_t>();
    for (size_t j = 0; j < count; ++j) out[j] = a[j] != 0;
    for (size_t i = 1; i < inputs; ++i) {
      const uint8_t* b = ctx.GetInput(i).GetTensorData<uint8_t>();
      for (size_t j = 0; j < count; ++j) out[j] |= b[j] != 0;
    }
  });
}

OrtStatusPtr MapUnionOp::CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const {
  return guarded("DeltaMapUnion", "", [&] { *kernel = new MapUnionKernel(api, info); });
}

}  // namespace deltaonnx

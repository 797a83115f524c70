// InvokeProbe (experimental): InvokedConv with one deliberate mistake in how the Ort::Op is created or
// invoked, chosen by the string attribute `mistake`, to see which mistakes produce which failures (the
// bad_alloc met when DeltaConv first tried Ort::Op). Inputs X, W, B; Conv attributes; output Y.
//   none                 as InvokedConv (control)
//   int32_attrs          strides/pads/dilations handed to OpAttr as int32 arrays (ORT reads int64)
//   int32_pads           only pads as an int32 array
//   len_in_bytes         pads' length given in bytes (32) instead of elements (4)
//   no_attrs             no attributes: the invoked node gets no schema defaults
//   create_in_compute    the Op created in every Compute from a KernelInfo copy kept by the constructor
//   dangling_info        the Op created in the first Compute from the OrtKernelInfo* the constructor saw
//   version_N            since-version N instead of 11 (e.g. version_1, version_13, version_22)
//   owning_wrappers      ORT's input/output values wrapped in (owning) Ort::Value for the Value* overload
//   two_inputs           Op created for 2 inputs, invoked with 3
//   float_group          group passed as ORT_OP_ATTR_FLOAT
#pragma once
#include <onnxruntime_cxx_api.h>

#include <mutex>
#include <string>

#include "conv_geometry.h"

namespace ort_invoke {

class InvokeProbeKernel {
 public:
  InvokeProbeKernel(const OrtApi& api, const OrtKernelInfo* info);
  OrtStatusPtr ComputeV2(OrtKernelContext* context);

 private:
  void compute(OrtKernelContext* context);
  Ort::Op create(const OrtKernelInfo* info) const;

  std::string mistake_;
  ConvGeometry geometry_;
  const OrtKernelInfo* saved_info_ = nullptr;  // dangling_info only: ORT's pointer, invalid after creation
  Ort::KernelInfo info_copy_{nullptr};         // create_in_compute only
  std::mutex lazy_mutex_;
  Ort::Op conv_{nullptr};
};

struct InvokeProbeOp : Ort::CustomOpBase<InvokeProbeOp, InvokeProbeKernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& api, const OrtKernelInfo* info, void** kernel) const;
  const char* GetName() const { return "InvokeProbe"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

}  // namespace ort_invoke

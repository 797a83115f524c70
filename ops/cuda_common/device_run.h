// The host side of one DeltaConv/DeltaPool run on the device that both ops share: outputs allocated from ORT
// (X_ref_next empty when the reference is dropped, map_out in scratch when the node leaves it out), one
// scratch allocation for the pipeline and the op's own needs, the pipeline enqueued on ORT's stream.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "common/change_map.h"
#include "cuda_common/delta_pipeline.h"
#include "cuda_common/ort_support.h"
#include "op_definition/delta_attributes.h"
#include "op_definition/ort_tensors.h"

namespace deltaonnx {
namespace cuda {

struct DeviceRun {
  DeltaTensors tensors;
  std::unique_ptr<DeviceScratch> scratch;
  void* pipeline_scratch = nullptr;
  void* extra = nullptr;   // extra_bytes of device scratch for the op (nullptr when 0)
  cudaStream_t stream = nullptr;
  bool empty = false;      // X or Y holds no element: the outputs are allocated, nothing to compute
};

// Reads the state (rule 1), allocates the outputs of shape ys and the scratch; x is the X input.
DeviceRun start_device_run(Ort::KernelContext& ctx, const OrtValue* x, const StateInputs& st,
                           const Shape& xs, const Shape& ys, const Window2D& window,
                           const DeltaKnobs& knobs, size_t extra_bytes);

// Enqueues rules 2-4, the dense rule and the keep step; returns the pixel list the op's compute reads.
PixelList enqueue_pipeline(DeviceRun& run);

}  // namespace cuda
}  // namespace deltaonnx

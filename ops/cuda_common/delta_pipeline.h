// The part of a DeltaConv/DeltaPool run that both ops share, on the host side: given the device tensors of a
// batch, enqueue rules 1-4, the dense rule and the keep step on ORT's stream, and hand back the pixel list
// the op's own compute reads. No host synchronisation: list lengths stay on the device.
#pragma once
#include <cstddef>
#include <cstdint>

#include <cuda_runtime_api.h>

#include "common/geometry.h"
#include "cuda_common/pipeline_steps.h"

namespace deltaonnx {
namespace cuda {

struct DeltaTensors {
  bool has_state = false;            // rule 1 (op_definition/state_decision.h)
  bool reference_dropped = false;    // no X_ref kept: map_in's marks are the changed pixels (tau 0)
  const float* x = nullptr;
  const float* x_ref = nullptr;      // with state and a kept reference
  const float* y_prev = nullptr;     // read only with state; may equal y
  const uint8_t* map_in = nullptr;   // nullptr: compare every pixel
  const uint8_t* map_z = nullptr;    // DeltaConv's sum map [N][Ho*Wo]: its marks are recomputed too
  float* x_ref_next = nullptr;       // may equal x_ref; nullptr when the reference is dropped
  float* y = nullptr;
  uint8_t* map_out = nullptr;
  int64_t batch = 0, channels = 0;   // N, C of X
  int64_t out_channels = 0;          // channels of Y
  Axis y_axis, x_axis;               // the op's window over H and W
  float tau = 0.f, dense_fraction = 0.5f;
};

// What recomputed outputs are computed from (rule 4): X_ref_next, or X itself when the reference is dropped.
inline const float* recompute_source(const DeltaTensors& t) { return t.reference_dropped ? t.x : t.x_ref_next; }

// Device scratch the pipeline needs for a batch: the change mask, per-item counts and pixel lists.
size_t pipeline_scratch_bytes(const DeltaTensors& t);

// Enqueues the steps; `scratch` holds pipeline_scratch_bytes(t) bytes (unused without state). Returns the
// list for the compute, or a cudaError_t != cudaSuccess in *error.
PixelList enqueue_delta_pipeline(const DeltaTensors& t, void* scratch, cudaStream_t stream, cudaError_t* error,
                                 const char** failed_step);

}  // namespace cuda
}  // namespace deltaonnx

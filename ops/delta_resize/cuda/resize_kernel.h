// Launchers of DeltaResize's kernels (delta_resize/resize_step.h) on a stream.
#pragma once
#include <cuda_runtime_api.h>

#include "delta_resize/resize_step.h"

namespace deltaonnx {
namespace cuda {

// Y's outputs (those of marked pixels when step.map_in is given), one thread per float, grid-stride.
cudaError_t launch_resize(const ResizeStep& step, cudaStream_t stream);
// map_out (step.map_out non-null): the map upsampled, or 1 everywhere without one.
cudaError_t launch_resize_map(const ResizeStep& step, cudaStream_t stream);

}  // namespace cuda
}  // namespace deltaonnx

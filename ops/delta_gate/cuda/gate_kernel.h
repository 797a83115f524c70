// Launcher of DeltaGate's kernels (gate_step.h) on a stream.
#pragma once
#include <cuda_runtime_api.h>

#include "delta_gate/cuda/gate_step.h"

namespace deltaonnx {
namespace cuda {

// The verdict kernel, then the apply kernel (the state must exist: without it the op copies X instead).
cudaError_t launch_gate(const GateStep& step, cudaStream_t stream);

}  // namespace cuda
}  // namespace deltaonnx

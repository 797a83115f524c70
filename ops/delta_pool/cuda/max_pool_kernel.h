// Launcher of DeltaPool's compute (max_pool_step.h) on a stream; the caller guarantees channels and batch
// <= 65535 (gridDim.y / gridDim.z).
#pragma once
#include <cuda_runtime_api.h>

#include "delta_pool/cuda/max_pool_step.h"

namespace deltaonnx {
namespace cuda {

cudaError_t launch_max_pool(const MaxPoolStep& step, cudaStream_t stream);

}  // namespace cuda
}  // namespace deltaonnx

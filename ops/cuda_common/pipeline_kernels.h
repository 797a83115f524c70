// Launchers of the shared pipeline steps (pipeline_steps.h) on a given stream; each returns the launch's
// cudaError_t. Callers guarantee batch <= 65535 (gridDim.y) and non-empty work.
#pragma once
#include <cstdint>

#include <cuda_runtime_api.h>

#include "cuda_common/pipeline_steps.h"

namespace deltaonnx {
namespace cuda {

cudaError_t launch_change_step(const ChangeStep& step, cudaStream_t stream);
cudaError_t launch_recompute_step(const RecomputeStep& step, cudaStream_t stream);
cudaError_t launch_densify_step(const PixelList& list, uint8_t* map_out, int64_t batch, cudaStream_t stream);
cudaError_t launch_keep_step(const KeepStep& step, cudaStream_t stream);

}  // namespace cuda
}  // namespace deltaonnx

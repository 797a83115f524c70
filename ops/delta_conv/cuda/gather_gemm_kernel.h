// Launcher of DeltaConv's gather-GEMM (gather_gemm.h) on a stream, followed by the channel activation (Softmax)
// when the op fuses one. The caller checks gather_gemm_grid_fits().
#pragma once
#include <cuda_runtime_api.h>

#include "delta_conv/cuda/gather_gemm.h"

namespace deltaonnx {
namespace cuda {

cudaError_t launch_gather_gemm(const GatherGemm& gemm, cudaStream_t stream);

}  // namespace cuda
}  // namespace deltaonnx

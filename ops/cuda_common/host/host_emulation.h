// The CUDA kernels of libdeltaonnx_ops_cuda run on the host: each function walks the kernel's grid in plain
// C++ and calls the very per-thread bodies the device runs (pipeline_steps.h, gather_gemm.h, max_pool_step.h,
// map_union_step.h). Kernels with barriers run phase by phase (every thread of a block finishes a phase before
// any starts the next, which is what __syncthreads guarantees); warp votes and atomics run warp by warp.
// Compiled with a plain C++ compiler (no CUDA headers): the pybind11 module and the emulated op library use it.
#pragma once
#include <cstdint>

#include "cuda_common/pipeline_steps.h"
#include "delta_conv/cuda/gather_gemm.h"
#include "delta_pool/cuda/max_pool_step.h"
#include "map_union/cuda/map_union_step.h"

namespace deltaonnx {
namespace cuda {
namespace host {

// Threads per block of the 1-D and per-item kernels (launch_config.cuh's kBlockThreads).
constexpr int kBlockThreads = 256;

void run_change_step(const ChangeStep& step);
// Appends in warp order (the device's order varies with scheduling; no result depends on it).
void run_recompute_step(const RecomputeStep& step);
void run_densify_step(const PixelList& list, uint8_t* map_out, int64_t batch);
void run_keep_step(const KeepStep& step);
// Uses WideTile or NarrowTile as the device does, or the one asked for (tile: 0 = as the device, 1 = wide,
// 2 = narrow).
void run_gather_gemm(const GatherGemm& gemm, int tile = 0);
void run_max_pool(const MaxPoolStep& step);
void run_map_union(const uint8_t* const* maps, int64_t num_maps, uint8_t* out, int64_t size);

}  // namespace host
}  // namespace cuda
}  // namespace deltaonnx

// Marks functions compiled for both the host and CUDA devices, so the per-element math the GPU runs is
// the very code the CPU kernels and the host tests run.
#pragma once
#if defined(__CUDACC__)
#define DELTA_HD __host__ __device__ __forceinline__
#else
#define DELTA_HD inline
#endif

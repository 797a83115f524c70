#pragma once
// 64-byte aligned float buffers, and a per-thread scratch built on them. Kernel objects stay immutable (ORT
// calls Compute concurrently), so scratch that outlives one call belongs to the calling thread.
#include <algorithm>
#include <cstdlib>
#include <memory>
#include <new>
#include <vector>

namespace deltaonnx {

inline std::shared_ptr<float> aligned_floats(size_t count) {
  void* p = std::aligned_alloc(64, std::max<size_t>(64, (count * sizeof(float) + 63) / 64 * 64));
  if (p == nullptr) throw std::bad_alloc();
  return std::shared_ptr<float>(static_cast<float*>(p), std::free);
}

// Grows, never shrinks: a thread reuses one buffer across calls (declare it thread_local).
struct AlignedScratch {
  std::shared_ptr<float> data;
  size_t capacity = 0;
  float* get(size_t count) {
    if (count > capacity) {
      data = aligned_floats(count);
      capacity = count;
    }
    return data.get();
  }
};

// At least n elements of v, grown (the new tail value-initialised, once) but never shrunk: scratch shared by
// ops of several sizes that a resize would shrink for a smaller one and zero-fill again for the next larger one
// (memset under std::vector::resize was 0.6% of yolov8_like's frame). Only for contents each use writes before
// it reads them.
template <typename T>
T* grown(std::vector<T>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// The channel block MLAS's NCHWc kernels use on this CPU (MlasNchwcGetBlockSize): 16 with AVX-512F, 8 with
// AVX2 and FMA, 0 where MLAS has no NCHWc kernels (ORT then never rewrites convs into them).
inline int64_t mlas_nchwc_block_size() {
#if defined(__x86_64__) || defined(__i386__)
  if (__builtin_cpu_supports("avx512f")) return 16;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 8;
#endif
  return 0;
}

}  // namespace deltaonnx

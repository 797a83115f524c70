// The engines run their loops through this callback so they need no ORT types: the ORT kernels pass ORT's
// intra-op thread pool, the pybind module and tests pass a serial loop.
#pragma once
#include <cstdint>
#include <functional>

namespace deltaonnx {

// Calls body(i) for every i in [0, count), in any order, possibly concurrently; returns when all are done.
// body must not throw.
using ParallelFor = std::function<void(int64_t count, const std::function<void(int64_t)>& body)>;

inline void serial_for(int64_t count, const std::function<void(int64_t)>& body) {
  for (int64_t i = 0; i < count; ++i) body(i);
}

}  // namespace deltaonnx

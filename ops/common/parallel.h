// The engines run their loops through this callback so they need no ORT types: the ORT kernels pass ORT's
// intra-op thread pool, the pybind module and tests pass a serial loop.
#pragma once
#include <cstdint>
#include <functional>

#include "common/function_ref.h"

namespace deltaonnx {

// Calls body(i) for every i in [0, count), in any order, possibly concurrently; returns when all are done.
// body must not throw. It is a reference (common/function_ref.h): a loop's lambda is passed without a copy or
// an allocation; the ParallelFor itself is made once per run.
using LoopBody = FunctionRef<void(int64_t)>;
using ParallelFor = std::function<void(int64_t count, LoopBody body)>;

inline void serial_for(int64_t count, LoopBody body) {
  for (int64_t i = 0; i < count; ++i) body(i);
}

}  // namespace deltaonnx

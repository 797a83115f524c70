// Glue between ORT's custom-op C++ API and the ORT-free engines: attribute reading with defaults,
// errors that name the node, ORT's thread pool as a ParallelFor, and exception-safe entry points.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <functional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/delta_state.h"
#include "common/parallel.h"
#include "common/window_spec.h"

namespace deltaonnx {

// Thrown for input the user can fix; becomes ORT_INVALID_ARGUMENT.
struct UserError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

template <typename T>
T attribute_or(const Ort::ConstKernelInfo& info, const char* name, T fallback) {
  try {
    return info.GetAttribute<T>(name);
  } catch (const Ort::Exception&) {
    return fallback;
  }
}

template <typename T>
std::vector<T> attributes_or(const Ort::ConstKernelInfo& info, const char* name, std::vector<T> fallback) {
  try {
    return info.GetAttributes<T>(name);
  } catch (const Ort::Exception&) {
    return fallback;
  }
}

std::string shape_string(const std::vector<int64_t>& shape);

// The window attributes of a Conv/MaxPool node (kernel_shape may come from elsewhere: pass the fallback).
// Throws UserError naming the attribute for values the ops do not support.
WindowSpec read_window(const Ort::ConstKernelInfo& info, const std::string& node, std::vector<int64_t> kernel_fallback);

// ORT's intra-op thread pool as the engines' ParallelFor.
ParallelFor ort_parallel_for(const Ort::KernelContext& ctx);

// True when the tensor holds no elements (a zero-sized dimension): the "no state" convention.
inline bool is_empty_shape(const std::vector<int64_t>& shape) {
  for (int64_t d : shape)
    if (d == 0) return true;
  return false;
}

// The state inputs of a Delta op for one run, with rule 1 applied: the reference X_ref (absent input: dropped,
// which needs a change map and threshold 0), Y_prev, and the optional change map.
struct StateInputs {
  bool has_state = false;
  bool reference_dropped = false;
  const float* x_ref = nullptr;
  const float* y_prev = nullptr;
  const uint8_t* map_in = nullptr;
};

// Reads and checks them for input shape xs and output shape ys; errors name the node.
StateInputs read_state_inputs(const Ort::KernelContext& ctx, const std::string& node, size_t x_ref_index,
                              size_t y_prev_index, size_t map_index, const std::vector<int64_t>& xs,
                              const std::vector<int64_t>& ys, float threshold);

// Fills the shared fields of a run from X (shape xs), the state inputs and the three outputs.
void fill_delta_run(DeltaRun& run, const std::vector<int64_t>& xs, const Ort::ConstValue& x, const StateInputs& st,
                    Ort::UnownedValue& y, Ort::UnownedValue& x_ref_next, Ort::UnownedValue& map_out);

// Runs f, turning exceptions into an OrtStatus (never lets them cross the C boundary).
OrtStatusPtr guarded(const char* op, const std::string& node, const std::function<void()>& f);

// Checks an optional input's presence (absent or empty-named inputs come back as null values).
inline bool has_input(const Ort::KernelContext& ctx, size_t index) {
  if (index >= ctx.GetInputCount()) return false;
  Ort::ConstValue v = ctx.GetInput(index);
  return static_cast<const OrtValue*>(v) != nullptr;
}

}  // namespace deltaonnx

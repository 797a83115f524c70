#include "ort_util.h"

#include "common/checked_size.h"

namespace deltaonnx {

DeltaOutputs delta_outputs(Ort::KernelContext& ctx, const std::vector<int64_t>& xs, const std::vector<int64_t>& ys,
                           const StateInputs& st, std::vector<uint8_t>& fallback) {
  DeltaOutputs out;
  out.y = ctx.GetOutput(0, ys).GetTensorMutableData<float>();
  const std::vector<int64_t> map_shape{ys[0], 1, ys[2], ys[3]};
  // A dropped reference has an empty (or absent) X_ref_next. An empty batch has null data but an output.
  bool has_ref_output = false;
  if (ctx.GetOutputCount() > 1) {
    Ort::UnownedValue ref = ctx.GetOutput(1, st.reference_dropped ? std::vector<int64_t>{0, 0, 0, 0} : xs);
    has_ref_output = static_cast<OrtValue*>(ref) != nullptr;
    if (has_ref_output && !st.reference_dropped) out.x_ref_next = ref.GetTensorMutableData<float>();
  }
  if (!st.reference_dropped && !has_ref_output)
    throw UserError("the output X_ref_next may be left out only without an X_ref input");
  Ort::UnownedValue map = ctx.GetOutputCount() > 2 ? ctx.GetOutput(2, map_shape) : Ort::UnownedValue(nullptr);
  if (static_cast<OrtValue*>(map) != nullptr) {
    out.map_out = map.GetTensorMutableData<uint8_t>();
  } else {
    fallback.resize(static_cast<size_t>(checked_product({ys[0], ys[2], ys[3]}, "map_out")));
    out.map_out = fallback.data();
  }
  return out;
}

void fill_delta_run(DeltaRun& run, const std::vector<int64_t>& xs, const float* x, const StateInputs& st,
                    const DeltaOutputs& out) {
  run.batch = xs[0];
  run.channels = xs[1];
  run.height = xs[2];
  run.width = xs[3];
  run.has_state = st.has_state;
  run.reference_dropped = st.reference_dropped;
  run.x = x;
  run.x_ref = st.x_ref;
  run.y_prev = st.y_prev;
  run.map_in = st.map_in;
  run.y = out.y;
  run.x_ref_next = st.reference_dropped ? nullptr : out.x_ref_next;
  run.map_out = out.map_out;
}

ParallelFor ort_parallel_for(const Ort::KernelContext& ctx) {
  return [&ctx](int64_t count, const std::function<void(int64_t)>& body) {
    if (count <= 0) return;
    if (count == 1) {
      body(0);
      return;
    }
    auto trampoline = [](void* user, size_t i) {
      (*static_cast<const std::function<void(int64_t)>*>(user))(static_cast<int64_t>(i));
    };
    ctx.ParallelFor(trampoline, static_cast<size_t>(count), 0,
                    const_cast<void*>(static_cast<const void*>(&body)));
  };
}

}  // namespace deltaonnx

#include "ort_util.h"

#include <cstring>
#include <vector>

#include "common/aligned_scratch.h"
#include "common/checked_size.h"

namespace deltaonnx {

DeltaOutputs delta_outputs(Ort::KernelContext& ctx, const Shape& xs, const Shape& ys, const StateInputs& st) {
  const AllocatedOutputs allocated = allocate_delta_outputs(ctx, xs, ys, st.reference_dropped);
  DeltaOutputs out{allocated.y, allocated.x_ref_next, allocated.map_out};
  if (out.map_out == nullptr) {
    thread_local std::vector<uint8_t> fallback;  // every run writes all of map_out
    out.map_out = grown(fallback, static_cast<size_t>(checked_product({ys[0], ys[2], ys[3]}, "map_out")));
  }
  return out;
}

namespace {
bool marks_nothing(const uint8_t* map, int64_t count) {
  if (count <= 0) return true;  // no pixels (an empty batch): nothing to mark, and map may be null
  return map[0] == 0 && std::memcmp(map, map + 1, static_cast<size_t>(count - 1)) == 0;
}
}  // namespace

bool carry_unmarked_run(const StateInputs& st, const DeltaOutputs& out, const uint8_t* map_z, const Shape& xs,
                        const Shape& ys) {
  if (!st.has_state || st.map_in == nullptr) return false;
  const int64_t in_pixels = xs[0] * xs[2] * xs[3], out_pixels = ys[0] * ys[2] * ys[3];
  if (!marks_nothing(st.map_in, in_pixels) || (map_z != nullptr && !marks_nothing(map_z, out_pixels))) return false;
  std::memset(out.map_out, 0, static_cast<size_t>(out_pixels));
  if (out.y != st.y_prev) std::memcpy(out.y, st.y_prev, static_cast<size_t>(out_pixels * ys[1]) * sizeof(float));
  if (!st.reference_dropped && out.x_ref_next != st.x_ref)
    std::memcpy(out.x_ref_next, st.x_ref, static_cast<size_t>(in_pixels * xs[1]) * sizeof(float));
  return true;
}

void fill_delta_run(DeltaRun& run, const Shape& xs, const float* x, const StateInputs& st,
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
  return [&ctx](int64_t count, LoopBody body) {
    if (count <= 0) return;
    if (count == 1) {
      body(0);
      return;
    }
    auto trampoline = [](void* user, size_t i) {
      (*static_cast<const LoopBody*>(user))(static_cast<int64_t>(i));
    };
    ctx.ParallelFor(trampoline, static_cast<size_t>(count), 0,
                    const_cast<void*>(static_cast<const void*>(&body)));
  };
}

}  // namespace deltaonnx

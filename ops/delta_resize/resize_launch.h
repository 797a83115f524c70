// One DeltaResize run read from ORT's kernel context, the same on every execution provider (the pointers are the
// provider's memory): the checked shapes, the state (rule 1: state_decision.h decide_output_state), the outputs
// allocated, and the ResizeStep the engines take. Header-only so each library compiles it with its own ORT setup.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <cstdint>

#include "delta_resize/resize_step.h"
#include "op_definition/delta_attributes.h"
#include "op_definition/op_schemas.h"
#include "op_definition/ort_tensors.h"

namespace deltaonnx {

struct ResizeRun {
  ResizeStep step;       // map_in set when the run has state
  OutputState state;     // y_prev null: every output
  int64_t y_count = 0;   // Y's floats
};

// `block`: the library's channel block (blocked X holds a multiple of it; 1 on CUDA, where blocked is NCHW).
inline ResizeRun prepare_resize_run(Ort::KernelContext& ctx, const KernelInputs& in, const ResizeAttributes& a,
                                    int64_t block) {
  const Shape xs = input_shape_4d(in, delta_resize::kX, "X");
  const Shape ys = resize_output_shape(a, xs, block);
  ResizeRun run;
  run.state = read_output_state(in, xs, ys);
  run.y_count = ys[0] * ys[1] * ys[2] * ys[3];  // checked by resize_output_shape
  ResizeStep& s = run.step;
  s.lane = a.blocked ? block : 1;
  s.batch = xs[0];
  s.planes = xs[1] / s.lane;
  s.height = xs[2];
  s.width = xs[3];
  s.factor_h = a.factor_h;
  s.factor_w = a.factor_w;
  s.y = output_of(ctx, delta_resize::kY, ys).GetTensorMutableData<float>();
  if (ctx.GetOutputCount() > delta_resize::kMapOut) {
    Ort::UnownedValue map = output_of(ctx, delta_resize::kMapOut, map_shape_of(ys));
    if (static_cast<OrtValue*>(map) != nullptr) s.map_out = map.GetTensorMutableData<uint8_t>();
  }
  s.x = in.data<float>(delta_resize::kX);
  s.map_in = run.state.map_in;
  return run;
}

}  // namespace deltaonnx

// Rule 1 of docs/design.md and the state conventions of docs/state_protocol.md, decided from shapes alone, once
// for the CPU ops, the CUDA ops and the pybind module: whether this run has usable state, and whether the
// op keeps its own reference or relies on a change map (a dropped X_ref). ORT-free.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "op_definition/tensor_shape.h"

namespace deltaonnx {

// The shapes of one run's tensors; *_given says whether the node has that input at all.
struct StateShapes {
  Shape x;       // X [N, C, H, W]
  Shape y;       // the output this run computes [N, M, Ho, Wo]
  bool x_ref_given = true;
  Shape x_ref;
  Shape y_prev;
  bool map_given = false;
  Shape map;
};

struct StateDecision {
  bool has_state = false;          // false: every pixel counts as changed (first frame, reset, new resolution)
  bool reference_dropped = false;  // no X_ref kept: the change map says what changed (threshold 0)
};

// Throws std::invalid_argument (the callers rethrow it as their own error type) for shapes no state can have.
// A state whose shape does not fit (empty, another resolution, or the 1-filled shapes a server hands a new
// sequence) is no state: rule 1, never an error. A Y_prev that does not fit a fitting X_ref is an error: the
// state comes from another model or stream.
inline StateDecision decide_state(const StateShapes& s, float threshold) {
  StateDecision d;
  if (s.map_given) {
    const Shape want = map_shape_of(s.x);
    if (s.map != want)
      throw std::invalid_argument("change map input map_in has shape " + shape_text(s.map) + ", expected " +
                                  shape_text(want));
  }
  d.reference_dropped = !s.x_ref_given;
  if (d.reference_dropped) {
    if (!s.map_given || threshold != 0.f)
      throw std::invalid_argument("without an X_ref input the op needs a change map input and threshold 0");
    d.has_state = !holds_no_elements(s.y_prev) && s.y_prev == s.y;
    return d;
  }
  d.has_state = !holds_no_elements(s.x_ref) && s.x_ref == s.x;
  if (d.has_state && s.y_prev != s.y)
    throw std::invalid_argument("state Y_prev has shape " + shape_text(s.y_prev) + " but this run's output is " +
                                shape_text(s.y) + " (X_ref fits X: state from another model or stream?)");
  return d;
}

// Rule 1 for an op whose state is its last output alone (DeltaReorder, DeltaResize: Y is a function of X, so a pixel
// the map leaves 0 keeps Y_prev's values): state only with a non-empty map of X ([N,1,H,W]) and a Y_prev of Y's
// shape; an empty map, none, or an empty or other-shaped Y_prev: every pixel. A non-empty map of another shape
// throws std::invalid_argument.
inline bool decide_output_state(const StateShapes& s) {
  if (!s.map_given) return false;
  const Shape want = map_shape_of(s.x);
  if (s.map != want) {
    if (holds_no_elements(s.map)) return false;  // an empty map says nothing: every pixel
    throw std::invalid_argument("map_in must be [N,1,H,W] = " + shape_text(want) + " of X, got " + shape_text(s.map));
  }
  return !holds_no_elements(s.y_prev) && s.y_prev == s.y;
}

}  // namespace deltaonnx

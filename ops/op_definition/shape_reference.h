// A tensor's shape read without allocating. The API this library is built against (21) has one way to read a
// shape, GetTensorTypeAndShape, which allocates an OrtTensorTypeAndShapeInfo (and its dimension names) inside ORT
// on every call: a Delta op reads four to eight shapes a run, and at full change those queries were 26% of a small
// DeltaConv's own time (perf, a chain of 60 1x1 convs on 8x8: shape_of 15.6% of the run against the Conv's 15.9%).
// ORT 1.24 (C API 24) added GetTensorElementTypeAndShapeDataReference, which hands out the tensor's own dims. When
// the running ORT serves API 24, RegisterCustomOps finds it in API 24's table, checks it once on tensors of known
// shape, and shape_of (ort_tensors.h) uses it; otherwise, or under DELTAONNX_SHAPE_QUERY=allocate, the old call.
#pragma once
#include <onnxruntime_c_api.h>

#include "op_definition/tensor_shape.h"

namespace deltaonnx {

// Called by RegisterCustomOps; the first call decides for the process (later ones return at once).
void init_shape_reference(const OrtApiBase* api_base);

// True when shape_by_reference reads shapes (the newer call was found and passed its check).
bool shape_reference_active();

// The shape of a tensor value through the newer call; false (shape untouched) when it is off or refuses the value.
bool shape_by_reference(const OrtValue* value, Shape* shape);

}  // namespace deltaonnx

// DeltaResize on the CPU without ORT types (docs/ops.md#deltaresize): a nearest upsample by integer factors of NCHW
// or blocked memory (resize_step.h), whole or at the outputs of marked pixels only. Memory-bound copies: each
// input row's pixels are written fw times into the first output row, which is then copied fh - 1 times; `lane`
// floats per pixel (b blocked) are one fixed-size copy. Plain loops: they measured at ORT's Resize (results.md#blocked-resize).
#pragma once
#include "common/parallel.h"
#include "delta_resize/resize_step.h"

namespace deltaonnx {

// Every output, and map_out all 1 (when wanted). One task per item's plane on parallel_for.
void resize_whole(const ResizeStep& step, const ParallelFor& parallel_for);

// step.map_in given: the outputs of marked pixels only (y holds the last output elsewhere), map_out the map
// upsampled. Each item's runs of marked pixels are listed once, then copied as the whole rows are, plane by plane.
void resize_marked(const ResizeStep& step, const ParallelFor& parallel_for);

}  // namespace deltaonnx

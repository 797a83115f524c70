// DeltaConv's sum input (docs/design.md#deltaconv): Z, added before the activation (Y = act(conv + B + Z): a
// residual Add, and the Relu after it, fused into the conv), with map_z, the promise "Z's pixels marked 0 did not
// change since the last run". Its shapes are decided here once for every library; ORT-free.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "op_definition/tensor_shape.h"

namespace deltaonnx {

// Z must have Y's shape ys [N, M, Ho, Wo] (in Y's layout) and map_z [N, 1, Ho, Wo]. Throws std::invalid_argument
// (the callers rethrow it as their own error type).
inline void check_sum_shapes(const Shape& z, const Shape& map_z, const Shape& ys) {
  if (z != ys)
    throw std::invalid_argument("the sum input Z has shape " + shape_text(z) + " but Y has shape " + shape_text(ys));
  const Shape want = map_shape_of(ys);
  if (map_z != want)
    throw std::invalid_argument("the change map input map_z has shape " + shape_text(map_z) + ", expected " +
                                shape_text(want));
}

}  // namespace deltaonnx

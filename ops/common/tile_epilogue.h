// The GEMM epilogue from a tile in memory, for kernel variants without a fused one (scalar, AVX2): the
// micro tile into a local tile, then bias + activation and a copy per row.
#pragma once
#include <cstdint>
#include <cstring>

#include "common/activation.h"

namespace deltaonnx {

template <int MR, int NR, typename Tile, typename BiasActivate>
inline void tile_then_epilogue(Tile gemm_tile, BiasActivate bias_activate, int64_t depth, const float* a_packed,
                               const float* const* b_rows, int64_t n, float* const* out_rows, int64_t rows,
                               const float* bias, const ActivationParams* acts) {
  alignas(64) float tile[MR * NR];
  gemm_tile(depth, a_packed, b_rows, n, tile);
  for (int64_t r = 0; r < rows; ++r) {
    bias_activate(tile + r * NR, n, bias ? bias[r] : 0.f, acts[r]);
    std::memcpy(out_rows[r], tile + r * NR, static_cast<size_t>(n) * sizeof(float));
  }
}

}  // namespace deltaonnx

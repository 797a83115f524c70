// Portable kernels: the reference every SIMD variant is tested against, and the path on CPUs without AVX2
// (written so compilers vectorise them for NEON/SSE).
#include <cmath>
#include <cstring>

#include "common/geometry.h"
#include "common/kernel_table.h"
#include "common/tile_epilogue.h"

namespace deltaonnx {
namespace {

constexpr int kMR = 4;
constexpr int kNR = 16;

void detect_changes(const float* x, const float* ref, int64_t channels, int64_t plane, int64_t begin, int64_t end,
                    float tau, uint8_t* flags) {
  for (int64_t c = 0; c < channels; ++c) {
    const float* xc = x + c * plane;
    const float* rc = ref + c * plane;
    for (int64_t p = begin; p < end; ++p) flags[p] |= static_cast<uint8_t>(value_changed(xc[p], rc[p], tau));
  }
}

void update_reference(const float* x, const float* ref_in, float* ref_out, int64_t channels, int64_t plane,
                      int64_t begin, int64_t end, const uint8_t* flags) {
  const bool in_place = ref_in == ref_out;
  for (int64_t c = 0; c < channels; ++c) {
    const float* xc = x + c * plane;
    const float* rc = ref_in + c * plane;
    float* oc = ref_out + c * plane;
    for (int64_t p = begin; p < end; ++p) {
      if (flags[p]) oc[p] = xc[p];
      else if (!in_place) oc[p] = rc[p];
    }
  }
}

void detect_update_exact(const float* x, const float* ref_in, float* ref_out, int64_t channels, int64_t plane,
                         int64_t begin, int64_t end, uint8_t* flags) {
  const bool in_place = ref_in == ref_out;
  for (int64_t c = 0; c < channels; ++c) {
    const float* xc = x + c * plane;
    const float* rc = ref_in + c * plane;
    float* oc = ref_out + c * plane;
    for (int64_t p = begin; p < end; ++p) {
      const bool changed = value_changed(xc[p], rc[p], 0.f);
      flags[p] |= static_cast<uint8_t>(changed);
      if (changed) oc[p] = xc[p];
      else if (!in_place) oc[p] = rc[p];
    }
  }
}

void gemm_tile(int64_t depth, const float* a_packed, const float* const* b_rows, int64_t n, float* c) {
  float acc[kMR][kNR] = {};
  for (int64_t k = 0; k < depth; ++k) {
    const float* a = a_packed + k * kMR;
    const float* b = b_rows[k];
    for (int r = 0; r < kMR; ++r)
      for (int64_t j = 0; j < n; ++j) acc[r][j] += a[r] * b[j];
  }
  for (int r = 0; r < kMR; ++r)
    for (int64_t j = 0; j < n; ++j) c[r * kNR + j] = acc[r][j];
}

void gemm_row(int64_t depth, const float* w, const float* const* b_rows, int64_t n, float* out) {
  float acc[kNR] = {};
  for (int64_t k = 0; k < depth; ++k)
    for (int64_t j = 0; j < n; ++j) acc[j] += w[k] * b_rows[k][j];
  for (int64_t j = 0; j < n; ++j) out[j] = acc[j];
}

void pack_pieces(int64_t depth, const float* base, const int64_t* tap_offsets, const PackPiece* pieces,
                 int64_t count, int64_t ld, float* dst) {
  for (int64_t k = 0; k < depth; ++k, dst += ld) {
    const float* tap = base + tap_offsets[k];
    for (int64_t i = 0; i < count; ++i)
      for (int64_t j = 0; j < pieces[i].len; ++j) dst[pieces[i].dst + j] = tap[pieces[i].src + j];
  }
}

void deinterleave2(const float* src, int64_t n, float* even, float* odd) {
  for (int64_t v = 0; v < n; ++v) {
    even[v] = src[2 * v];
    odd[v] = src[2 * v + 1];
  }
}

void bias_activate(float* v, int64_t n, float bias, const ActivationParams& act) {
  for (int64_t i = 0; i < n; ++i) v[i] = apply_activation(act, v[i] + bias);
}

void gemm_tile_store(int64_t depth, const float* a_packed, const float* const* b_rows, int64_t n,
                     float* const* out_rows, int64_t rows, const float* bias, const ActivationParams* acts) {
  tile_then_epilogue<kMR, kNR>(gemm_tile, bias_activate, depth, a_packed, b_rows, n, out_rows, rows, bias, acts);
}

}  // namespace

const KernelTable& scalar_kernel_table() {
  static const KernelTable table{"scalar", kMR, kNR, kNR, detect_changes, update_reference, detect_update_exact, gemm_tile, gemm_tile_store, gemm_row, pack_pieces, deinterleave2, bias_activate};
  return table;
}

}  // namespace deltaonnx

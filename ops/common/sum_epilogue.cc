#include "common/sum_epilogue.h"

#include <algorithm>

namespace deltaonnx {

namespace {

// y[i] = act(y[i] + z[i]) over n contiguous values sharing one activation: the sum, then the kernel table's
// bias-and-activation pass (SIMD) with a zero bias.
void sum_run(const KernelTable& k, float* y, const float* z, int64_t n, const ActivationParams& act) {
  for (int64_t i = 0; i < n; ++i) y[i] += z[i];
  k.bias_activate(y, n, 0.f, act);
}

}  // namespace

void add_sum_activate(const KernelTable& k, float* y, const float* z, const uint8_t* flags, int64_t channels,
                      int64_t plane, int64_t block, const ActivationParams* acts, int64_t recompute,
                      const ParallelFor& parallel_for, std::vector<RowRun>& runs) {
  runs.clear();
  if (recompute == plane) runs.push_back(RowRun{0, 0, plane});
  else mask_runs(flags, 1, plane, runs);  // the plane as one row: a run may cross image rows
  const int64_t b = block, blocks = channels / b, count = static_cast<int64_t>(runs.size());
  bool one_act = true;  // PRelu's slopes may differ per channel
  for (int64_t m = 1; m < channels && one_act; ++m)
    one_act = acts[m].kind == acts[0].kind && acts[m].a == acts[0].a && acts[m].b == acts[0].b;
  constexpr int64_t kChunk = 4096;  // pixels per task of a long run
  parallel_for(blocks * count, [&](int64_t task) {
    const int64_t cb = task / count;
    const RowRun& r = runs[task % count];
    for (int64_t p0 = r.x_begin; p0 < r.x_end; p0 += kChunk) {
      const int64_t n = std::min(kChunk, r.x_end - p0), offset = (cb * plane + p0) * b;
      if (b == 1 || one_act) {  // NCHW (one channel), or the block's lines as one run
        sum_run(k, y + offset, z + offset, n * b, acts[cb * b]);
        continue;
      }
      for (int64_t i = 0; i < n * b; ++i)  // blocked lanes with their own slopes
        y[offset + i] = apply_activation(acts[cb * b + i % b], y[offset + i] + z[offset + i]);
    }
  });
}

}  // namespace deltaonnx

#include "delta_reorder/cpu/reorder_engine.h"

#include <algorithm>
#include <cstring>
#include <vector>

namespace deltaonnx {

void reorder_channels(const ReorderShape& s, bool to_blocked, const float* x, float* y,
                      const ParallelFor& parallel_for, const KernelTable& k) {
  const int64_t b = s.block, chunk = b * s.pixels;  // one channel block of one item, in either order
  const int64_t blocks = s.batch * (s.channels / b);
  if (chunk == 0 || blocks == 0) return;
  // Pixel ranges of ~64 KB per task, so a large plane still spreads over the threads and a task's b source
  // streams stay few pages apart.
  const int64_t span = std::max<int64_t>(64, (int64_t{16} << 10) / b);
  const int64_t pieces = (s.pixels + span - 1) / span;
  const std::vector<ActivationParams> none(static_cast<size_t>(b));  // unblock_activate without an activation
  parallel_for(blocks * pieces, [&](int64_t task) {
    const int64_t i = task / pieces, p0 = (task % pieces) * span, n = std::min(span, s.pixels - p0);
    const float* src = x + i * chunk;
    float* dst = y + i * chunk;
    if (b == 1) std::memcpy(dst + p0, src + p0, static_cast<size_t>(n) * sizeof(float));  // both orders are NCHW
    else if (to_blocked) k.block_planes(src + p0, s.pixels, b, n, dst + p0 * b);
    else k.unblock_activate(src + p0 * b, b, b, n, none.data(), dst + p0, s.pixels);
  });
}

}  // namespace deltaonnx

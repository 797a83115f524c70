#include "channel_ops/cpu/channel_engine.h"

#include <cmath>
#include <type_traits>

namespace deltaonnx {
namespace {

// The channel block of the widest SIMD a library picks (common/channel_block.h): lanes up to it are a stack array.
constexpr int64_t kMaxLane = 16;

template <int L>
void pool_plane(const GlobalPoolStep& s, int64_t plane) {
  const int64_t lane = L > 0 ? L : s.g.lane, pixels = s.g.pixels;
  const float* x = s.x + plane * pixels * lane;
  float acc[4][kMaxLane] = {};
  int64_t p = 0;
  for (; p + 4 <= pixels; p += 4)
    for (int k = 0; k < 4; ++k)
      for (int64_t j = 0; j < lane; ++j) acc[k][j] += x[(p + k) * lane + j];
  for (; p < pixels; ++p)
    for (int64_t j = 0; j < lane; ++j) acc[0][j] += x[p * lane + j];
  const int64_t n = plane / s.g.planes, c0 = (plane % s.g.planes) * lane;
  const float scale = 1.f / static_cast<float>(pixels);  // inf without pixels: 0 * inf is NaN, as 0 / 0
  for (int64_t j = 0; j < lane && c0 + j < s.g.channels; ++j)
    s.y[n * s.g.channels + c0 + j] = pixels > 0 ? ((acc[0][j] + acc[1][j]) + (acc[2][j] + acc[3][j])) * scale : NAN;
}

template <int L>
void scale_plane(const ChannelScaleStep& s, int64_t plane) {
  const int64_t lane = L > 0 ? L : s.g.lane, pixels = s.g.pixels;
  const int64_t n = plane / s.g.planes, c0 = (plane % s.g.planes) * lane;
  float factor[kMaxLane];
  for (int64_t j = 0; j < lane; ++j) factor[j] = c0 + j < s.g.channels ? channel_scale_of(s, n, c0 + j) : 0.f;
  const float* x = s.x + plane * pixels * lane;
  float* y = s.y + plane * pixels * lane;
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t j = 0; j < lane; ++j) y[p * lane + j] = x[p * lane + j] * factor[j];
  if (c0 + lane > s.g.channels)  // a NaN in a pad lane of x must not stay (0 * NaN): pad lanes are 0
    for (int64_t p = 0; p < pixels; ++p)
      for (int64_t j = s.g.channels - c0; j < lane; ++j) y[p * lane + j] = 0.f;
}

// Calls plane<L>(i) for every plane i on the thread pool, L the lane as a compile-time count where it is one a
// library picks (0: the runtime lane).
template <class Plane>
void for_planes(const ChannelGeometry& g, const ParallelFor& parallel_for, Plane plane) {
  auto run = [&](auto lane) {
    parallel_for(g.batch * g.planes, [&](int64_t i) { plane(lane, i); });
  };
  switch (g.lane) {
    case 1: return run(std::integral_constant<int, 1>{});
    case 4: return run(std::integral_constant<int, 4>{});
    case 8: return run(std::integral_constant<int, 8>{});
    case 16: return run(std::integral_constant<int, 16>{});
    default: return run(std::integral_constant<int, 0>{});
  }
}

}  // namespace

void global_pool(const GlobalPoolStep& s, const ParallelFor& parallel_for) {
  if (s.g.outputs() == 0) return;
  if (s.g.lane > kMaxLane) {  // no library picks such a block; the rule of channel_step.h then
    parallel_for(s.g.outputs(), [&](int64_t i) { global_pool_thread(s, i); });
    return;
  }
  for_planes(s.g, parallel_for, [&](auto lane, int64_t i) { pool_plane<decltype(lane)::value>(s, i); });
}

void channel_scale(const ChannelScaleStep& s, const ParallelFor& parallel_for) {
  if (s.g.elements() == 0) return;
  if (s.g.lane > kMaxLane) {
    parallel_for(s.g.elements(), [&](int64_t i) { channel_scale_thread(s, i); });
    return;
  }
  for_planes(s.g, parallel_for, [&](auto lane, int64_t i) { scale_plane<decltype(lane)::value>(s, i); });
}

}  // namespace deltaonnx

#include "delta_reorder/cpu/reorder_engine.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "common/channel_block.h"

namespace deltaonnx {
namespace {

// The listed pixels of one channel block holding `lanes` (<= b) channels, in either direction (the lines' b
// floats are contiguous; to blocked, the pad lanes past `lanes` become +0). Scattered pixels are a cache line per
// channel on the NCHW side whatever the code, so a plain loop (b unrolled).
template <int B>
void listed_pixels(const float* x, float* y, const std::vector<int64_t>& pixels, int64_t plane, int64_t block,
                   int64_t lanes, bool to_blocked) {
  const int64_t b = B > 0 ? B : block;
  if (to_blocked) {
    for (int64_t p : pixels)
      for (int64_t j = 0; j < b; ++j) y[p * b + j] = j < lanes ? x[j * plane + p] : 0.f;
  } else {
    for (int64_t p : pixels)
      for (int64_t j = 0; j < lanes; ++j) y[j * plane + p] = x[p * b + j];
  }
}

using ListedReorder = void (*)(const float*, float*, const std::vector<int64_t>&, int64_t, int64_t, int64_t, bool);

// Where channel block cb of item n starts on either side: the NCHW side holds C channels an item, the blocked
// side roundup(C, b); one block is b planes on both (the NCHW side's last block may hold fewer).
struct BlockOffsets {
  int64_t nchw, blocked, lanes;
};
BlockOffsets block_offsets(const ReorderShape& s, int64_t n, int64_t cb) {
  const int64_t c0 = cb * s.block;
  return {(n * s.channels + c0) * s.pixels, (n * s.padded_channels() + c0) * s.pixels,
          std::min(s.block, s.channels - c0)};
}

ListedReorder listed_reorder(int64_t block) {
  switch (block) {
    case 16: return listed_pixels<16>;
    case 8: return listed_pixels<8>;
    case 4: return listed_pixels<4>;
    default: return listed_pixels<0>;
  }
}

}  // namespace

int64_t ReorderShape::padded_channels() const { return deltaonnx::padded_channels(channels, block); }

void reorder_marked_pixels(const ReorderShape& s, bool to_blocked, const float* x, const uint8_t* map, float* y,
                           const ParallelFor& parallel_for, const KernelTable& k, bool x_unmarked_unset) {
  const int64_t blocks = s.padded_channels() / s.block;
  const ListedReorder reorder = listed_reorder(s.block);
  thread_local std::vector<int64_t> listed;  // the calling thread's, read by the loop bodies through `pixels`
  std::vector<int64_t>& pixels = listed;
  for (int64_t n = 0; n < s.batch; ++n) {
    const uint8_t* marks = map + n * s.pixels;
    // counted before listed: an item marked everywhere (every pixel changed) streams whole planes unlisted
    const int64_t marked = s.pixels - std::count(marks, marks + s.pixels, uint8_t{0});
    if (marked == 0) continue;
    if (x_unmarked_unset ? marked == s.pixels : 2 * marked > s.pixels) {  // mostly marked: whole planes stream faster
      ReorderShape item = s;
      item.batch = 1;
      const BlockOffsets at = block_offsets(s, n, 0);
      reorder_channels(item, to_blocked, x + (to_blocked ? at.nchw : at.blocked),
                       y + (to_blocked ? at.blocked : at.nchw), parallel_for, k);
      continue;
    }
    pixels.clear();
    for (int64_t p = 0; p < s.pixels; ++p)
      if (marks[p]) pixels.push_back(p);
    parallel_for(blocks, [&](int64_t cb) {
      const BlockOffsets at = block_offsets(s, n, cb);
      reorder(x + (to_blocked ? at.nchw : at.blocked), y + (to_blocked ? at.blocked : at.nchw), pixels, s.pixels,
              s.block, at.lanes, to_blocked);
    });
  }
}

void reorder_channels(const ReorderShape& s, bool to_blocked, const float* x, float* y,
                      const ParallelFor& parallel_for, const KernelTable& k) {
  const int64_t b = s.block, blocks_per_item = s.padded_channels() / b;
  const int64_t blocks = s.batch * blocks_per_item;
  if (s.pixels == 0 || blocks == 0) return;
  // Pixel ranges of ~64 KB per task, so a large plane still spreads over the threads and a task's b source
  // streams stay few pages apart.
  const int64_t span = std::max<int64_t>(64, (int64_t{16} << 10) / b);
  const int64_t pieces = (s.pixels + span - 1) / span;
  static const std::vector<ActivationParams> no_activation(kMaxChannelBlock);  // unblock_activate without one
  if (b > kMaxChannelBlock) throw std::logic_error("channel block above kMaxChannelBlock");
  const ActivationParams* none = no_activation.data();
  parallel_for(blocks * pieces, [&](int64_t task) {
    const int64_t i = task / pieces, p0 = (task % pieces) * span, n = std::min(span, s.pixels - p0);
    const BlockOffsets at = block_offsets(s, i / blocks_per_item, i % blocks_per_item);
    const float* src = x + (to_blocked ? at.nchw : at.blocked);
    float* dst = y + (to_blocked ? at.blocked : at.nchw);
    if (b == 1) std::memcpy(dst + p0, src + p0, static_cast<size_t>(n) * sizeof(float));  // both orders are NCHW
    else if (to_blocked) k.block_planes(src + p0, s.pixels, b, at.lanes, n, dst + p0 * b);
    else k.unblock_activate(src + p0 * b, b, at.lanes, n, none, dst + p0, s.pixels);
  });
}

}  // namespace deltaonnx

#include "delta_reorder/cpu/reorder_engine.h"

#include <cstring>

namespace deltaonnx {
namespace {

// One channel block of one item: b planes of `pixels` floats <-> `pixels` lines of b floats. B > 0 is b known at
// compile time (the inner loop unrolled), 0 reads `block`.
template <int B>
void block_to_lines(const float* planes, float* lines, int64_t pixels, int64_t block) {
  const int64_t b = B > 0 ? B : block;
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t j = 0; j < b; ++j) lines[p * b + j] = planes[j * pixels + p];
}

template <int B>
void lines_to_block(const float* lines, float* planes, int64_t pixels, int64_t block) {
  const int64_t b = B > 0 ? B : block;
  for (int64_t p = 0; p < pixels; ++p)
    for (int64_t j = 0; j < b; ++j) planes[j * pixels + p] = lines[p * b + j];
}

using BlockReorder = void (*)(const float*, float*, int64_t, int64_t);

BlockReorder block_reorder(int64_t block, bool to_blocked) {
  switch (block) {
    case 16: return to_blocked ? block_to_lines<16> : lines_to_block<16>;
    case 8: return to_blocked ? block_to_lines<8> : lines_to_block<8>;
    case 4: return to_blocked ? block_to_lines<4> : lines_to_block<4>;
    default: return to_blocked ? block_to_lines<0> : lines_to_block<0>;
  }
}

// The listed pixels of one channel block, in either direction (the lines' b floats are contiguous).
template <int B>
void listed_pixels(const float* x, float* y, const std::vector<int64_t>& pixels, int64_t plane, int64_t block,
                   bool to_blocked) {
  const int64_t b = B > 0 ? B : block;
  if (to_blocked) {
    for (int64_t p : pixels)
      for (int64_t j = 0; j < b; ++j) y[p * b + j] = x[j * plane + p];
  } else {
    for (int64_t p : pixels)
      for (int64_t j = 0; j < b; ++j) y[j * plane + p] = x[p * b + j];
  }
}

using ListedReorder = void (*)(const float*, float*, const std::vector<int64_t>&, int64_t, int64_t, bool);

ListedReorder listed_reorder(int64_t block) {
  switch (block) {
    case 16: return listed_pixels<16>;
    case 8: return listed_pixels<8>;
    case 4: return listed_pixels<4>;
    default: return listed_pixels<0>;
  }
}

}  // namespace

void reorder_marked_pixels(const ReorderShape& s, bool to_blocked, const float* x, const uint8_t* map, float* y,
                           const ParallelFor& parallel_for) {
  const int64_t chunk = s.block * s.pixels, blocks = s.channels / s.block;
  const ListedReorder reorder = listed_reorder(s.block);
  std::vector<int64_t> pixels;
  for (int64_t n = 0; n < s.batch; ++n) {
    pixels.clear();
    const uint8_t* marks = map + n * s.pixels;
    for (int64_t p = 0; p < s.pixels; ++p)
      if (marks[p]) pixels.push_back(p);
    if (pixels.empty()) continue;
    const int64_t first = n * blocks;
    if (2 * static_cast<int64_t>(pixels.size()) > s.pixels) {  // mostly marked: whole planes stream faster
      const BlockReorder whole = block_reorder(s.block, to_blocked);
      parallel_for(blocks, [&](int64_t i) { whole(x + (first + i) * chunk, y + (first + i) * chunk, s.pixels, s.block); });
      continue;
    }
    parallel_for(blocks, [&](int64_t i) {
      const int64_t at = (first + i) * chunk;
      reorder(x + at, y + at, pixels, s.pixels, s.block, to_blocked);
    });
  }
}

void reorder_channels(const ReorderShape& s, bool to_blocked, const float* x, float* y,
                      const ParallelFor& parallel_for) {
  const int64_t chunk = s.block * s.pixels;  // one channel block of one item, in either order
  const int64_t tasks = s.batch * (s.channels / s.block);
  if (chunk == 0 || tasks == 0) return;
  if (s.block == 1) {  // both orders are NCHW
    parallel_for(tasks, [&](int64_t i) {
      std::memcpy(y + i * chunk, x + i * chunk, static_cast<size_t>(chunk) * sizeof(float));
    });
    return;
  }
  const BlockReorder reorder = block_reorder(s.block, to_blocked);
  parallel_for(tasks, [&](int64_t i) { reorder(x + i * chunk, y + i * chunk, s.pixels, s.block); });
}

}  // namespace deltaonnx

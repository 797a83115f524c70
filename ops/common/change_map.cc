#include "common/change_map.h"

#include <algorithm>
#include <cstring>

namespace deltaonnx {

int64_t or_pool_mask(const uint8_t* in, const Window2D& w, uint8_t* out, std::vector<uint8_t>& scratch) {
  const int64_t H = w.y.in, W = w.x.in, Ho = w.y.out, Wo = w.x.out;
  // Horizontal pass: rows[iy*Wo + ox] = OR over kx of in[iy, ix(ox, kx)]; rows without marks are skipped.
  scratch.assign(static_cast<size_t>(H * Wo + H), 0);
  uint8_t* rows = scratch.data();
  uint8_t* row_any = rows + H * Wo;
  for (int64_t iy = 0; iy < H; ++iy) {
    const uint8_t* src = in + iy * W;
    if (std::find_if(src, src + W, [](uint8_t v) { return v != 0; }) == src + W) continue;
    row_any[iy] = 1;
    uint8_t* dst = rows + iy * Wo;
    for (int64_t kx = 0; kx < w.x.kernel; ++kx) {
      // ox range whose tap kx lands inside the row
      const int64_t off = kx * w.x.dilation - w.x.pad_begin;  // ix = ox*stride + off
      int64_t lo = off >= 0 ? 0 : (-off + w.x.stride - 1) / w.x.stride;
      int64_t hi = (W - 1 - off) < 0 ? -1 : (W - 1 - off) / w.x.stride;  // last valid ox
      hi = std::min(hi, Wo - 1);
      if (w.x.stride == 1) {
        for (int64_t ox = lo; ox <= hi; ++ox) dst[ox] |= src[ox + off];
      } else {
        for (int64_t ox = lo; ox <= hi; ++ox) dst[ox] |= src[ox * w.x.stride + off];
      }
    }
  }
  // Vertical pass.
  int64_t count = 0;
  for (int64_t oy = 0; oy < Ho; ++oy) {
    uint8_t* dst = out + oy * Wo;
    std::memset(dst, 0, static_cast<size_t>(Wo));
    for (int64_t ky = 0; ky < w.y.kernel; ++ky) {
      const int64_t iy = w.y.input_of(oy, ky);
      if (iy < 0 || iy >= H || !row_any[iy]) continue;
      const uint8_t* src = rows + iy * Wo;
      for (int64_t ox = 0; ox < Wo; ++ox) dst[ox] |= src[ox];
    }
    for (int64_t ox = 0; ox < Wo; ++ox) count += dst[ox] != 0;
  }
  return count;
}

void mask_runs(const uint8_t* mask, int64_t height, int64_t width, std::vector<RowRun>& runs) {
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* row = mask + y * width;
    int64_t x = 0;
    while (x < width) {
      while (x < width && !row[x]) ++x;
      if (x == width) break;
      int64_t begin = x;
      while (x < width && row[x]) ++x;
      runs.push_back({y, begin, x});
    }
  }
}

}  // namespace deltaonnx

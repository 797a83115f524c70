#include "common/change_map.h"

#include <algorithm>
#include <cstring>

#include "common/aligned_scratch.h"
#include "common/checked_size.h"

namespace deltaonnx {

namespace {

// Byte masks are scanned eight bytes at a time (rows are mostly empty or mostly full).
inline uint64_t word_at(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

constexpr uint64_t kHighBits = 0x8080808080808080ULL;

// The high bit of each byte of v that is nonzero (no carries between bytes: a byte's low 7 bits plus 0x7f
// stay below 0x100).
inline uint64_t nonzero_bytes(uint64_t v) {
  constexpr uint64_t kLow7 = 0x7f7f7f7f7f7f7f7fULL;
  return (((v & kLow7) + kLow7) | v) & kHighBits;
}

// The first i in [x, n) with mask[i] != 0 (want_marked) or == 0 (!want_marked); n when there is none: the
// lowest flagged byte of a word is the answer.
int64_t next_with(const uint8_t* mask, int64_t x, int64_t n, bool want_marked) {
  static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "byte i of a loaded word is bits 8i..8i+7");
  for (; x + 8 <= n; x += 8) {
    const uint64_t nonzero = nonzero_bytes(word_at(mask + x));
    const uint64_t hits = want_marked ? nonzero : nonzero ^ kHighBits;
    if (hits != 0) return x + (__builtin_ctzll(hits) >> 3);
  }
  for (; x < n; ++x)
    if ((mask[x] != 0) == want_marked) return x;
  return n;
}

}  // namespace

namespace {

// One row of the horizontal pass: dst[ox] = 1 iff some tap of window ox inside the row reads a marked pixel of src.
// The row is laid out in `padded` at its window coordinates (j = input + pad_begin, zeros in the padding), so each
// tap is a contiguous run of it, OR-ed in by loops the compiler vectorizes (the run-by-run scan this replaces
// branched on every run: 1% of a moving camera's frame on the stem of mobilenetv2_like, whose changes are noise).
void or_pool_row(const uint8_t* src, const Axis& a, uint8_t* __restrict padded, uint8_t* __restrict wide,
                 uint8_t* __restrict dst) {
  // Locals and restrict: byte stores may alias anything, and would otherwise reload a's fields in every loop.
  const int64_t in = a.in, out = a.out, kernel = a.kernel, stride = a.stride, dilation = a.dilation, pad = a.pad_begin;
  const int64_t span = (out - 1) * stride + (kernel - 1) * dilation + 1;  // window coordinates read
  const int64_t first = std::max<int64_t>(0, pad), last = std::min(span, in + pad);
  std::memset(padded, 0, static_cast<size_t>(span));
  for (int64_t j = first; j < last; ++j) padded[j] = src[j - pad] != 0;
  const int64_t starts = (out - 1) * stride + 1;  // window starts j, of which every stride-th is an output
  uint8_t* __restrict acc = stride == 1 ? dst : wide;
  std::memcpy(acc, padded, static_cast<size_t>(starts));
  for (int64_t k = 1; k < kernel; ++k) {
    const uint8_t* __restrict tap = padded + k * dilation;
    for (int64_t j = 0; j < starts; ++j) acc[j] |= tap[j];
  }
  if (stride == 2) {  // the common stride, as a constant the compiler vectorizes
    for (int64_t o = 0; o < out; ++o) dst[o] = wide[2 * o];
  } else if (stride != 1) {
    for (int64_t o = 0; o < out; ++o) dst[o] = wide[o * stride];
  }
}

}  // namespace

int64_t or_pool_mask(const uint8_t* in, const Window2D& w, uint8_t* out, std::vector<uint8_t>& scratch,
                     int64_t stop_above) {
  const int64_t H = w.y.in, W = w.x.in, Ho = w.y.out, Wo = w.x.out;
  if (Ho <= 0 || Wo <= 0) return 0;
  const int64_t span = (Wo - 1) * w.x.stride + (w.x.kernel - 1) * w.x.dilation + 1;
  // rows[iy*Wo + ox]: the horizontal pass of input row iy, computed when an output row first reads it; row_state[iy]
  // 0 = not yet, 1 = no marks, 2 = computed. Grow-only: row_state is cleared here, and a row is read only once
  // computed.
  uint8_t* rows = grown(scratch, checked_count({H, Wo + 1}, "the OR-pool rows") + 2 * static_cast<size_t>(span));
  uint8_t* row_state = rows + H * Wo;
  uint8_t* padded = row_state + H;
  uint8_t* wide = padded + span;
  std::memset(row_state, 0, static_cast<size_t>(H));
  int64_t count = 0;
  for (int64_t oy = 0; oy < Ho; ++oy) {
    uint8_t* dst = out + oy * Wo;
    bool any = false;
    for (int64_t ky = 0; ky < w.y.kernel; ++ky) {
      const int64_t iy = w.y.input_of(oy, ky);
      if (iy < 0 || iy >= H) continue;
      if (row_state[iy] == 0) {
        const uint8_t* src = in + iy * W;
        row_state[iy] = next_with(src, 0, W, true) == W ? 1 : 2;
        if (row_state[iy] == 2) or_pool_row(src, w.x, padded, wide, rows + iy * Wo);
      }
      if (row_state[iy] != 2) continue;
      const uint8_t* __restrict src = rows + iy * Wo;
      uint8_t* __restrict to = dst;
      if (!any) std::memcpy(to, src, static_cast<size_t>(Wo));
      else
        for (int64_t ox = 0; ox < Wo; ++ox) to[ox] |= src[ox];
      any = true;
    }
    if (!any) {
      std::memset(dst, 0, static_cast<size_t>(Wo));
      continue;
    }
    count += count_marks(dst, Wo);
    if (count > stop_above) return count;  // the rest is left unwritten: the caller marks everything
  }
  return count;
}

// Counting nonzero bytes: kLanes byte counters, each adding at most 255 times before they are summed, a loop
// compilers vectorize (16-64 bytes a step). The word-at-a-time count with a multiply per eight bytes ran 5x
// slower: 12 us against 2.2 us on the 87 KB of yolov8_like's change maps, which DeltaSession counts every run.
constexpr int64_t kLanes = 32;

// The end of the next stretch from p of whole kLanes-byte steps that no lane overflows in.
inline int64_t lane_stretch_end(int64_t p, int64_t n) {
  return p + std::min<int64_t>((n - p) / kLanes, 255) * kLanes;
}

int64_t count_marks(const uint8_t* map, int64_t n) {
  int64_t count = 0, p = 0;
  while (p + kLanes <= n) {
    const int64_t end = lane_stretch_end(p, n);
    uint8_t lanes[kLanes] = {};
    for (; p < end; p += kLanes)
      for (int64_t i = 0; i < kLanes; ++i) lanes[i] += map[p + i] != 0;
    for (int64_t i = 0; i < kLanes; ++i) count += lanes[i];
  }
  for (; p < n; ++p) count += map[p] != 0;
  return count;
}

void mask_runs(const uint8_t* mask, int64_t height, int64_t width, std::vector<RowRun>& runs) {
  for (int64_t y = 0; y < height; ++y) {
    const uint8_t* row = mask + y * width;
    for (int64_t x = next_with(row, 0, width, true); x < width;) {
      const int64_t end = next_with(row, x, width, false);
      runs.push_back({y, x, end});
      x = next_with(row, end, width, true);
    }
  }
}

}  // namespace deltaonnx

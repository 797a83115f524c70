#include "delta_conv/cpu/phase_split.h"

#include <algorithm>
#include <cstring>

#include "common/aligned_scratch.h"
#include "common/checked_size.h"

namespace deltaonnx {

namespace {

constexpr int64_t kSlack = 64;  // zeros past each plane's last row: a panel may end there

// Grow-only: every row a panel reads and the slack are written below, so nothing needs zeroing in advance.
AlignedScratch& thread_phase_buffer() {
  thread_local AlignedScratch b;
  return b;
}

}  // namespace

PhaseSplit phase_split_geometry(int64_t C, const Window2D& w) {
  PhaseSplit ps;
  ps.sy = w.y.stride;
  ps.sx = w.x.stride;
  const int64_t need_h = (w.y.out - 1) * w.y.stride + (w.y.kernel - 1) * w.y.dilation + 1;
  const int64_t need_w = (w.x.out - 1) * w.x.stride + (w.x.kernel - 1) * w.x.dilation + 1;
  ps.rows = (need_h + ps.sy - 1) / ps.sy;
  ps.width = (need_w + ps.sx - 1) / ps.sx;
  // slack: panels at the end read past the last row
  ps.plane = checked_product({ps.rows + 1, ps.width}, "a stride phase") + kSlack;
  checked_count({C, ps.sy, ps.sx, ps.plane}, "the stride phases");
  return ps;
}

void fill_phase_split(PhaseSplit& ps, const float* src, int64_t C, const Window2D& w, const uint8_t* needed_rows,
                      const KernelTable& k, const ParallelFor& parallel_for) {
  const int64_t H = w.y.in, W = w.x.in;
  ps.base = thread_phase_buffer().get(checked_count({C, ps.sy, ps.sx, ps.plane}, "the stride phases"));
  parallel_for(C, [&](int64_t c) {
    const float* in = src + c * H * W;
    if (ps.sx == 2) {  // both column phases of a row in one pass: even[v] = in[2v - pad], odd[v] = in[2v + 1 - pad]
      const int64_t pad = w.x.pad_begin;
      // Columns v whose two source columns are both inside the row go through the vector kernel; the few at
      // the borders are set one by one (zero outside the input).
      const int64_t v_lo = std::min(ps.width, (pad + 1) / 2);
      const int64_t v_hi = std::max(v_lo, std::min(ps.width, W + pad >= 2 ? (W + pad - 2) / 2 + 1 : int64_t{0}));
      for (int64_t py = 0; py < ps.sy; ++py) {
        float* even = const_cast<float*>(ps.at(c, py, 0));
        float* odd = const_cast<float*>(ps.at(c, py, 1));
        for (int64_t u = 0; u < ps.rows + 1; ++u) {
          const int64_t r = u * ps.sy + py, iy = r - w.y.pad_begin;
          if (needed_rows != nullptr && (u == ps.rows || !needed_rows[r])) continue;
          float* e = even + u * ps.width;
          float* o = odd + u * ps.width;
          if (iy < 0 || iy >= H || u == ps.rows) {
            std::memset(e, 0, static_cast<size_t>(ps.width) * sizeof(float));
            std::memset(o, 0, static_cast<size_t>(ps.width) * sizeof(float));
            continue;
          }
          const float* row = in + iy * W;
          auto at = [&](int64_t col) { return col >= 0 && col < W ? row[col] : 0.f; };
          for (int64_t v = 0; v < v_lo; ++v) e[v] = at(2 * v - pad), o[v] = at(2 * v + 1 - pad);
          if (v_hi > v_lo) k.deinterleave2(row + 2 * v_lo - pad, v_hi - v_lo, e + v_lo, o + v_lo);
          for (int64_t v = v_hi; v < ps.width; ++v) e[v] = at(2 * v - pad), o[v] = at(2 * v + 1 - pad);
        }
        std::memset(even + (ps.rows + 1) * ps.width, 0, kSlack * sizeof(float));
        std::memset(odd + (ps.rows + 1) * ps.width, 0, kSlack * sizeof(float));
      }
      return;
    }
    for (int64_t py = 0; py < ps.sy; ++py)
      for (int64_t px = 0; px < ps.sx; ++px) {
        float* out = const_cast<float*>(ps.at(c, py, px));
        for (int64_t u = 0; u < ps.rows + 1; ++u) {
          const int64_t r = u * ps.sy + py;  // padded row
          if (needed_rows != nullptr && (u == ps.rows || !needed_rows[r])) continue;
          float* dst = out + u * ps.width;
          const int64_t iy = r - w.y.pad_begin;
          if (iy < 0 || iy >= H || u == ps.rows) {
            std::memset(dst, 0, static_cast<size_t>(ps.width) * sizeof(float));
            continue;
          }
          // Columns v read input column v*sx + px - pad: zeros outside [lo, hi), a (strided) copy inside.
          const int64_t off = px - w.x.pad_begin;
          const int64_t lo = std::min(ps.width, off >= 0 ? int64_t{0} : (-off + ps.sx - 1) / ps.sx);
          const int64_t hi = std::max(lo, std::min(ps.width, W - off <= 0 ? int64_t{0} : (W - off + ps.sx - 1) / ps.sx));
          const float* row = in + iy * W + off;
          std::memset(dst, 0, static_cast<size_t>(lo) * sizeof(float));
          if (ps.sx == 1) {
            std::memcpy(dst + lo, row + lo, static_cast<size_t>(hi - lo) * sizeof(float));
          } else if (ps.sx == 2) {
            for (int64_t v = lo; v < hi; ++v) dst[v] = row[2 * v];
          } else {
            for (int64_t v = lo; v < hi; ++v) dst[v] = row[v * ps.sx];
          }
          std::memset(dst + hi, 0, static_cast<size_t>(ps.width - hi) * sizeof(float));
        }
        std::memset(out + (ps.rows + 1) * ps.width, 0, kSlack * sizeof(float));
      }
  });
}

}  // namespace deltaonnx

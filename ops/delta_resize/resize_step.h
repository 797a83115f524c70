// DeltaResize's geometry and per-element rules, written once for the CPU engine, the CUDA kernels and their host
// emulation: a nearest upsample by integer factors (output pixel (oy, ox) reads input pixel (oy / fh, ox / fw)) of
// `planes` planes of `lane` floats per pixel: NCHW is lane 1 and C planes, the blocked layout lane b and C / b
// planes ([N][C/b][H][W][b]), so one rule serves both. ORT-free and CUDA-free (common/host_device.h).
#pragma once
#include <cstdint>

#include "common/host_device.h"

namespace deltaonnx {

struct ResizeStep {
  int64_t batch = 0, planes = 0;   // N, planes per item (C, or C / b blocked)
  int64_t height = 0, width = 0;   // X's H, W
  int64_t lane = 1;                // floats per pixel of a plane (1, or b blocked)
  int64_t factor_h = 1, factor_w = 1;
  const float* x = nullptr;
  float* y = nullptr;
  // X's change map [N][H][W] (nonzero: the pixel may have changed): only the outputs of marked pixels are written,
  // the others keep what y holds (the last output). Null: every output.
  const uint8_t* map_in = nullptr;
  uint8_t* map_out = nullptr;      // [N][Ho][Wo]: 1 where the output was written; null: not wanted

  DELTA_HD int64_t out_height() const { return height * factor_h; }
  DELTA_HD int64_t out_width() const { return width * factor_w; }
  DELTA_HD int64_t out_pixels() const { return out_height() * out_width(); }
  DELTA_HD int64_t pixels() const { return height * width; }
  DELTA_HD int64_t out_elements() const { return batch * planes * out_pixels() * lane; }
  DELTA_HD int64_t map_elements() const { return batch * out_pixels(); }
};

// The input pixel (item n, offset in its [H][W] plane) that output pixel `q` (an index into [N][Ho][Wo]) reads.
DELTA_HD int64_t resize_source_pixel(const ResizeStep& s, int64_t q) {
  const int64_t n = q / s.out_pixels(), o = q % s.out_pixels();
  const int64_t oy = o / s.out_width(), ox = o % s.out_width();
  return n * s.pixels() + (oy / s.factor_h) * s.width + ox / s.factor_w;
}

// map_out at output pixel q: the map upsampled (0/1), or 1 everywhere without a map (every output written).
DELTA_HD void resize_map_thread(const ResizeStep& s, int64_t q) {
  s.map_out[q] = s.map_in == nullptr || s.map_in[resize_source_pixel(s, q)] != 0 ? 1 : 0;
}

// Output float i (an index into [N][planes][Ho][Wo][lane]): X's float it copies, unless its pixel is unmarked.
DELTA_HD void resize_thread(const ResizeStep& s, int64_t i) {
  const int64_t j = i % s.lane, pixel = i / s.lane;  // pixel: [N][planes][Ho][Wo]
  const int64_t o = pixel % s.out_pixels(), plane = pixel / s.out_pixels();  // plane: n * planes + c
  const int64_t n = plane / s.planes;
  const int64_t source = resize_source_pixel(s, n * s.out_pixels() + o) - n * s.pixels();  // in the item's plane
  if (s.map_in != nullptr && s.map_in[n * s.pixels() + source] == 0) return;
  s.y[i] = s.x[(plane * s.pixels() + source) * s.lane + j];
}

}  // namespace deltaonnx

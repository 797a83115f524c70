// DeltaPool's compute on the GPU: MaxPool of the listed output pixels only, one thread per (item, channel,
// list entry). max_pool_kernel.cu launches it; host/host_emulation.cc loops over the same grid.
#pragma once
#include <cstdint>

#include "common/delta_rules.h"
#include "common/geometry.h"
#include "common/host_device.h"
#include "cuda_common/pipeline_steps.h"

namespace deltaonnx {
namespace cuda {

struct MaxPoolStep {
  const float* x = nullptr;  // X_ref_next, [N][C][H][W]
  float* y = nullptr;        // [N][C][Ho][Wo]
  PixelList list;            // list.total = Ho*Wo
  int64_t batch = 0, channels = 0;
  Axis y_axis, x_axis;
};

// Entry i of item n's list, channel c. The grid covers every pixel ([N][C][Ho*Wo]) because list lengths are
// known only on the device; threads past their item's list do nothing.
DELTA_HD void max_pool_thread(const MaxPoolStep& s, int64_t n, int64_t c, int64_t i) {
  const bool dense = item_dense(s.list, n);
  if (i >= item_length(s.list, n, dense)) return;
  const int64_t q = item_pixel(s.list, n, i, dense);
  const int64_t oy = q / s.x_axis.out, ox = q - oy * s.x_axis.out;
  const int64_t plane = n * s.channels + c;
  s.y[plane * s.list.total + q] = max_pool_window(s.x + plane * s.y_axis.in * s.x_axis.in, s.y_axis, s.x_axis, oy, ox);
}

}  // namespace cuda
}  // namespace deltaonnx

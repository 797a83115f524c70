// The fallback's check before a probe, in one pass (python/deltaonnx/session/probe_check.py ProbeCheck.work_floor
// is the same count in numpy, the reference and the fallback where this module is not built). numpy's ufuncs took
// 350-1000 us per check on the caches a run had just emptied: more than the probes it saves on a 0.6 ms model.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <utility>
#include <vector>

namespace py = pybind11;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// now and kept: the bands of two frames (4-D, one shape), their rows `centers` bands of `band` rows along row_axis,
// the columns along col_axis, the other two axes batch items (axis 0) and channels. A pixel moved where some channel
// is further than bound from kept (NaN too). Per level: the share of the sampled rows' pixels marked, a pixel marked
// where a moved pixel lies within (rows, columns) reach of it, rows counted from each band's middle row; with
// block > 0, one level: a moved pixel in a band (block rows) marks its aligned block of columns.
std::vector<double> probe_marked_shares(FloatArray now, FloatArray kept, float bound, int64_t row_axis,
                                        int64_t col_axis, int64_t centers, int64_t band,
                                        const std::vector<std::pair<int64_t, int64_t>>& reaches, int64_t block) {
  if (now.ndim() != 4 || kept.ndim() != 4) throw std::invalid_argument("now and kept must be 4-D");
  for (int64_t d = 0; d < 4; ++d)
    if (now.shape(d) != kept.shape(d)) throw std::invalid_argument("now and kept must have one shape");
  if (row_axis < 1 || col_axis != row_axis + 1 || col_axis > 3) throw std::invalid_argument("rows and columns must be axes 1, 2 or 2, 3");
  if (centers < 1 || band < 1 || now.shape(row_axis) != centers * band)
    throw std::invalid_argument("the row axis must hold centers x band rows");
  if (reaches.empty() && block <= 0) throw std::invalid_argument("no level to count");
  const int64_t items = now.shape(0), rows = now.shape(row_axis), width = now.shape(col_axis);
  const int64_t channel_axis = row_axis == 2 ? 1 : 3, channels = now.shape(channel_axis);
  int64_t stride[4];
  stride[3] = 1;
  for (int64_t d = 2; d >= 0; --d) stride[d] = stride[d + 1] * now.shape(d + 1);
  const float* a = now.data();
  const float* b = kept.data();
  std::vector<uint8_t> moved(static_cast<size_t>(items * rows * width), 0);
  std::vector<double> shares;
  {
    py::gil_scoped_release release;
    // Along each frame's contiguous run: a row of columns (NCHW, a channel plane at a time) or a pixel's channels
    // (NHWC); the inner loop vectorizes.
    for (int64_t n = 0; n < items; ++n) {
      uint8_t* item_moved = moved.data() + n * rows * width;
      if (channel_axis == 1) {
        for (int64_t c = 0; c < channels; ++c)
          for (int64_t r = 0; r < rows; ++r) {
            const int64_t at = n * stride[0] + c * stride[1] + r * stride[2];
            uint8_t* m = item_moved + r * width;
            for (int64_t x = 0; x < width; ++x) m[x] |= !(std::fabs(a[at + x] - b[at + x]) <= bound);  // NaN: not <=
          }
      } else {
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t x = 0; x < width; ++x) {
            const int64_t at = n * stride[0] + r * stride[1] + x * stride[2];
            uint8_t any = 0;
            for (int64_t c = 0; c < channels; ++c) any |= !(std::fabs(a[at + c] - b[at + c]) <= bound);
            item_moved[r * width + x] = any;
          }
      }
    }
    std::vector<uint8_t> row_any(static_cast<size_t>(width));
    std::vector<int64_t> next_moved(static_cast<size_t>(width) + 1);
    const int64_t pixels = items * centers * width;
    auto count_level = [&](int64_t reach_rows, int64_t reach_columns) {
      int64_t marked = 0;
      const int64_t middle = block > 0 ? 0 : band / 2;
      const int64_t first = block > 0 ? 0 : std::max<int64_t>(0, middle - reach_rows);
      const int64_t last = block > 0 ? band - 1 : std::min<int64_t>(band - 1, middle + reach_rows);
      for (int64_t n = 0; n < items; ++n)
        for (int64_t k = 0; k < centers; ++k) {
          std::fill(row_any.begin(), row_any.end(), 0);
          for (int64_t r = first; r <= last; ++r) {
            const uint8_t* m = moved.data() + (n * rows + k * band + r) * width;
            for (int64_t x = 0; x < width; ++x) row_any[static_cast<size_t>(x)] |= m[x];
          }
          if (block > 0) {
            for (int64_t x0 = 0; x0 < width; x0 += block) {
              const int64_t x1 = std::min(width, x0 + block);
              bool hit = false;
              for (int64_t x = x0; x < x1; ++x) hit |= row_any[static_cast<size_t>(x)] != 0;
              if (hit) marked += x1 - x0;
            }
          } else {
            int64_t last_moved = -(reach_columns + 1) - 1;  // a sweep: the nearest moved column left of x, right of x
            next_moved[static_cast<size_t>(width)] = width + reach_columns + 1;
            for (int64_t x = width - 1; x >= 0; --x)
              next_moved[static_cast<size_t>(x)] = row_any[static_cast<size_t>(x)] ? x : next_moved[static_cast<size_t>(x) + 1];
            for (int64_t x = 0; x < width; ++x) {
              if (row_any[static_cast<size_t>(x)]) last_moved = x;
              if (x - last_moved <= reach_columns || next_moved[static_cast<size_t>(x)] - x <= reach_columns) ++marked;
            }
          }
        }
      return pixels > 0 ? static_cast<double>(marked) / static_cast<double>(pixels) : 0.0;
    };
    if (block > 0) {
      shares.push_back(count_level(0, 0));
    } else {
      for (const auto& [reach_rows, reach_columns] : reaches) shares.push_back(count_level(reach_rows, reach_columns));
    }
  }
  return shares;
}

}  // namespace

void bind_probe_marks(py::module_& m) {
  m.def("probe_marked_shares", &probe_marked_shares, py::arg("now"), py::arg("kept"), py::arg("bound"),
        py::arg("row_axis"), py::arg("col_axis"), py::arg("centers"), py::arg("band"), py::arg("reaches"),
        py::arg("block") = 0,
        "The fallback's check before a probe: per level, the share of the sampled rows' pixels marked "
        "(session/probe_check.py).");
}

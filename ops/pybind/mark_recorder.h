// The change-map statistics of a stream, shared by module.cc (which binds it) and steady_frame_run.cc (which
// records through it without a Python call).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

#include "common/change_map.h"

namespace py = pybind11;

namespace deltaonnx {

// sum(w[i] * v[i]) in index order: the fallback's FLOP-weighted share of work, the same bits in
// session/fallback_policy.py (through the module's weighted_sum) and in the compiled prepared run.
inline double weighted_sum(const double* w, const double* v, int64_t n) {
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) sum += w[i] * v[i];
  return sum;
}

// A stream's change-map statistics, recorded after each run in one call without arguments: DeltaSession calls it
// right after ORT's run, when a model's state has pushed Python's working set out of the caches, and there each
// numpy operation or argument conversion cost ~10 us (count_marks plus two ufuncs: 30-70 us a frame on the zoo
// models, benchmarks/session_overhead.py). The slices are checked once; the arrays are held, so their memory stays.
class MarkRecorder {
 public:
  MarkRecorder(py::array_t<uint8_t, py::array::c_style> buffer, py::array_t<int64_t, py::array::c_style> starts,
               py::array_t<int64_t, py::array::c_style> sizes, py::array_t<double, py::array::c_style> last,
               py::array_t<double, py::array::c_style> sums)
      : buffer_(std::move(buffer)), starts_(std::move(starts)), sizes_(std::move(sizes)), last_(std::move(last)),
        sums_(std::move(sums)) {
    const int64_t slices = starts_.size();
    if (starts_.ndim() != 1 || sizes_.ndim() != 1 || last_.ndim() != 1 || sums_.ndim() != 1 ||
        sizes_.size() != slices || last_.size() != slices || sums_.size() != slices)
      throw std::invalid_argument("MarkRecorder: starts, sizes, last and sums must be 1-D arrays of one length");
    if (!last_.writeable() || !sums_.writeable()) throw std::invalid_argument("MarkRecorder: last and sums must be writeable");
    const int64_t total = buffer_.size();
    for (int64_t i = 0; i < slices; ++i) {
      const int64_t start = starts_.data()[i], size = sizes_.data()[i];
      if (start < 0 || size < 0 || start > total || size > total - start)
        throw std::invalid_argument("MarkRecorder: slice " + std::to_string(i) + " [" + std::to_string(start) + ", +" +
                                    std::to_string(size) + ") leaves the buffer of " + std::to_string(total) + " bytes");
    }
  }

  int64_t slices() const { return starts_.size(); }
  const double* last() const { return last_.data(); }

  // last[i] = the share of slice i marked (an empty slice: 0); sums[i] += last[i].
  void record() {
    const uint8_t* data = buffer_.data();
    double* last = last_.mutable_data();
    double* sums = sums_.mutable_data();
    for (int64_t i = 0; i < starts_.size(); ++i) {
      const int64_t size = sizes_.data()[i];
      last[i] = size > 0 ? static_cast<double>(count_marks(data + starts_.data()[i], size)) / static_cast<double>(size) : 0.0;
      sums[i] += last[i];
    }
  }

  // The record of a run in which every map marks all its pixels, without reading them: a stateless run's (every past
  // empty, so each op and union marks everything, rule 1; docs/design.md#stateless-runs). Reading the maps right after
  // ORT's run cost 7.5 us a frame on mobilenetv2_like and 9 on yolov8_like (86-88 KB of maps out of the caches).
  void record_all_marked() {
    double* last = last_.mutable_data();
    double* sums = sums_.mutable_data();
    for (int64_t i = 0; i < starts_.size(); ++i) {
      last[i] = sizes_.data()[i] > 0 ? 1.0 : 0.0;
      sums[i] += last[i];
    }
  }

 private:
  py::array_t<uint8_t, py::array::c_style> buffer_;
  py::array_t<int64_t, py::array::c_style> starts_, sizes_;
  py::array_t<double, py::array::c_style> last_, sums_;
};

}  // namespace deltaonnx

// The prepared run of a stream (python/deltaonnx/session/steady_run.py, docs/design.md#the-prepared-run) made in
// one call, for delta and stateless streams. After ORT's run has emptied the caches each Python line costs
// microseconds: in the Python closure this replaces, mobilenetv2_like at 224 spent ~127 us a frame around ORT's run
// (its checks 21 us, the frame bound 27, one 40-byte output copied 28, the bookkeeping 24), cnn1 ~35 us, where dense
// ORT's whole Python side is a few lines (docs/results.md#seventeenth-session). Here the checks, the copies and the
// bookkeeping are C++: only ORT's own calls (the frame's OrtValue, binding it, the run) and the lock remain calls
// into Python, and the fallback policy (session/fallback_policy.py) is called only on the runs it may act on.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "pybind/mark_recorder.h"

namespace py = pybind11;
using deltaonnx::MarkRecorder;

namespace {

// The stream's counters the run keeps, shared with StreamState (python/deltaonnx/session/stream_state.py STEADY_COUNTS
// names them in this order), and its smoothed values, a float64 array (STEADY_SMOOTHED; NaN: none yet).
enum Count : int64_t { kRuns = 0, kModeRuns, kStatelessRuns, kProbeInterval, kCheckWait, kTwinWait, kCountSlots };
enum Smoothed : int64_t { kWork = 0, kDeltaSeconds, kTwinSeconds, kLastSeconds, kSmoothedSlots };

using Counts = py::array_t<int64_t, py::array::c_style>;
using Doubles = py::array_t<double, py::array::c_style>;

// What FallbackPolicy.after_delta_run decides with on the runs it does not act on (its constants, the nodes' FLOPs,
// fixed while the stream stays in delta).
struct DeltaPolicy {
  bool active = false;  // the session has a fallback (FallbackPolicy.mode is not None)
  int64_t settle = 2;   // a probe's (and a reset's) first runs, which the policy decides itself
  double enter = 0.0;   // the share past which a stream settled in delta leaves it
  Doubles node_flops;   // per map, empty when unknown
  double flops_total = 0.0;
  // FallbackPolicy's clock (the dense twin only): delta runs timed against the twin's
  bool clock = false;
  double clock_enter = 0.0;  // CLOCK_ENTER
  double smoothing = 0.0;    // CLOCK_SMOOTHING
  int64_t sample_at = 0;     // TWIN_SAMPLE_AT
};

class SteadyFrameRun {
 public:
  struct Ort {  // ORT's C-level calls for one stream's binding (session/binding.py StreamBinding)
    py::object value_of, device, bind_input, bind_output, run, binding;
  };

  // delta: a delta stream (else stateless). policy_run: the policy's own call (state, frame) for the runs it may act
  // on, after this run's maps are recorded (DeltaSession._tell_policy).
  // tested: the delta stream's identical-frame test is on (a run the test is due on goes to the general path).
  SteadyFrameRun(py::object state, py::str input_name, std::vector<int64_t> shape, py::dtype dtype, Ort ort,
                 std::vector<py::str> frame_references, py::dict frames, std::vector<py::array> kept,
                 py::object recorder, Counts counts, Doubles smoothed, bool delta, bool tested,
                 DeltaPolicy policy, py::object policy_run)
      : state_(std::move(state)), name_(std::move(input_name)), shape_(std::move(shape)), dtype_(std::move(dtype)),
        ort_(std::move(ort)), references_(std::move(frame_references)), frames_(std::move(frames)),
        kept_(std::move(kept)), recorder_object_(std::move(recorder)), counts_(std::move(counts)),
        smoothed_(std::move(smoothed)), delta_(delta), tested_(tested), policy_(std::move(policy)),
        policy_run_(std::move(policy_run)) {
    if (counts_.ndim() != 1 || counts_.size() != kCountSlots || !counts_.writeable())
      throw std::invalid_argument("SteadyFrameRun: counts must be a writeable int64 array of " +
                                  std::to_string(kCountSlots));
    if (smoothed_.ndim() != 1 || smoothed_.size() != kSmoothedSlots || !smoothed_.writeable())
      throw std::invalid_argument("SteadyFrameRun: smoothed must be a writeable float64 array of " +
                                  std::to_string(kSmoothedSlots));
    recorder_ = recorder_object_.cast<MarkRecorder*>();
    if (policy_.active && policy_.flops_total > 0 &&
        (policy_.node_flops.ndim() != 1 || policy_.node_flops.size() != recorder_->slices()))
      throw std::invalid_argument("SteadyFrameRun: node_flops must hold one value per change map");
    if (!PyCallable_Check(policy_run_.ptr())) throw std::invalid_argument("SteadyFrameRun: policy_run must be callable");
    py::object lock = state_.attr("lock");
    acquire_ = lock.attr("acquire");
    release_ = lock.attr("release");
    drop_state_ = state_.attr("drop_state");
    for (const py::array& k : kept_)
      if (!(k.flags() & py::array::c_style)) throw std::invalid_argument("SteadyFrameRun: kept outputs must be C-contiguous");
  }

  // The run's outputs, or None (nothing done) when the call is not one it is for: outputs asked by name, another
  // feed, a frame of another type, shape or dtype or not C-contiguous, a stream whose state changed meanwhile
  // (state.steady is no longer this object), or a run the identical-frame test is due on. DeltaSession.run then
  // takes the general path.
  py::object call(py::handle self, py::handle output_names, py::handle input_feed, py::handle run_options) {
    if (!output_names.is_none() || !PyDict_CheckExact(input_feed.ptr()) || PyDict_Size(input_feed.ptr()) != 1)
      return py::none();
    PyObject* frame = PyDict_GetItemWithError(input_feed.ptr(), name_.ptr());  // borrowed
    if (frame == nullptr) {
      if (PyErr_Occurred()) throw py::error_already_set();
      return py::none();
    }
    if (!state_ || !fits(frame)) return py::none();  // no state_: cleared by the garbage collector
    acquire_();
    struct Release {  // the lock is released on every way out
      py::object& release;
      ~Release() {
        try {
          release();
        } catch (...) {
        }
      }
    } release{release_};
    int64_t* c = counts_.mutable_data();
    if (state_.attr(steady_name_).ptr() != self.ptr() || (tested_ && c[kCheckWait] < 2)) return py::none();
    py::list outputs(kept_.size());
    double seconds = 0.0;
    try {
      frames_[name_] = py::handle(frame);  // alive while ORT points at it
      py::object value = ort_.value_of(py::handle(frame), ort_.device);  // on the frame's memory, no copy
      ort_.bind_input(name_, value);
      for (const py::str& present : references_) ort_.bind_output(present, value);
      const auto start = std::chrono::steady_clock::now();  // ORT's run, as DeltaSession._run_delta times it
      ort_.run(ort_.binding, run_options);
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    } catch (...) {
      try {
        drop_state_();  // buffers bound in place may be half written
      } catch (...) {
      }
      throw;
    }
    for (size_t i = 0; i < kept_.size(); ++i) {  // copies: the kept buffers take the next run's outputs
      const py::array& k = kept_[i];
      py::array copy(k.dtype(), std::vector<py::ssize_t>(k.shape(), k.shape() + k.ndim()));
      std::memcpy(copy.mutable_data(), k.data(), static_cast<size_t>(k.nbytes()));
      outputs[i] = std::move(copy);
    }
    if (tested_) {  // at least 1 left: the next run is not tested, nothing kept for it
      c[kCheckWait] -= 1;
      state_.attr(kept_names_name_) = py::none();
    }
    // DeltaSession._record_maps
    c[kRuns] += 1;
    if (delta_)
      recorder_->record();
    else
      recorder_->record_all_marked();  // a stateless run marks everything
    state_.attr(maps_cleared_name_) = py::bool_(false);
    if (delta_) {
      after_delta_run(frame, seconds);
    } else if (c[kModeRuns] + 1 >= c[kProbeInterval] - 1) {
      policy_run_(state_, py::handle(frame));  // the policy may act: it counts this run
    } else {
      c[kStatelessRuns] += 1;
      c[kModeRuns] += 1;
    }
    return std::move(outputs);
  }

 private:
  bool fits(PyObject* frame) const {
    if (Py_TYPE(frame) != py::detail::npy_api::get().PyArray_Type_) return false;  // exactly numpy.ndarray
    const auto a = py::reinterpret_borrow<py::array>(frame);
    if (a.ndim() != static_cast<py::ssize_t>(shape_.size()) || !(a.flags() & py::array::c_style)) return false;
    for (size_t d = 0; d < shape_.size(); ++d)
      if (a.shape(static_cast<py::ssize_t>(d)) != shape_[d]) return false;
    return a.dtype().equal(dtype_);
  }

  // Garbage-collector support. The run holds its stream's state, whose `steady` holds the run, and the policy's call
  // holds the session: a cycle through this object, which the collector must see (tp_traverse) and can break
  // (tp_clear), else a session dropped with a prepared stream would keep its state and ORT session forever.
  template <typename Visit>
  void for_each_held(Visit&& visit) {
    for (py::object* o : {&state_, static_cast<py::object*>(&name_), static_cast<py::object*>(&dtype_), &ort_.value_of,
                          &ort_.device, &ort_.bind_input, &ort_.bind_output, &ort_.run, &ort_.binding,
                          static_cast<py::object*>(&frames_), &recorder_object_, static_cast<py::object*>(&counts_),
                          static_cast<py::object*>(&smoothed_), static_cast<py::object*>(&policy_.node_flops),
                          &policy_run_, &acquire_, &release_, &drop_state_})
      visit(*o);
    for (py::str& r : references_) visit(r);
    for (py::array& k : kept_) visit(k);
  }

 public:
  int traverse(visitproc visit, void* arg) {
    int failed = 0;
    for_each_held([&](py::object& o) {
      if (failed == 0 && o.ptr() != nullptr) failed = visit(o.ptr(), arg);
    });
    return failed;
  }
  void clear() {
    recorder_ = nullptr;
    for_each_held([](py::object& o) { o = py::object(); });
  }

 private:
  // FallbackPolicy.after_delta_run where it only counts and smooths: on a stream settled in delta (past a probe's
  // or a reset's first runs) whose smoothed share, and with the clock its smoothed time, stay within the bounds, and
  // whose twin is not due to be timed. Elsewhere the policy itself decides, from the same maps and times (nothing
  // is written before it is called).
  void after_delta_run(PyObject* frame, double seconds) {
    if (!policy_.active) return;
    int64_t* c = counts_.mutable_data();
    double* s = smoothed_.mutable_data();
    s[kLastSeconds] = seconds;
    const int64_t mode_runs = c[kModeRuns] + 1;
    if (mode_runs <= policy_.settle) {
      policy_run_(state_, py::handle(frame));
      return;
    }
    double work = s[kWork];
    if (policy_.flops_total > 0) {
      const double share =
          deltaonnx::weighted_sum(policy_.node_flops.data(), recorder_->last(), recorder_->slices()) /
          policy_.flops_total;
      work = std::isnan(work) ? share : 0.5 * work + 0.5 * share;
      if (work > policy_.enter) {
        policy_run_(state_, py::handle(frame));  // it leaves delta: the policy counts this run and switches
        return;
      }
    }
    double delta_seconds = s[kDeltaSeconds];
    int64_t twin_wait = c[kTwinWait];
    if (policy_.clock) {
      const double a = policy_.smoothing, twin = s[kTwinSeconds];
      delta_seconds = std::isnan(delta_seconds) ? seconds : (1.0 - a) * delta_seconds + a * seconds;
      // the policy leaves delta past the twin's time, or has the twin timed on the next run
      const bool acts = std::isnan(twin) ? mode_runs >= policy_.sample_at
                                         : delta_seconds > policy_.clock_enter * twin || --twin_wait <= 0;
      if (acts) {
        policy_run_(state_, py::handle(frame));
        return;
      }
    }
    c[kModeRuns] = mode_runs;
    c[kTwinWait] = twin_wait;
    s[kWork] = work;
    s[kDeltaSeconds] = delta_seconds;
  }

  py::object state_;
  py::str name_;
  std::vector<int64_t> shape_;
  py::dtype dtype_;
  Ort ort_;
  std::vector<py::str> references_;
  py::dict frames_;
  std::vector<py::array> kept_;
  py::object recorder_object_;
  MarkRecorder* recorder_ = nullptr;
  Counts counts_;
  Doubles smoothed_;
  bool delta_ = false, tested_ = false;
  DeltaPolicy policy_;
  py::object policy_run_, acquire_, release_, drop_state_;
  py::str steady_name_{"steady"}, maps_cleared_name_{"maps_cleared"}, kept_names_name_{"kept_names"};
};

}  // namespace

void bind_steady_frame_run(py::module_& m) {
  // With the collector's slots (SteadyFrameRun::traverse, clear): the run and its stream's state refer to each other.
  const py::custom_type_setup gc_slots([](PyHeapTypeObject* heap_type) {
    PyTypeObject* type = &heap_type->ht_type;
    type->tp_flags |= Py_TPFLAGS_HAVE_GC;
    type->tp_traverse = [](PyObject* self, visitproc visit, void* arg) -> int {
      Py_VISIT(Py_TYPE(self));  // a heap type's instances hold their type
      const auto vh = reinterpret_cast<py::detail::instance*>(self)->get_value_and_holder();
      return vh.holder_constructed() ? vh.value_ptr<SteadyFrameRun>()->traverse(visit, arg) : 0;
    };
    type->tp_clear = [](PyObject* self) -> int {
      const auto vh = reinterpret_cast<py::detail::instance*>(self)->get_value_and_holder();
      if (vh.holder_constructed()) vh.value_ptr<SteadyFrameRun>()->clear();
      return 0;
    };
  });
  py::class_<SteadyFrameRun>(m, "SteadyFrameRun",
                             "The prepared run of a delta or stateless stream in one call (session/steady_run.py): "
                             "run(output_names, input_feed, run_options) -> outputs, or None when the call is not "
                             "one it is for.", gc_slots)
      .def(py::init([](py::object state, py::str input_name, std::vector<int64_t> shape, py::dtype dtype,
                       py::object value_of, py::object device, py::object bind_input, py::object bind_output,
                       py::object run, py::object binding, std::vector<py::str> frame_references, py::dict frames,
                       std::vector<py::array> kept, py::object recorder, Counts counts, Doubles smoothed, bool delta,
                       bool tested, py::object policy_run, bool policy_active, int64_t settle, double enter,
                       py::object node_flops, double flops_total, bool clock, double clock_enter, double smoothing,
                       int64_t sample_at) {
             DeltaPolicy policy;
             policy.active = policy_active;
             policy.settle = settle;
             policy.enter = enter;
             if (!node_flops.is_none()) policy.node_flops = node_flops.cast<Doubles>();
             policy.flops_total = flops_total;
             policy.clock = clock;
             policy.clock_enter = clock_enter;
             policy.smoothing = smoothing;
             policy.sample_at = sample_at;
             return SteadyFrameRun(std::move(state), std::move(input_name), std::move(shape), std::move(dtype),
                                   {std::move(value_of), std::move(device), std::move(bind_input),
                                    std::move(bind_output), std::move(run), std::move(binding)},
                                   std::move(frame_references), std::move(frames), std::move(kept),
                                   std::move(recorder), std::move(counts), std::move(smoothed), delta, tested,
                                   std::move(policy), std::move(policy_run));
           }),
           py::arg("state"), py::arg("input_name"), py::arg("shape"), py::arg("dtype"), py::arg("value_of"),
           py::arg("device"), py::arg("bind_input"), py::arg("bind_output"), py::arg("run"), py::arg("binding"),
           py::arg("frame_references"), py::arg("frames"), py::arg("kept"), py::arg("recorder"),
           py::arg("counts").noconvert(), py::arg("smoothed").noconvert(), py::arg("delta"), py::arg("tested"),
           py::arg("policy_run"), py::arg("policy_active") = false, py::arg("settle") = 2, py::arg("enter") = 0.0,
           py::arg("node_flops") = py::none(), py::arg("flops_total") = 0.0, py::arg("clock") = false,
           py::arg("clock_enter") = 0.0, py::arg("smoothing") = 0.0, py::arg("sample_at") = 0)
      .def("__call__",
           [](py::handle self, py::handle output_names, py::handle input_feed, py::handle run_options) {
             return self.cast<SteadyFrameRun&>().call(self, output_names, input_feed, run_options);
           },
           py::arg("output_names"), py::arg("input_feed"), py::arg("run_options") = py::none());
}

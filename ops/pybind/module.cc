// deltaonnx._native: the engines and CPU facts without building ONNX graphs, for tests and benchmarks.
// Arrays are float32 C-contiguous NCHW (uint8 for change maps), exactly as the ORT kernels see them.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cmath>
#include <atomic>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "common/change_map.h"
#include "common/channel_block.h"
#include "common/cpu_features.h"
#include "common/kernel_table.h"
#include "delta_conv/cpu/conv_engine.h"
#include "delta_pool/cpu/pool_engine.h"
#include "delta_gate/cpu/gate_probe.h"
#include "delta_gate/gate_engine.h"
#include "op_definition/state_decision.h"
#include "pybind/mark_recorder.h"

#if defined(DELTAONNX_CUDA_HOST_BINDINGS)
void bind_cuda_host(pybind11::module_& m);
#endif

namespace py = pybind11;
using namespace deltaonnx;

namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using ByteArray = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

const KernelTable& table_for(const std::optional<std::string>& simd) {
  if (!simd) return kernels();
  const KernelTable* t = kernels_named(simd->c_str());
  if (!t) throw std::invalid_argument("SIMD variant '" + *simd + "' is not built or not supported by this CPU");
  return *t;
}

// A plain thread fan-out standing in for ORT's pool (threads <= 1: serial).
ParallelFor threads_for(int threads) {
  if (threads <= 1) return serial_for;
  return [threads](int64_t count, LoopBody body) {
    std::atomic<int64_t> next{0};
    auto worker = [&] {
      for (int64_t i = next++; i < count; i = next++) body(i);
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < std::min<int64_t>(threads, count); ++t) pool.emplace_back(worker);
    worker();
    for (auto& th : pool) th.join();
  };
}

std::vector<int64_t> shape_of(const py::array& a) { return std::vector<int64_t>(a.shape(), a.shape() + a.ndim()); }


WindowSpec make_window(std::vector<int64_t> kernel, std::vector<int64_t> strides, std::vector<int64_t> pads,
                       std::vector<int64_t> dilations, const std::string& auto_pad, bool ceil_mode) {
  WindowSpec w;
  const std::string e = window_from_lists(kernel, strides, pads, dilations, auto_pad, ceil_mode, &w);
  if (!e.empty()) throw std::invalid_argument(e);
  return w;
}

// Rule 1 as the ORT kernels apply it (op_definition/state_decision.h): x_ref None means the reference is dropped.
struct StateFlags {
  bool has_state = false, dropped = false;
};
StateFlags state_flags(const FloatArray& x, const std::optional<FloatArray>& x_ref, const FloatArray& y_prev,
                       const std::optional<ByteArray>& map_in, const std::vector<int64_t>& ys, float threshold) {
  StateShapes shapes;
  shapes.x = shape_of(x);
  shapes.y = ys;
  shapes.x_ref_given = x_ref.has_value();
  if (x_ref) shapes.x_ref = shape_of(*x_ref);
  shapes.y_prev = shape_of(y_prev);
  shapes.map_given = map_in.has_value();
  if (map_in) shapes.map = shape_of(*map_in);
  const StateDecision d = decide_state(shapes, threshold);  // std::invalid_argument -> ValueError
  return StateFlags{d.has_state, d.reference_dropped};
}

void fill_run(DeltaRun& run, const FloatArray& x, const std::optional<FloatArray>& x_ref, const FloatArray& y_prev,
              const std::optional<ByteArray>& map_in, const StateFlags& sf, py::array_t<float>& y,
              py::array_t<float>& xr, py::array_t<uint8_t>& map_out) {
  run.batch = x.shape(0);
  run.channels = x.shape(1);
  run.height = x.shape(2);
  run.width = x.shape(3);
  run.has_state = sf.has_state;
  run.reference_dropped = sf.dropped;
  run.x = x.data();
  run.x_ref = sf.has_state && !sf.dropped ? x_ref->data() : nullptr;
  run.y_prev = sf.has_state ? y_prev.data() : nullptr;
  run.map_in = map_in ? map_in->data() : nullptr;
  run.y = y.mutable_data();
  run.x_ref_next = sf.dropped ? nullptr : xr.mutable_data();
  run.map_out = map_out.mutable_data();
}

// The change rule of a Delta op's threshold from the pybind arguments (as the ops' attributes give it).
GateSpec inner_gate(const std::string& rule, float threshold, int64_t gate_block, float gate_hard) {
  GateSpec g;
  const std::string e = GateSpec::make(rule, threshold, gate_block, gate_hard, &g);
  if (!e.empty()) throw std::invalid_argument("gate: " + e);
  return g.block_rule ? g : pixel_rule();
}

// Output arrays: the caller's (for in-place runs) or new ones.
template <typename T>
py::array_t<T> output_array(const std::optional<py::array_t<T>>& given, const std::vector<int64_t>& shape,
                            const char* name) {
  if (!given) return py::array_t<T>(shape);
  const py::array_t<T>& a = *given;
  if (shape_of(a) != shape || !(a.flags() & py::array::c_style) || !a.writeable())
    throw std::invalid_argument(std::string(name) + " must be a writable C-contiguous array of the output's shape");
  return a;
}

py::tuple delta_conv(FloatArray x, FloatArray w, std::optional<FloatArray> b, std::optional<FloatArray> x_ref, FloatArray y_prev,
                     std::optional<ByteArray> map_in, std::vector<int64_t> strides, std::vector<int64_t> pads,
                     std::vector<int64_t> dilations, int64_t group, const std::string& auto_pad,
                     const std::string& activation, std::vector<float> activation_params, float threshold,
                     float dense_fraction, const std::string& gate, int64_t gate_block, float gate_hard,
                     std::optional<py::array_t<float>> y_out,
                     std::optional<py::array_t<float>> x_ref_out, std::optional<std::string> simd, int threads) {
  if (x.ndim() != 4 || w.ndim() != 4) throw std::invalid_argument("X and W must be 4-D");
  ConvSpec spec;
  spec.window = make_window({w.shape(2), w.shape(3)}, strides, pads, dilations, auto_pad, false);
  spec.group = group;
  spec.out_channels = w.shape(0);
  spec.in_channels_per_group = w.shape(1);
  std::string activation_error;
  if (!resolve_conv_activation(activation, activation_params, &spec.activation, &activation_error))
    throw std::invalid_argument(activation_error);
  spec.threshold = threshold;
  spec.dense_fraction = dense_fraction;
  spec.gate = inner_gate(gate, threshold, gate_block, gate_hard);
  std::string e = spec.validate();
  if (!e.empty()) throw std::invalid_argument(e);
  const int64_t N = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3), M = spec.out_channels;
  if (C != spec.in_channels_per_group * group) throw std::invalid_argument("X channels do not match W and group");
  const Window2D win = spec.window.resolve(H, W);
  const std::vector<int64_t> ys{N, M, win.y.out, win.x.out};
  const StateFlags sf = state_flags(x, x_ref, y_prev, map_in, ys, threshold);
  if (b && (b->ndim() != 1 || b->shape(0) != M)) throw std::invalid_argument("B must be [M]");
  const KernelTable& table = table_for(simd);
  PackedConvWeights packed(spec, w.data(), table);
  py::array_t<float> y = output_array(y_out, ys, "y_out");
  py::array_t<float> xr = output_array(x_ref_out, sf.dropped ? std::vector<int64_t>{0, 0, 0, 0} : shape_of(x), "x_ref_out");
  py::array_t<uint8_t> map_out(std::vector<int64_t>{N, 1, win.y.out, win.x.out});
  ConvRun run;
  fill_run(run, x, x_ref, y_prev, map_in, sf, y, xr, map_out);
  run.bias = b ? b->data() : nullptr;
  RunStats stats;
  {
    py::gil_scoped_release release;
    run_delta_conv(spec, packed, run, threads_for(threads), &stats);
  }
  return py::make_tuple(y, xr, map_out);
}

py::tuple delta_pool(FloatArray x, std::optional<FloatArray> x_ref, FloatArray y_prev, std::optional<ByteArray> map_in,
                     std::vector<int64_t> kernel_shape, std::vector<int64_t> strides, std::vector<int64_t> pads,
                     std::vector<int64_t> dilations, const std::string& auto_pad, bool ceil_mode, float threshold,
                     float dense_fraction, const std::string& gate, int64_t gate_block, float gate_hard,
                     std::optional<py::array_t<float>> y_out,
                     std::optional<py::array_t<float>> x_ref_out, std::optional<std::string> simd, int threads) {
  if (x.ndim() != 4) throw std::invalid_argument("X must be 4-D");
  PoolSpec spec;
  spec.window = make_window(kernel_shape, strides, pads, dilations, auto_pad, ceil_mode);
  spec.threshold = threshold;
  spec.dense_fraction = dense_fraction;
  spec.gate = inner_gate(gate, threshold, gate_block, gate_hard);
  std::string e = spec.validate();
  if (!e.empty()) throw std::invalid_argument(e);
  const int64_t N = x.shape(0), C = x.shape(1), H = x.shape(2), W = x.shape(3);
  const Window2D win = spec.window.resolve(H, W);
  const std::vector<int64_t> ys{N, C, win.y.out, win.x.out};
  const StateFlags sf = state_flags(x, x_ref, y_prev, map_in, ys, threshold);
  py::array_t<float> y = output_array(y_out, ys, "y_out");
  py::array_t<float> xr = output_array(x_ref_out, sf.dropped ? std::vector<int64_t>{0, 0, 0, 0} : shape_of(x), "x_ref_out");
  py::array_t<uint8_t> map_out(std::vector<int64_t>{N, 1, win.y.out, win.x.out});
  PoolRun run;
  fill_run(run, x, x_ref, y_prev, map_in, sf, y, xr, map_out);
  run.kernels = &table_for(simd);
  {
    py::gil_scoped_release release;
    run_delta_pool(spec, run, threads_for(threads));
  }
  return py::make_tuple(y, xr, map_out);
}

py::tuple delta_gate(FloatArray x, std::optional<FloatArray> x_ref, std::optional<ByteArray> map_in,
                     const std::string& rule, float threshold, int64_t gate_block, float gate_hard,
                     std::optional<py::array_t<float>> x_gated_out, std::optional<std::string> simd, int threads) {
  if (x.ndim() != 4) throw std::invalid_argument("X must be 4-D");
  GateSpec spec;
  std::string e = GateSpec::make(rule, threshold, gate_block, gate_hard, &spec);
  if (!e.empty()) throw std::invalid_argument(e);
  const int64_t N = x.shape(0), H = x.shape(2), W = x.shape(3);
  GateRun run;
  if (map_in) {
    if (map_in->ndim() != 4 || map_in->shape(0) != N || map_in->shape(1) != 1)
      throw std::invalid_argument("map_in must be [N,1,H,W] or [N,1,ceil(H/k),ceil(W/k)]");
    e = check_gate_map(spec, H, W, map_in->shape(2), map_in->shape(3), &run.map_per_block);
    if (!e.empty()) throw std::invalid_argument(e);
    run.map_in = map_in->data();
  }
  const bool has_state = x_ref && !holds_no_elements(shape_of(*x_ref)) && shape_of(*x_ref) == shape_of(x);
  py::array_t<float> gated = output_array(x_gated_out, shape_of(x), "x_gated_out");
  py::array_t<uint8_t> map_out(std::vector<int64_t>{N, 1, H, W});
  run.batch = N;
  run.channels = x.shape(1);
  run.height = H;
  run.width = W;
  run.x = x.data();
  run.x_ref = has_state ? x_ref->data() : nullptr;
  run.x_gated = gated.mutable_data();
  run.map_out = map_out.mutable_data();
  const KernelTable& table = table_for(simd);
  {
    py::gil_scoped_release release;
    run_gate(spec, run, table, threads_for(threads));
  }
  return py::make_tuple(gated, map_out);
}

// Whether the gate would find a change (the identical-frame test, session/frame_compare.py): the C entry point
// C clients ask (delta_gate/cpu/gate_probe.h), one pass of the engine, no copy. Without a reference (none, empty or
// of another shape) every pixel counts as changed.
bool gate_finds_change(FloatArray x, std::optional<FloatArray> x_ref, std::optional<ByteArray> map_in,
                       const std::string& rule, float threshold, int64_t gate_block, float gate_hard) {
  if (x.ndim() != 4) throw std::invalid_argument("X must be 4-D");
  GateSpec spec;
  const std::string bad = GateSpec::make(rule, threshold, gate_block, gate_hard, &spec);
  if (!bad.empty()) throw std::invalid_argument(bad);
  if (map_in && map_in->ndim() != 4) throw std::invalid_argument("map_in must be [N,1,H,W] or [N,1,ceil(H/k),ceil(W/k)]");
  if (!x_ref || holds_no_elements(shape_of(*x_ref)) || shape_of(*x_ref) != shape_of(x)) return true;
  const std::vector<int64_t> shape = shape_of(x), map_shape = map_in ? shape_of(*map_in) : std::vector<int64_t>{};
  char error[256] = "";
  int found;
  {
    py::gil_scoped_release release;
    found = deltaonnx_gate_finds_change(rule.c_str(), threshold, gate_block, gate_hard, shape.data(), x.data(),
                                        x_ref->data(), map_in ? map_in->data() : nullptr,
                                        map_in ? map_shape.data() : nullptr, error, sizeof(error));
  }
  if (found < 0) throw std::invalid_argument(error);
  return found == 1;
}

// Some element of every step-th index of x along `axis` (a frame's rows, chosen by session/frame_compare.py; -1:
// every element) is further than bound from x_ref, or NaN/Inf in either: the identical-frame test's sampled look, in
// one pass. numpy's ufuncs took ~80 us for it on the caches a run had just emptied.
bool sampled_rows_exceed(FloatArray x, FloatArray x_ref, float bound, int64_t axis, int64_t step) {
  if (step < 1) throw std::invalid_argument("step must be >= 1");
  const std::vector<int64_t> shape = shape_of(x);
  if (shape_of(x_ref) != shape) throw std::invalid_argument("x and x_ref must have one shape");
  if (axis < -1 || axis >= x.ndim()) throw std::invalid_argument("axis must be -1 or one of x's");
  int64_t outer = 1, rows = 1, inner = 1, row_step = 1;
  if (axis < 0) {
    for (int64_t d : shape) inner *= d;
  } else {
    for (int64_t d = 0; d < axis; ++d) outer *= shape[d];
    for (int64_t d = axis + 1; d < x.ndim(); ++d) inner *= shape[d];
    rows = shape[axis];
    row_step = step;
  }
  const float* a = x.data();
  const float* b = x_ref.data();
  py::gil_scoped_release release;
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t r = 0; r < rows; r += row_step) {
      const float* xa = a + (o * rows + r) * inner;
      const float* xb = b + (o * rows + r) * inner;
      bool exceeds = false;  // no exit inside a row: the loop vectorizes
      for (int64_t i = 0; i < inner; ++i) exceeds |= !(std::fabs(xa[i] - xb[i]) <= bound);  // NaN: not <=
      if (exceeds) return true;
    }
  return false;
}

// The kernel table's NCHWc unblock over a whole tensor: blocked [blocks, n, block] -> act([channels, n]) (the
// dense path's output; delta_conv/cpu/nchwc_dense_conv.cc runs it a run of pixels at a time).
FloatArray unblock_activate(const FloatArray& blocked, int64_t channels, const std::string& activation,
                            const std::vector<float>& activation_params, const std::optional<std::string>& simd) {
  if (blocked.ndim() != 3) throw std::invalid_argument("blocked must be [blocks, n, block]");
  const int64_t blocks = blocked.shape(0), n = blocked.shape(1), block = blocked.shape(2);
  if (channels < 0 || channels > blocks * block) throw std::invalid_argument("channels must lie in [0, blocks * block]");
  ConvActivation act;
  std::string error;
  if (!resolve_conv_activation(activation, activation_params, &act, &error)) throw std::invalid_argument(error);
  error = act.check_channels(channels);
  if (!error.empty()) throw std::invalid_argument(error);
  std::vector<ActivationParams> acts;
  for (int64_t c = 0; c < channels; ++c) acts.push_back(act.for_channel(c));
  const KernelTable& table = table_for(simd);
  FloatArray y({channels, n});
  for (int64_t cb = 0; cb * block < channels; ++cb)
    table.unblock_activate(blocked.data() + cb * n * block, block, std::min(block, channels - cb * block), n,
                           acts.data() + cb * block, y.mutable_data() + cb * block * n, n);
  return y;
}

}  // namespace

void bind_probe_marks(py::module_& m);  // probe_marks.cc
void bind_steady_frame_run(py::module_& m);  // steady_frame_run.cc

PYBIND11_MODULE(_native, m) {
  m.doc() = "deltaonnx engines and CPU facts (the same code the ORT kernels run)";
  m.def("cpu_features", [] {
    const CpuFeatures& f = cpu_features();
    py::dict d;
    d["avx2"] = f.avx2;
    d["avx512"] = f.avx512;
    d["avx512_vnni"] = f.avx512_vnni;
    d["neon"] = f.neon;
    return d;
  }, "The CPU features detected at load time.");
  m.def("channel_block", [] { return cpu_channel_block(); },
        "The channel block b of DeltaConv's layout \"blocked\" in the CPU library (DELTAONNX_CHANNEL_BLOCK forces it).");
  m.def("simd_level", [] { return std::string(kernels().name); },
        "The kernel variant in use: scalar, avx2, avx512 or neon (DELTAONNX_SIMD may force a lower one).");
  m.def("simd_variants", [] {
    std::vector<std::string> names;
    for (const char* n : {"scalar", "avx2", "avx512", "neon"})
      if (kernels_named(n)) names.emplace_back(n);
    return names;
  }, "The kernel variants built into this library and supported by this CPU.");
  m.def("delta_conv", &delta_conv, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("x_ref"), py::arg("y_prev"),
        py::arg("map_in") = py::none(), py::arg("strides") = std::vector<int64_t>{1, 1},
        py::arg("pads") = std::vector<int64_t>{0, 0, 0, 0}, py::arg("dilations") = std::vector<int64_t>{1, 1},
        py::arg("group") = 1, py::arg("auto_pad") = "NOTSET", py::arg("activation") = "",
        py::arg("activation_params") = std::vector<float>{}, py::arg("threshold") = 0.f,
        py::arg("dense_fraction") = 0.5f, py::arg("gate") = "pixel", py::arg("gate_block") = kDefaultGateBlock,
        py::arg("gate_hard") = -1.f, py::arg("y_out") = py::none(), py::arg("x_ref_out") = py::none(),
        py::arg("simd") = py::none(), py::arg("threads") = 1,
        "DeltaConv on numpy arrays: returns (Y, X_ref_next, map_out). Pass y_out=y_prev / x_ref_out=x_ref to run in place.");
  m.def("unblock_activate", &unblock_activate, py::arg("blocked"), py::arg("channels"), py::arg("activation") = "",
        py::arg("activation_params") = std::vector<float>{}, py::arg("simd") = py::none(),
        "The kernel table's NCHWc unblock: blocked [blocks, n, block] -> act([channels, n]).");
  m.def("delta_gate", &delta_gate, py::arg("x"), py::arg("x_ref") = py::none(), py::arg("map_in") = py::none(),
        py::arg("rule") = "block", py::arg("threshold") = 0.f, py::arg("gate_block") = kDefaultGateBlock, py::arg("gate_hard") = -1.f,
        py::arg("x_gated_out") = py::none(), py::arg("simd") = py::none(), py::arg("threads") = 1,
        "DeltaGate's engine (ops/delta_gate): returns (x_gated, map_out); x_gated_out = x_ref runs in place.");
  m.def("sampled_rows_exceed", &sampled_rows_exceed, py::arg("x"), py::arg("x_ref"), py::arg("bound"),
        py::arg("axis"), py::arg("step"),
        "Whether some element of every step-th index of x along axis (-1: every element) is further than bound "
        "from x_ref, or NaN/Inf: the identical-frame test's sampled look.");
  m.def("gate_finds_change", &gate_finds_change, py::arg("x"), py::arg("x_ref"), py::arg("map_in") = py::none(),
        py::arg("rule") = "block", py::arg("threshold") = 0.f, py::arg("gate_block") = kDefaultGateBlock,
        py::arg("gate_hard") = -1.f,
        "Whether DeltaGate's engine would mark any pixel of x against x_ref (the verdict alone, no copy).");
  py::class_<MarkRecorder>(m, "MarkRecorder",
                           "Records a stream's change-map statistics after each run: last[i] = the marked share of "
                           "slice i of buffer, sums[i] += last[i] (session/map_buffers.py).")
      .def(py::init<py::array_t<uint8_t, py::array::c_style>, py::array_t<int64_t, py::array::c_style>,
                    py::array_t<int64_t, py::array::c_style>, py::array_t<double, py::array::c_style>,
                    py::array_t<double, py::array::c_style>>(),
           // noconvert: a converted copy of last or sums would take the writes in their place
           py::arg("buffer").noconvert(), py::arg("starts").noconvert(), py::arg("sizes").noconvert(),
           py::arg("last").noconvert(), py::arg("sums").noconvert())
      .def("record", &MarkRecorder::record)
      .def("record_all_marked", &MarkRecorder::record_all_marked,
           "The record of a run whose every map marks all its pixels (a stateless run), without reading them.");
  m.def("weighted_sum",
        [](py::array_t<double, py::array::c_style> w, py::array_t<double, py::array::c_style> v) {
          if (w.ndim() != 1 || v.ndim() != 1 || w.size() != v.size())
            throw std::invalid_argument("weighted_sum: two 1-D arrays of one length");
          return weighted_sum(w.data(), v.data(), w.size());
        },
        py::arg("w").noconvert(), py::arg("v").noconvert(),
        "sum(w * v) in index order (the fallback's FLOP-weighted share, as the compiled prepared run sums it).");
  m.def("delta_pool", &delta_pool, py::arg("x"), py::arg("x_ref"), py::arg("y_prev"), py::arg("map_in") = py::none(),
        py::arg("kernel_shape"), py::arg("strides") = std::vector<int64_t>{1, 1},
        py::arg("pads") = std::vector<int64_t>{0, 0, 0, 0}, py::arg("dilations") = std::vector<int64_t>{1, 1},
        py::arg("auto_pad") = "NOTSET", py::arg("ceil_mode") = false, py::arg("threshold") = 0.f,
        py::arg("dense_fraction") = 0.5f, py::arg("gate") = "pixel", py::arg("gate_block") = kDefaultGateBlock,
        py::arg("gate_hard") = -1.f, py::arg("y_out") = py::none(), py::arg("x_ref_out") = py::none(),
        py::arg("simd") = py::none(), py::arg("threads") = 1,
        "DeltaPool (MaxPool) on numpy arrays: returns (Y, X_ref_next, map_out).");
  bind_probe_marks(m);
  bind_steady_frame_run(m);
#if defined(DELTAONNX_CUDA_HOST_BINDINGS)
  bind_cuda_host(m);
#endif
}

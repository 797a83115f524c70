// deltaonnx._native.cuda_host: the CUDA kernels of libdeltaonnx_ops_cuda run on the host (host_emulation.h),
// one function per kernel, so tests compare the device logic with the numpy reference without a GPU.
// Plain C++: no CUDA header is included. Arrays are C-contiguous NCHW float32, maps uint8, lists int32.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/conv_activation.h"
#include "common/window_spec.h"
#include "cuda_common/host/host_emulation.h"
#include "delta_gate/gate_engine.h"

namespace py = pybind11;

namespace {

using namespace deltaonnx;
using namespace deltaonnx::cuda;

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using ByteArray = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;
using IntArray = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

std::vector<int64_t> dims(const py::array& a) { return std::vector<int64_t>(a.shape(), a.shape() + a.ndim()); }

void require(bool ok, const std::string& what) {
  if (!ok) throw std::invalid_argument(what);
}

void require_4d(const py::array& a, const char* name) {
  require(a.ndim() == 4, std::string(name) + " must be 4-D NCHW");
}

FloatArray copy_of(const FloatArray& a) {
  FloatArray out(dims(a));
  if (a.size() > 0) std::memcpy(out.mutable_data(), a.data(), static_cast<size_t>(a.size()) * sizeof(float));
  return out;
}

ByteArray copy_of(const ByteArray& a) {
  ByteArray out(dims(a));
  if (a.size() > 0) std::memcpy(out.mutable_data(), a.data(), static_cast<size_t>(a.size()));
  return out;
}

// The window attributes of docs/ops.md over an input of in_h x in_w, resolved as the ops resolve them.
struct Window {
  Axis y, x;
};

Window make_window(int64_t in_h, int64_t in_w, const std::vector<int64_t>& kernel, const std::vector<int64_t>& strides,
                   const std::vector<int64_t>& pads, const std::vector<int64_t>& dilations, const std::string& auto_pad,
                   bool ceil_mode) {
  WindowSpec spec;
  const std::string error = window_from_lists(kernel, strides, pads, dilations, auto_pad, ceil_mode, &spec);
  require(error.empty(), error);
  const Window2D resolved = spec.resolve(in_h, in_w);
  Window w;
  w.y = resolved.y;
  w.x = resolved.x;
  return w;
}

// A pixel list as the compute kernels read it; all_dense stands for "no state" (every item whole).
PixelList make_list(const IntArray& pixel_list, const IntArray& counts, int64_t batch, int64_t total,
                    float dense_fraction, bool all_dense) {
  PixelList list;
  list.total = total;
  list.dense_fraction = dense_fraction;
  if (all_dense) return list;
  require(dims(pixel_list) == std::vector<int64_t>{batch, total}, "pixel_list must be [N, Ho*Wo]");
  require(dims(counts) == std::vector<int64_t>{batch}, "counts must be [N]");
  for (int64_t n = 0; n < batch; ++n) {
    require(counts.data()[n] >= 0 && counts.data()[n] <= total, "counts out of range");
    for (int32_t i = 0; i < counts.data()[n]; ++i) {
      const int32_t q = pixel_list.data()[n * total + i];
      require(q >= 0 && q < total, "pixel_list entry out of range");
    }
  }
  list.pixels = pixel_list.data();
  list.counts = counts.data();
  return list;
}

ChangeStep make_change_step(const FloatArray& x, const FloatArray& x_ref, float tau) {
  require_4d(x, "x");
  require(dims(x_ref) == dims(x), "x_ref must have x's shape (the no-state case never launches the kernel)");
  ChangeStep s;
  s.x = x.data();
  s.x_ref = x_ref.data();
  s.batch = x.shape(0);
  s.channels = x.shape(1);
  s.plane = x.shape(2) * x.shape(3);
  s.tau = tau;
  return s;
}

const uint8_t* map_pointer(const py::object& map_in, const FloatArray& x, ByteArray* keep_alive) {
  if (map_in.is_none()) return nullptr;
  *keep_alive = ByteArray::ensure(map_in);
  require(keep_alive->ndim() == 4 && keep_alive->shape(0) == x.shape(0) && keep_alive->shape(1) == 1 &&
              keep_alive->shape(2) == x.shape(2) && keep_alive->shape(3) == x.shape(3),
          "map_in must be [N,1,H,W]");
  return keep_alive->data();
}

py::tuple change_step(const FloatArray& x, const FloatArray& x_ref, float tau, const py::object& map_in, bool in_place) {
  ChangeStep s = make_change_step(x, x_ref, tau);
  ByteArray map_keep;
  s.map_in = map_pointer(map_in, x, &map_keep);
  // In place: X_ref_next is X_ref's buffer, as when the state is bound to both; else a poisoned new buffer,
  // so any element the kernel forgot to write shows up as NaN.
  FloatArray x_ref_next = in_place ? copy_of(x_ref) : FloatArray(dims(x));
  if (in_place) {
    s.x_ref = x_ref_next.data();
  } else if (x_ref_next.size() > 0) {
    std::fill(x_ref_next.mutable_data(), x_ref_next.mutable_data() + x_ref_next.size(), NAN);
  }
  s.x_ref_next = x_ref_next.mutable_data();
  ByteArray changed(std::vector<int64_t>{x.shape(0), 1, x.shape(2), x.shape(3)});
  s.changed = changed.mutable_data();
  host::run_change_step(s);
  return py::make_tuple(changed, x_ref_next);
}

ByteArray detect_changes(const FloatArray& x, const FloatArray& x_ref, float tau, const py::object& map_in) {
  ChangeStep s = make_change_step(x, x_ref, tau);
  ByteArray map_keep;
  s.map_in = map_pointer(map_in, x, &map_keep);
  ByteArray changed(std::vector<int64_t>{x.shape(0), 1, x.shape(2), x.shape(3)});
  for (int64_t i = 0; i < s.threads(); ++i) changed.mutable_data()[i] = change_step_detect(s, i) ? 1 : 0;
  return changed;
}

FloatArray update_reference(const FloatArray& x, const FloatArray& x_ref, const ByteArray& changed, bool in_place) {
  ChangeStep s = make_change_step(x, x_ref, 0.f);
  require(changed.size() == s.threads(), "changed must be [N,1,H,W]");
  FloatArray x_ref_next = in_place ? copy_of(x_ref) : FloatArray(dims(x));
  if (in_place) {
    s.x_ref = x_ref_next.data();
  } else if (x_ref_next.size() > 0) {
    std::fill(x_ref_next.mutable_data(), x_ref_next.mutable_data() + x_ref_next.size(), NAN);
  }
  s.x_ref_next = x_ref_next.mutable_data();
  for (int64_t i = 0; i < s.threads(); ++i) change_step_update(s, i, changed.data()[i] != 0);
  return x_ref_next;
}

py::tuple recompute_step(const ByteArray& changed, const std::vector<int64_t>& kernel_shape,
                         const std::vector<int64_t>& strides, const std::vector<int64_t>& pads,
                         const std::vector<int64_t>& dilations, const std::string& auto_pad, bool ceil_mode) {
  require(changed.ndim() == 4 && changed.shape(1) == 1, "changed must be [N,1,H,W]");
  const Window w =
      make_window(changed.shape(2), changed.shape(3), kernel_shape, strides, pads, dilations, auto_pad, ceil_mode);
  const int64_t n = changed.shape(0), total = w.y.out * w.x.out;
  ByteArray map_out(std::vector<int64_t>{n, 1, w.y.out, w.x.out});
  IntArray counts(std::vector<int64_t>{n});
  IntArray pixel_list(std::vector<int64_t>{n, total});
  std::fill(counts.mutable_data(), counts.mutable_data() + n, 0);  // the launcher's cudaMemsetAsync
  std::fill(pixel_list.mutable_data(), pixel_list.mutable_data() + n * total, -1);
  RecomputeStep s;
  s.changed = changed.data();
  s.map_out = map_out.mutable_data();
  s.counts = counts.mutable_data();
  s.pixel_list = pixel_list.mutable_data();
  s.batch = n;
  s.y = w.y;
  s.x = w.x;
  host::run_recompute_step(s);
  return py::make_tuple(map_out, counts, pixel_list);
}

ByteArray densify_step(const ByteArray& map_out, const IntArray& counts, float dense_fraction) {
  require(map_out.ndim() == 4 && map_out.shape(1) == 1, "map_out must be [N,1,Ho,Wo]");
  const int64_t n = map_out.shape(0), total = map_out.shape(2) * map_out.shape(3);
  require(dims(counts) == std::vector<int64_t>{n}, "counts must be [N]");
  ByteArray out = copy_of(map_out);
  PixelList list;
  IntArray placeholder(std::vector<int64_t>{1});  // non-null: "has state"; entries are not read by this step
  list.pixels = placeholder.data();
  list.counts = counts.data();
  list.total = total;
  list.dense_fraction = dense_fraction;
  host::run_densify_step(list, out.mutable_data(), n);
  return out;
}

FloatArray keep_step(const FloatArray& y_prev, const FloatArray& y, const ByteArray& map_out) {
  require_4d(y, "y");
  require(dims(y_prev) == dims(y), "y_prev must have y's shape");
  require(dims(map_out) == (std::vector<int64_t>{y.shape(0), 1, y.shape(2), y.shape(3)}), "map_out must be [N,1,Ho,Wo]");
  FloatArray out = copy_of(y);
  KeepStep s;
  s.y_prev = y_prev.data();
  s.y = out.mutable_data();
  s.map_out = map_out.data();
  s.batch = y.shape(0);
  s.channels = y.shape(1);
  s.plane = y.shape(2) * y.shape(3);
  host::run_keep_step(s);
  return out;
}

struct ConvSetup {
  ConvShape shape;
  ConvActivation activation;
};

ConvSetup make_conv(const FloatArray& x, const FloatArray& w, const py::object& b, const std::vector<int64_t>& strides,
                    const std::vector<int64_t>& pads, const std::vector<int64_t>& dilations, const std::string& auto_pad,
                    int64_t group, const std::string& activation, const std::vector<float>& activation_params) {
  require_4d(x, "x");
  require_4d(w, "w");
  require(group >= 1 && w.shape(0) % group == 0 && w.shape(1) * group == x.shape(1), "W does not fit X with this group");
  ConvSetup s;
  const Window win = make_window(x.shape(2), x.shape(3), {w.shape(2), w.shape(3)}, strides, pads, dilations, auto_pad, false);
  s.shape.channels = x.shape(1);
  s.shape.out_channels = w.shape(0);
  s.shape.group = group;
  s.shape.y = win.y;
  s.shape.x = win.x;
  std::string error;
  require(resolve_conv_activation(activation, activation_params, &s.activation, &error), error);
  const size_t slopes = s.activation.slopes.size();
  require(slopes <= 1 || static_cast<int64_t>(slopes) == w.shape(0), "PRelu needs 1 or M slopes");
  if (!b.is_none()) {
    require(py::array(b).size() == w.shape(0), "b must have M values");
  }
  return s;
}

// The per-output-element body: conv_accumulate + conv_epilogue at every output pixel (the dense definition
// the GEMM must equal bit for bit).
FloatArray conv_direct(const FloatArray& x, const FloatArray& w, const py::object& b, const std::vector<int64_t>& strides,
                       const std::vector<int64_t>& pads, const std::vector<int64_t>& dilations,
                       const std::string& auto_pad, int64_t group, const std::string& activation,
                       const std::vector<float>& activation_params) {
  const ConvSetup c = make_conv(x, w, b, strides, pads, dilations, auto_pad, group, activation, activation_params);
  FloatArray bias_keep = b.is_none() ? FloatArray() : FloatArray::ensure(b);
  const float* bias = b.is_none() ? nullptr : bias_keep.data();
  const int64_t n_items = x.shape(0), m_count = c.shape.out_channels;
  FloatArray y(std::vector<int64_t>{n_items, m_count, c.shape.y.out, c.shape.x.out});
  const int64_t plane_in = x.shape(1) * x.shape(2) * x.shape(3);
  float* out = y.mutable_data();
  for (int64_t n = 0; n < n_items; ++n) {
    for (int64_t m = 0; m < m_count; ++m) {
      const ActivationParams act = activation_for_channel(
          c.activation.params, c.activation.slopes.data(), static_cast<int64_t>(c.activation.slopes.size()), m);
      for (int64_t oy = 0; oy < c.shape.y.out; ++oy) {
        for (int64_t ox = 0; ox < c.shape.x.out; ++ox) {
          const float sum = conv_accumulate(x.data() + n * plane_in, w.data(), c.shape, m, oy, ox);
          *out++ = conv_epilogue(sum, bias, m, act);
        }
      }
    }
    if (is_channel_activation(c.activation.params.kind)) {  // what channel_activation_thread does per pixel
      const int64_t plane = c.shape.y.out * c.shape.x.out;
      float* item = y.mutable_data() + n * m_count * plane;
      const int64_t group = softmax_group_of(c.activation.params, m_count);
      for (int64_t q = 0; q < plane; ++q) softmax_channel_groups(item + q, plane, m_count, group);
    }
  }
  return y;
}

FloatArray gather_gemm(const FloatArray& x, const FloatArray& w, const py::object& b, const IntArray& pixel_list,
                       const IntArray& counts, const FloatArray& y_init, const std::vector<int64_t>& strides,
                       const std::vector<int64_t>& pads, const std::vector<int64_t>& dilations,
                       const std::string& auto_pad, int64_t group, const std::string& activation,
                       const std::vector<float>& activation_params, float dense_fraction, bool all_dense,
                       const std::string& tile) {
  const ConvSetup c = make_conv(x, w, b, strides, pads, dilations, auto_pad, group, activation, activation_params);
  const int64_t n = x.shape(0), total = c.shape.y.out * c.shape.x.out;
  require(dims(y_init) == (std::vector<int64_t>{n, c.shape.out_channels, c.shape.y.out, c.shape.x.out}),
          "y_init must have Y's shape");
  require(tile == "auto" || tile == "wide" || tile == "narrow", "tile must be auto, wide or narrow");
  FloatArray bias_keep = b.is_none() ? FloatArray() : FloatArray::ensure(b);
  FloatArray y = copy_of(y_init);
  GatherGemm g;
  g.x = x.data();
  g.weights = w.data();
  g.bias = b.is_none() ? nullptr : bias_keep.data();
  g.y = y.mutable_data();
  g.list = make_list(pixel_list, counts, n, total, dense_fraction, all_dense);
  g.shape = c.shape;
  g.batch = n;
  g.act = c.activation.params;
  g.slopes = c.activation.slopes.empty() ? nullptr : c.activation.slopes.data();
  g.num_slopes = static_cast<int64_t>(c.activation.slopes.size());
  require(gather_gemm_grid_fits(g), "grid too large");
  host::run_gather_gemm(g, tile == "wide" ? 1 : tile == "narrow" ? 2 : 0);
  return y;
}

FloatArray max_pool(const FloatArray& x, const IntArray& pixel_list, const IntArray& counts, const FloatArray& y_init,
                    const std::vector<int64_t>& kernel_shape, const std::vector<int64_t>& strides,
                    const std::vector<int64_t>& pads, const std::vector<int64_t>& dilations,
                    const std::string& auto_pad, bool ceil_mode, float dense_fraction, bool all_dense) {
  require_4d(x, "x");
  const Window win = make_window(x.shape(2), x.shape(3), kernel_shape, strides, pads, dilations, auto_pad, ceil_mode);
  const int64_t n = x.shape(0), total = win.y.out * win.x.out;
  require(dims(y_init) == (std::vector<int64_t>{n, x.shape(1), win.y.out, win.x.out}), "y_init must have Y's shape");
  FloatArray y = copy_of(y_init);
  MaxPoolStep s;
  s.x = x.data();
  s.y = y.mutable_data();
  s.list = make_list(pixel_list, counts, n, total, dense_fraction, all_dense);
  s.batch = n;
  s.channels = x.shape(1);
  s.y_axis = win.y;
  s.x_axis = win.x;
  host::run_max_pool(s);
  return y;
}

ByteArray map_union(const std::vector<ByteArray>& maps) {
  require(!maps.empty(), "map_union needs at least one map");
  std::vector<const uint8_t*> pointers;
  for (const ByteArray& m : maps) {
    require(dims(m) == dims(maps[0]), "maps differ in shape");
    pointers.push_back(m.data());
  }
  ByteArray out(dims(maps[0]));
  const std::vector<uint8_t> per_item(pointers.size(), 0);  // maps of one shape (the op's per-item maps: emulated op tests)
  host::run_map_union(pointers.data(), per_item.data(), static_cast<int64_t>(pointers.size()), out.mutable_data(),
                      out.size(), out.size());
  return out;
}

// DeltaGate's kernels with state (the op copies X without it): (x_gated, map_out).
py::tuple gate(const FloatArray& x, const FloatArray& x_ref, const std::optional<ByteArray>& map_in,
               const std::string& rule, float threshold, int64_t gate_block, float gate_hard, bool in_place) {
  require_4d(x, "x");
  require(dims(x_ref) == dims(x), "x_ref must have x's shape");
  GateSpec spec;
  const std::string error = GateSpec::make(rule, threshold, gate_block, gate_hard, &spec);
  require(error.empty(), error);
  GateStep s = make_gate_step(spec, x.shape(0), x.shape(1), x.shape(2), x.shape(3));
  if (map_in) {
    require(map_in->ndim() == 4 && map_in->shape(0) == s.batch && map_in->shape(1) == 1, "map_in must be [N,1,h,w]");
    const std::string e = check_gate_map(spec, s.height, s.width, map_in->shape(2), map_in->shape(3), &s.marks_per_block);
    require(e.empty(), e);
    s.marks = map_in->data();
  }
  FloatArray gated = in_place ? copy_of(x_ref) : FloatArray(dims(x));
  ByteArray map_out(std::vector<int64_t>{s.batch, 1, s.height, s.width});
  std::vector<uint8_t> verdicts(s.verdict_threads());
  s.x = x.data();
  s.x_ref = in_place ? gated.data() : x_ref.data();
  s.x_gated = gated.mutable_data();
  s.map_out = map_out.mutable_data();
  s.verdicts = verdicts.data();
  host::run_gate(s);
  return py::make_tuple(gated, map_out);
}

py::dict window(const std::vector<int64_t>& in_hw, const std::vector<int64_t>& kernel_shape,
                const std::vector<int64_t>& strides, const std::vector<int64_t>& pads,
                const std::vector<int64_t>& dilations, const std::string& auto_pad, bool ceil_mode) {
  require(in_hw.size() == 2, "in_hw needs 2 values");
  const Window w = make_window(in_hw[0], in_hw[1], kernel_shape, strides, pads, dilations, auto_pad, ceil_mode);
  py::dict d;
  d["out_hw"] = py::make_tuple(w.y.out, w.x.out);
  d["pads"] = py::make_tuple(w.y.pad_begin, w.x.pad_begin, w.y.pad_end, w.x.pad_end);
  return d;
}

}  // namespace

void bind_cuda_host(py::module_& parent) {
  py::module_ m = parent.def_submodule(
      "cuda_host", "The CUDA kernels of libdeltaonnx_ops_cuda emulated on the host: same per-thread code, plain loops.");
  const std::vector<int64_t> one{1, 1}, zero4{0, 0, 0, 0};
  m.def("change_step", &change_step, py::arg("x"), py::arg("x_ref"), py::arg("tau"), py::arg("map_in") = py::none(),
        py::arg("in_place") = false,
        "The change kernel (rules 2 and 3): (changed [N,1,H,W] uint8, x_ref_next). in_place runs it with "
        "X_ref_next bound to X_ref's buffer.");
  m.def("detect_changes", &detect_changes, py::arg("x"), py::arg("x_ref"), py::arg("tau"),
        py::arg("map_in") = py::none(), "Rule 2 of the change kernel alone: changed [N,1,H,W] uint8.");
  m.def("update_reference", &update_reference, py::arg("x"), py::arg("x_ref"), py::arg("changed"),
        py::arg("in_place") = false, "Rule 3 of the change kernel alone, for a given change mask.");
  m.def("recompute_step", &recompute_step, py::arg("changed"), py::arg("kernel_shape"), py::arg("strides") = one,
        py::arg("pads") = zero4, py::arg("dilations") = one, py::arg("auto_pad") = "NOTSET",
        py::arg("ceil_mode") = false,
        "Rule 4 and the pixel list compaction: (map_out [N,1,Ho,Wo], counts [N], pixel_list [N,Ho*Wo] with "
        "-1 past counts[n]).");
  m.def("densify_step", &densify_step, py::arg("map_out"), py::arg("counts"), py::arg("dense_fraction"),
        "The dense rule on map_out.");
  m.def("keep_step", &keep_step, py::arg("y_prev"), py::arg("y"), py::arg("map_out"),
        "Y = Y_prev where map_out is 0 (the run's Y not bound to Y_prev).");
  m.def("conv_direct", &conv_direct, py::arg("x"), py::arg("w"), py::arg("b") = py::none(), py::arg("strides") = one,
        py::arg("pads") = zero4, py::arg("dilations") = one, py::arg("auto_pad") = "NOTSET", py::arg("group") = 1,
        py::arg("activation") = "", py::arg("activation_params") = std::vector<float>{},
        "Every output element by the per-element body (conv_accumulate + fused bias/activation; a channel "
        "activation then per pixel).");
  m.def("gather_gemm", &gather_gemm, py::arg("x"), py::arg("w"), py::arg("b"), py::arg("pixel_list"),
        py::arg("counts"), py::arg("y_init"), py::arg("strides") = one, py::arg("pads") = zero4,
        py::arg("dilations") = one, py::arg("auto_pad") = "NOTSET", py::arg("group") = 1, py::arg("activation") = "",
        py::arg("activation_params") = std::vector<float>{}, py::arg("dense_fraction") = 0.5f,
        py::arg("all_dense") = false, py::arg("tile") = "auto",
        "DeltaConv's gather-GEMM kernel over the listed pixels (blocks, shared-memory phases and barriers "
        "emulated); y_init elsewhere.");
  m.def("max_pool", &max_pool, py::arg("x"), py::arg("pixel_list"), py::arg("counts"), py::arg("y_init"),
        py::arg("kernel_shape"), py::arg("strides") = one, py::arg("pads") = zero4, py::arg("dilations") = one,
        py::arg("auto_pad") = "NOTSET", py::arg("ceil_mode") = false, py::arg("dense_fraction") = 0.5f,
        py::arg("all_dense") = false, "DeltaPool's kernel over the listed pixels; y_init elsewhere.");
  m.def("map_union", &map_union, py::arg("maps"), "DeltaMapUnion's kernel (launches of 8 inputs).");
  m.def("gate", &gate, py::arg("x"), py::arg("x_ref"), py::arg("map_in") = py::none(), py::arg("rule") = "block",
        py::arg("threshold") = 0.f, py::arg("gate_block") = kDefaultGateBlock, py::arg("gate_hard") = -1.f,
        py::arg("in_place") = false, "DeltaGate's verdict and apply kernels: (x_gated, map_out).");
  m.def("window", &window, py::arg("in_hw"), py::arg("kernel_shape"), py::arg("strides") = one,
        py::arg("pads") = zero4, py::arg("dilations") = one, py::arg("auto_pad") = "NOTSET",
        py::arg("ceil_mode") = false, "The window as the CUDA ops resolve it: out_hw and explicit pads.");
}

#include "ort_util.h"

namespace deltaonnx {

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < shape.size(); ++i) s << (i ? "," : "") << shape[i];
  s << ']';
  return s.str();
}

WindowSpec read_window(const Ort::ConstKernelInfo& info, const std::string& node, std::vector<int64_t> kernel_fallback) {
  auto fail = [&](const std::string& attr, const std::string& why) {
    throw UserError("node '" + node + "': attribute '" + attr + "' " + why);
  };
  WindowSpec w;
  std::vector<int64_t> k = attributes_or<int64_t>(info, "kernel_shape", kernel_fallback);
  if (k.size() != 2) fail("kernel_shape", "must have 2 values (only 2-D windows are supported), got " + shape_string(k));
  w.kernel_h = k[0];
  w.kernel_w = k[1];
  std::vector<int64_t> s = attributes_or<int64_t>(info, "strides", {1, 1});
  if (s.size() != 2) fail("strides", "must have 2 values, got " + shape_string(s));
  w.stride_h = s[0];
  w.stride_w = s[1];
  std::vector<int64_t> d = attributes_or<int64_t>(info, "dilations", {1, 1});
  if (d.size() != 2) fail("dilations", "must have 2 values, got " + shape_string(d));
  w.dilation_h = d[0];
  w.dilation_w = d[1];
  std::vector<int64_t> p = attributes_or<int64_t>(info, "pads", {0, 0, 0, 0});
  if (p.size() != 4) fail("pads", "must have 4 values [top, left, bottom, right], got " + shape_string(p));
  for (int i = 0; i < 4; ++i) w.pads[i] = p[i];
  std::string ap = attribute_or<std::string>(info, "auto_pad", "NOTSET");
  if (!parse_auto_pad(ap, &w.auto_pad)) fail("auto_pad", "has the unknown value '" + ap + "'");
  std::string e = w.validate();
  if (!e.empty()) throw UserError("node '" + node + "': " + e);
  return w;
}

StateInputs read_state_inputs(const Ort::KernelContext& ctx, const std::string& node, size_t x_ref_index,
                              size_t y_prev_index, size_t map_index, const std::vector<int64_t>& xs,
                              const std::vector<int64_t>& ys, float threshold) {
  auto err = [&](const std::string& what) { throw UserError("node '" + node + "': " + what); };
  StateInputs s;
  if (has_input(ctx, map_index)) {
    Ort::ConstValue m = ctx.GetInput(map_index);
    const std::vector<int64_t> ms = m.GetTensorTypeAndShapeInfo().GetShape();
    const std::vector<int64_t> want{xs[0], 1, xs[2], xs[3]};
    if (ms != want) err("change map input has shape " + shape_string(ms) + ", expected " + shape_string(want));
    s.map_in = m.GetTensorData<uint8_t>();
  }
  if (!has_input(ctx, y_prev_index)) err("the state input Y_prev is required (feed an empty tensor on the first frame)");
  Ort::ConstValue y_prev = ctx.GetInput(y_prev_index);
  const std::vector<int64_t> ps = y_prev.GetTensorTypeAndShapeInfo().GetShape();
  s.reference_dropped = !has_input(ctx, x_ref_index);
  if (s.reference_dropped) {
    if (s.map_in == nullptr || threshold != 0.f)
      err("without an X_ref input the op needs a change map input and threshold 0");
    // Rule 1 from Y_prev alone: empty, or another shape (new resolution), means no state.
    s.has_state = !is_empty_shape(ps) && ps == ys;
  } else {
    Ort::ConstValue x_ref = ctx.GetInput(x_ref_index);
    const std::vector<int64_t> rs = x_ref.GetTensorTypeAndShapeInfo().GetShape();
    s.has_state = !is_empty_shape(rs) && rs == xs;  // rule 1: empty, or another resolution
    if (s.has_state && ps != ys)
      err("state Y_prev has shape " + shape_string(ps) + " but this run's output is " + shape_string(ys) +
          " (state from another model or stream?)");
    if (s.has_state) s.x_ref = x_ref.GetTensorData<float>();
  }
  if (s.has_state) s.y_prev = y_prev.GetTensorData<float>();
  return s;
}

void fill_delta_run(DeltaRun& run, const std::vector<int64_t>& xs, const Ort::ConstValue& x, const StateInputs& st,
                    Ort::UnownedValue& y, Ort::UnownedValue& x_ref_next, Ort::UnownedValue& map_out) {
  run.batch = xs[0];
  run.channels = xs[1];
  run.height = xs[2];
  run.width = xs[3];
  run.has_state = st.has_state;
  run.reference_dropped = st.reference_dropped;
  run.x = x.GetTensorData<float>();
  run.x_ref = st.x_ref;
  run.y_prev = st.y_prev;
  run.map_in = st.map_in;
  run.y = y.GetTensorMutableData<float>();
  run.x_ref_next = st.reference_dropped ? nullptr : x_ref_next.GetTensorMutableData<float>();
  run.map_out = map_out.GetTensorMutableData<uint8_t>();
}

ParallelFor ort_parallel_for(const Ort::KernelContext& ctx) {
  return [&ctx](int64_t count, const std::function<void(int64_t)>& body) {
    if (count <= 0) return;
    if (count == 1) {
      body(0);
      return;
    }
    auto trampoline = [](void* user, size_t i) {
      (*static_cast<const std::function<void(int64_t)>*>(user))(static_cast<int64_t>(i));
    };
    ctx.ParallelFor(trampoline, static_cast<size_t>(count), 0,
                    const_cast<void*>(static_cast<const void*>(&body)));
  };
}

OrtStatusPtr guarded(const char* op, const std::string& node, const std::function<void()>& f) {
  try {
    f();
    return nullptr;
  } catch (const UserError& e) {
    return Ort::GetApi().CreateStatus(ORT_INVALID_ARGUMENT, (std::string(op) + ": " + e.what()).c_str());
  } catch (const Ort::Exception& e) {
    return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(),
                                      (std::string(op) + " node '" + node + "': " + e.what()).c_str());
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, (std::string(op) + " node '" + node + "': " + e.what()).c_str());
  } catch (...) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, (std::string(op) + " node '" + node + "': unknown error").c_str());
  }
}

}  // namespace deltaonnx

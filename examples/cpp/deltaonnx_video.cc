// deltaonnx_video: runs a deltaonnx-converted model over a sequence of frames with ONNX Runtime's C++ API,
// carrying the Delta ops' state in place between frames, and prints each frame's latency, the fraction of
// pixels the Delta ops recomputed, and a checksum of the model's outputs.
//
//   deltaonnx_video --model model.delta.onnx --ops libdeltaonnx_ops.so --raw frames.f32 [options]
//   deltaonnx_video --model model.delta.onnx --ops libdeltaonnx_ops.so --video clip.mp4 [options]
//
// The parts to copy into an application: register the op library (main), read the state layout
// (state_layout.cc), run frames with the state bound in place (delta_stream.cc).
#include <onnxruntime_cxx_api.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "delta_stream.h"
#include "frame_source.h"
#include "gate_check.h"
#include "state_layout.h"

namespace {

using namespace deltaonnx_example;

const char* const kUsage =
    "usage: deltaonnx_video --model MODEL --ops OP_LIBRARY (--raw FILE | --video SOURCE) [options]\n"
    "  --model MODEL      a model converted by deltaonnx (python -m deltaonnx convert)\n"
    "  --ops OP_LIBRARY   the deltaonnx CPU op library (libdeltaonnx_ops.so)\n"
    "  --raw FILE         frames as raw little-endian float32 tensors of the input's shape, back to back\n"
    "  --video SOURCE     a video file, image pattern (dir/%04d.png) or camera index, read with OpenCV\n"
    "  --shape N,C,H,W    the input shape, where the model leaves dimensions symbolic\n"
    "  --frames N         stop after N frames\n"
    "  --threads N        ORT intra-op threads (default: ORT's choice, one per core)\n"
    "  --dump FILE        write every frame's model outputs (graph order, raw tensor bytes) to FILE\n"
    "  --change-map FILE  where frames may change, fed to the block gate on every frame: raw uint8, one byte per\n"
    "                     pixel of the gate's N x H x W, or one per gate block (0 = never changes there)\n"
    "  --exclude X,Y,W,H  a region the gate never looks at (a timestamp overlay), in the gate's pixels; repeatable\n"
    "  --no-skip          run every frame (by default a frame the gate would not pass is not run)\n"
    "  --describe         print the model's inputs, outputs and state, then exit\n"
    "  --quiet            print only the summary\n";

struct Options {
  std::string model, ops, raw, video, dump, change_map;
  std::vector<int64_t> shape;
  std::vector<std::vector<int64_t>> exclude;  // X, Y, W, H
  long frames = -1;
  int threads = 0;
  bool describe = false, quiet = false, skip = true;
};

// "a,b,c": positive integers (zero too with allow_zero).
std::vector<int64_t> parse_ints(const std::string& option, const std::string& text, bool allow_zero = false) {
  std::vector<int64_t> values;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = std::min(text.find(',', start), text.size());
    const std::string item = text.substr(start, comma - start);
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || v < (allow_zero ? 0 : 1)) throw std::invalid_argument("bad " + option + " " + text);
    values.push_back(v);
    start = comma + 1;
  }
  return values;
}

Options parse_options(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--model") o.model = value();
    else if (arg == "--ops") o.ops = value();
    else if (arg == "--raw") o.raw = value();
    else if (arg == "--video") o.video = value();
    else if (arg == "--dump") o.dump = value();
    else if (arg == "--shape") o.shape = parse_ints(arg, value());
    else if (arg == "--change-map") o.change_map = value();
    else if (arg == "--exclude") {
      o.exclude.push_back(parse_ints(arg, value(), true));
      if (o.exclude.back().size() != 4) throw std::invalid_argument("--exclude takes X,Y,W,H");
    }
    else if (arg == "--no-skip") o.skip = false;
    else if (arg == "--frames") o.frames = std::stol(value());
    else if (arg == "--threads") o.threads = std::stoi(value());
    else if (arg == "--describe") o.describe = true;
    else if (arg == "--quiet") o.quiet = true;
    else if (arg == "--help" || arg == "-h") { std::fputs(kUsage, stdout); std::exit(0); }
    else throw std::invalid_argument("unknown option " + arg);
  }
  if (o.model.empty() || o.ops.empty()) throw std::invalid_argument("--model and --ops are required");
  if (!o.describe && o.raw.empty() == o.video.empty()) throw std::invalid_argument("give one of --raw and --video");
  if (!o.change_map.empty() && !o.exclude.empty()) throw std::invalid_argument("give --change-map or --exclude, not both");
  return o;
}

// The change map of --change-map or --exclude for the model's block gate: uint8 [N,1,H,W] at the gate's
// resolution (its X is the input, or the input transposed to NCHW), or [N,1,ceil(H/k),ceil(W/k)] from a file
// of that size. `cells` holds the map's bytes.
std::vector<int64_t> change_map_for(const Options& options, const StateLayout& layout, const std::vector<int64_t>& input,
                                    std::vector<uint8_t>& cells) {
  if (layout.gates.size() != 1)
    throw std::runtime_error("--change-map and --exclude need a model with one block gate; this one has " +
                             std::to_string(layout.gates.size()) + " (convert with --gate block and a threshold above 0)");
  const BlockGate& gate = layout.gates[0];
  std::vector<int64_t> x = input;
  if (!gate.perm.empty()) {
    if (gate.perm.size() != input.size()) throw std::runtime_error("the gate's perm does not fit the input's rank");
    for (size_t d = 0; d < x.size(); ++d) x[d] = input[static_cast<size_t>(gate.perm[d])];
  }
  if (x.size() != 4) throw std::runtime_error("the gate's frame is not 4-D");
  const int64_t n = x[0], h = x[2], w = x[3], k = gate.gate_block;
  const int64_t ch = (h + k - 1) / k, cw = (w + k - 1) / k;
  if (!options.change_map.empty()) {
    std::ifstream file(options.change_map, std::ios::binary);
    if (!file) throw std::runtime_error("cannot read " + options.change_map);
    cells.assign(std::istreambuf_iterator<char>(file), std::istreambuf_iterator<char>());
    const int64_t size = static_cast<int64_t>(cells.size());
    if (size == n * h * w) return {n, 1, h, w};
    if (size == n * ch * cw) return {n, 1, ch, cw};
    throw std::runtime_error(options.change_map + " holds " + std::to_string(size) + " bytes: a change map is " +
                             std::to_string(n * h * w) + " (" + std::to_string(n) + "x" + std::to_string(h) + "x" +
                             std::to_string(w) + ") or, one per " + std::to_string(k) + "x" + std::to_string(k) +
                             " block, " + std::to_string(n * ch * cw) + " bytes");
  }
  cells.assign(static_cast<size_t>(n * h * w), 1);
  for (const std::vector<int64_t>& r : options.exclude) {  // X, Y, W, H
    if (r[0] >= w || r[1] >= h || r[2] == 0 || r[3] == 0)
      throw std::runtime_error("--exclude " + std::to_string(r[0]) + "," + std::to_string(r[1]) + "," +
                               std::to_string(r[2]) + "," + std::to_string(r[3]) + " lies outside the " +
                               std::to_string(w) + "x" + std::to_string(h) + " frame");
    for (int64_t item = 0; item < n; ++item)
      for (int64_t y = r[1]; y < std::min(h, r[1] + r[3]); ++y)
        std::fill_n(cells.begin() + (item * h + y) * w + r[0], std::min(w, r[0] + r[2]) - r[0], uint8_t{0});
  }
  return {n, 1, h, w};
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + (shape[i] < 0 ? std::string("?") : std::to_string(shape[i]));
  return s + "]";
}

size_t element_size(ONNXTensorElementDataType type) {
  switch (type) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32: return 4;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64: return 8;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16: case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16: return 2;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: return 1;
    default: throw std::runtime_error("unsupported output element type " + std::to_string(type));
  }
}

void describe(const Ort::Session& session, const StateLayout& layout) {
  std::printf("threshold %g, inner_threshold %g\n", layout.threshold, layout.inner_threshold);
  for (size_t i = 0; i < session.GetInputCount(); ++i) {
    Ort::AllocatorWithDefaultOptions allocator;
    const std::string name = session.GetInputNameAllocated(i, allocator).get();
    if (std::find(layout.model_inputs.begin(), layout.model_inputs.end(), name) != layout.model_inputs.end())
      std::printf("input  %s %s\n", name.c_str(),
                  shape_text(session.GetInputTypeInfo(i).GetTensorTypeAndShapeInfo().GetShape()).c_str());
  }
  for (const std::string& name : layout.model_outputs) std::printf("output %s\n", name.c_str());
  for (const StatePair& s : layout.state)
    std::printf("state  %-12s %-5s %s -> %s\n", s.node.c_str(), s.kind.c_str(), s.past.c_str(), s.present.c_str());
  for (const ChangeMap& m : layout.maps) std::printf("map    %-12s %s\n", m.node.c_str(), m.output.c_str());
  for (const BlockGate& g : layout.gates)
    std::printf("gate   %-12s %s, change map input %s\n", g.node.c_str(), g.input.c_str(), g.change_map.c_str());
  std::printf("skip   %s\n", layout.frame_skip.mode.empty() ? "never (no frame_skip in the metadata)"
                                                            : layout.frame_skip.mode.c_str());
}

int run(const Options& options) {
  Ort::Env env(ORT_LOGGING_LEVEL_WARNING, "deltaonnx_video");
  Ort::SessionOptions session_options;
  if (options.threads > 0) session_options.SetIntraOpNumThreads(options.threads);
  // The op library defines DeltaConv/DeltaPool/DeltaMapUnion (domain com.deltaonnx); it must be registered
  // before the session is created. ORT keeps the library loaded for the session's lifetime.
  session_options.RegisterCustomOpsLibrary(options.ops.c_str());

  const auto load_start = std::chrono::steady_clock::now();
  Ort::Session session(env, options.model.c_str(), session_options);
  const double load_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - load_start).count();
  const StateLayout layout = read_state_layout(session);
  if (options.describe) {
    describe(session, layout);
    return 0;
  }
  if (layout.model_inputs.size() != 1)
    throw std::runtime_error("this example feeds models with one input; the model has " +
                             std::to_string(layout.model_inputs.size()));

  // The frame tensor: its shape from the model, symbolic dimensions from --shape.
  std::vector<int64_t> shape;
  for (size_t i = 0; i < session.GetInputCount(); ++i) {
    Ort::AllocatorWithDefaultOptions allocator;
    if (layout.model_inputs[0] != session.GetInputNameAllocated(i, allocator).get()) continue;
    Ort::TypeInfo info = session.GetInputTypeInfo(i);
    if (info.GetTensorTypeAndShapeInfo().GetElementType() != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT)
      throw std::runtime_error("this example feeds float32 inputs; " + layout.model_inputs[0] + " is not float32");
    shape = info.GetTensorTypeAndShapeInfo().GetShape();
  }
  if (!options.shape.empty()) {
    if (options.shape.size() != shape.size())
      throw std::runtime_error("--shape has rank " + std::to_string(options.shape.size()) + ", the input has " +
                               std::to_string(shape.size()));
    for (size_t d = 0; d < shape.size(); ++d)
      if (shape[d] > 0 && shape[d] != options.shape[d])
        throw std::runtime_error("--shape " + shape_text(options.shape) + " contradicts the input's " + shape_text(shape));
    shape = options.shape;
  }
  size_t elements = 1;
  for (int64_t d : shape) {
    if (d <= 0) throw std::runtime_error("the input shape " + shape_text(shape) + " has symbolic dimensions: pass --shape");
    elements *= static_cast<size_t>(d);
  }

  std::unique_ptr<FrameSource> frames =
      options.raw.empty() ? open_video(options.video, shape) : open_raw_frames(options.raw, elements);
  std::ofstream dump;
  if (!options.dump.empty()) {
    dump.open(options.dump, std::ios::binary | std::ios::trunc);
    if (!dump) throw std::runtime_error("cannot write " + options.dump);
  }

  std::printf("model %s: input %s %s, %zu state tensors, %zu change maps, session created in %.1f ms\n",
              options.model.c_str(), layout.model_inputs[0].c_str(), shape_text(shape).c_str(), layout.state.size(),
              layout.maps.size(), load_ms);

  // Skipping a frame on the gate's answer asks the op library's own gate engine (gate_check.h).
  std::unique_ptr<GateCheck> gate_check;
  if (options.skip && !layout.frame_skip.mode.empty()) gate_check = std::make_unique<GateCheck>(options.ops);
  DeltaStream stream(session, layout, gate_check.get());
  Ort::MemoryInfo cpu = Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault);
  std::vector<uint8_t> map_cells;
  Ort::Value change_map(nullptr);
  if (!options.change_map.empty() || !options.exclude.empty()) {
    std::vector<int64_t> map_shape = change_map_for(options, layout, shape, map_cells);
    change_map = Ort::Value::CreateTensor<uint8_t>(cpu, map_cells.data(), map_cells.size(), map_shape.data(),
                                                   map_shape.size());
    stream.set_change_map(layout.model_inputs[0], change_map);
    std::printf("change map %s for %s\n", shape_text(map_shape).c_str(), layout.gates[0].node.c_str());
  }
  Ort::RunOptions run_options;
  std::vector<float> frame(elements);
  std::vector<double> latencies_ms;
  double recomputed_sum = 0.0;
  for (long index = 0; options.frames < 0 || index < options.frames; ++index) {
    if (!frames->next(frame)) break;
    std::vector<Ort::Value> inputs;
    inputs.push_back(Ort::Value::CreateTensor<float>(cpu, frame.data(), frame.size(), shape.data(), shape.size()));

    const auto start = std::chrono::steady_clock::now();
    const bool ran = stream.run(inputs, run_options);
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
    latencies_ms.push_back(ms);

    double checksum = 0.0;  // the sum of every float output value, as a quick fingerprint of the results
    for (const std::string& name : layout.model_outputs) {
      const Ort::Value& value = stream.output(name);
      const auto info = value.GetTensorTypeAndShapeInfo();
      const size_t count = info.GetElementCount();
      if (info.GetElementType() == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT) {
        const float* data = value.GetTensorData<float>();
        for (size_t i = 0; i < count; ++i) checksum += data[i];
      }
      if (dump) {
        dump.write(static_cast<const char*>(value.GetTensorRawData()),
                   static_cast<std::streamsize>(count * element_size(info.GetElementType())));
      }
    }
    const double recomputed = stream.recomputed_fraction();
    recomputed_sum += recomputed;
    if (!options.quiet)
      std::printf("frame %ld: %.3f ms, recomputed %.1f%%, checksum %.9g%s\n", index, ms, 100.0 * recomputed, checksum,
                  ran ? "" : " (skipped)");
  }
  if (dump && !dump.flush()) throw std::runtime_error("writing " + options.dump + " failed");

  const size_t n = latencies_ms.size();
  if (n == 0) {
    std::printf("no frames\n");
    return 1;
  }
  std::printf("%zu frames: first %.3f ms (everything computed), mean recomputed %.1f%%", n, latencies_ms[0],
              100.0 * recomputed_sum / static_cast<double>(n));
  if (n > 1) {
    std::vector<double> later(latencies_ms.begin() + 1, latencies_ms.end());
    std::sort(later.begin(), later.end());
    double sum = 0.0;
    for (double v : later) sum += v;
    std::printf(", later frames: mean %.3f ms, median %.3f ms, max %.3f ms", sum / static_cast<double>(later.size()),
                later[later.size() / 2], later.back());
  }
  std::printf(", %ld skipped (the gate saw no change)\n", stream.skipped());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse_options(argc, argv));
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "deltaonnx_video: %s\n%s", e.what(), kUsage);
    return 2;
  } catch (const std::exception& e) {  // Ort::Exception derives from std::exception
    std::fprintf(stderr, "deltaonnx_video: %s\n", e.what());
    return 1;
  }
}

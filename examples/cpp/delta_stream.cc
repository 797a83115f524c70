#include "delta_stream.h"

#include <cmath>
#include <cstring>
#include <set>
#include <stdexcept>

namespace deltaonnx_example {
namespace {

// A stream whose frames keep changing is checked less often (as DeltaSession does): after this many checks in a
// row that found a change, only every CHECK_SPACING-th frame is checked. Skipping or not never changes a result.
constexpr int kMissesBeforeSpacing = 4;
constexpr int kCheckSpacing = 16;

std::vector<int64_t> shape_of(const Ort::Value& value) { return value.GetTensorTypeAndShapeInfo().GetShape(); }

bool is_float(const Ort::Value& value) {
  return value.GetTensorTypeAndShapeInfo().GetElementType() == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
}

size_t byte_size(const Ort::Value& value) {
  const auto info = value.GetTensorTypeAndShapeInfo();
  size_t element = 1;
  switch (info.GetElementType()) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT32:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT32: element = 4; break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_DOUBLE: case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT64: element = 8; break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT16: case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT16: element = 2; break;
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT8:
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BOOL: element = 1; break;
    default: return 0;  // strings and the like: never compared
  }
  return element * info.GetElementCount();
}

// The 4-D `in` with its axes permuted as ONNX Transpose(perm) does: out axis d is in axis perm[d].
void transpose_4d(const float* in, const std::vector<int64_t>& shape, const std::vector<int64_t>& perm,
                  std::vector<float>& out, std::vector<int64_t>& out_shape) {
  const int64_t in_strides[4] = {shape[1] * shape[2] * shape[3], shape[2] * shape[3], shape[3], 1};
  int64_t strides[4];
  out_shape.assign(4, 0);
  for (int d = 0; d < 4; ++d) {
    out_shape[d] = shape[perm[d]];
    strides[d] = in_strides[perm[d]];
  }
  out.resize(static_cast<size_t>(out_shape[0] * out_shape[1] * out_shape[2] * out_shape[3]));
  float* o = out.data();
  for (int64_t a = 0; a < out_shape[0]; ++a)
    for (int64_t b = 0; b < out_shape[1]; ++b)
      for (int64_t c = 0; c < out_shape[2]; ++c) {
        const float* row = in + a * strides[0] + b * strides[1] + c * strides[2];
        for (int64_t d = 0; d < out_shape[3]; ++d) *o++ = row[d * strides[3]];
      }
}

bool valid_perm(const std::vector<int64_t>& perm) {
  if (perm.size() != 4) return false;
  std::set<int64_t> axes(perm.begin(), perm.end());
  return axes.size() == 4 && *axes.begin() == 0 && *axes.rbegin() == 3;
}

}  // namespace

DeltaStream::DeltaStream(Ort::Session& session, const StateLayout& layout, const GateCheck* gate_check)
    : session_(session),
      layout_(layout),
      cpu_(Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault)),
      binding_(session),
      empty_state_(nullptr),
      no_change_map_(nullptr),
      gate_check_(gate_check) {
  Ort::AllocatorWithDefaultOptions allocator;
  const int64_t empty_shape[4] = {0, 0, 0, 0};
  empty_state_ = Ort::Value::CreateTensor<float>(allocator, empty_shape, 4);
  const int64_t no_map_shape[4] = {0, 1, 0, 0};
  no_change_map_ = Ort::Value::CreateTensor<uint8_t>(allocator, no_map_shape, 4);
}

void DeltaStream::set_change_map(const std::string& model_input, const Ort::Value& map) {
  for (const BlockGate& gate : layout_.gates) {
    if (gate.input != model_input) continue;
    change_maps_[gate.change_map] = &map;
    binding_.BindInput(gate.change_map.c_str(), map);
    return;
  }
  throw std::invalid_argument("no block gate (DeltaGate) reads input '" + model_input +
                              "': convert the model with --gate block and a threshold above 0");
}

// First run of the stream: every past input gets the empty state, and every output is bound to the memory
// info, so ORT allocates it. The present outputs then hold the state to carry.
void DeltaStream::bind_first_run() {
  binding_.ClearBoundOutputs();
  for (const StatePair& s : layout_.state) {
    binding_.BindInput(s.past.c_str(), empty_state_);
    binding_.BindOutput(s.present.c_str(), cpu_);
  }
  for (const ChangeMap& m : layout_.maps) binding_.BindOutput(m.output.c_str(), cpu_);
  for (const BlockGate& gate : layout_.gates) {
    auto given = change_maps_.find(gate.change_map);
    binding_.BindInput(gate.change_map.c_str(), given == change_maps_.end() ? no_change_map_ : *given->second);
  }
  std::set<std::string> presents;
  for (const StatePair& s : layout_.state) presents.insert(s.present);
  for (const std::string& name : layout_.model_outputs)
    if (!presents.count(name)) binding_.BindOutput(name.c_str(), cpu_);
}

// After the first run: the state ORT allocated (each buffer on its own pages) is copied into one block of huge
// pages (state_arena.h), and those copies become the state buffers.
void DeltaStream::move_state_into_arena() {
  size_t total = 0;
  for (const StatePair& s : layout_.state) total += (byte_size(buffers_.at(s.present)) + 63) / 64 * 64;
  arena_.reserve(total);
  for (const StatePair& s : layout_.state) {
    Ort::Value& first = buffers_.at(s.present);
    const size_t bytes = byte_size(first);
    const auto info = first.GetTensorTypeAndShapeInfo();
    const std::vector<int64_t> shape = info.GetShape();
    void* slice = arena_.take(bytes);
    if (slice == nullptr) throw std::logic_error("DeltaStream: the state arena is smaller than the state");
    if (bytes != 0) std::memcpy(slice, first.GetTensorRawData(), bytes);
    first = Ort::Value::CreateTensor(cpu_, slice, bytes, shape.data(), shape.size(), info.GetElementType());
  }
}

// From the second run on: each state buffer is bound as both its past input and its present output, so the
// ops read last run's state and overwrite only the pixels they recompute. The other outputs are bound to the
// buffers of the first run too, so a steady-state run allocates nothing. The binding stays as it is until the
// state is dropped: later runs only re-bind the frame.
void DeltaStream::bind_in_place() {
  for (const StatePair& s : layout_.state) {
    const Ort::Value& buffer = buffers_.at(s.present);
    binding_.BindInput(s.past.c_str(), buffer);
    binding_.BindOutput(s.present.c_str(), buffer);
  }
  for (const auto& [name, buffer] : buffers_) binding_.BindOutput(name.c_str(), buffer);
}

bool DeltaStream::run(const std::vector<Ort::Value>& inputs, const Ort::RunOptions& run_options) {
  if (inputs.size() != layout_.model_inputs.size())
    throw std::invalid_argument("DeltaStream::run: expected " + std::to_string(layout_.model_inputs.size()) +
                                " inputs, got " + std::to_string(inputs.size()));
  std::vector<std::vector<int64_t>> shapes;
  for (const Ort::Value& v : inputs) shapes.push_back(shape_of(v));
  if (shapes != input_shapes_) reset();  // a new resolution or batch size: start over (protocol, step 3)
  ++frames_;

  if (!buffers_.empty() && nothing_changes(inputs)) {
    // The run would return the outputs it returned last time, leave the state as it is and mark nothing.
    for (const ChangeMap& m : layout_.maps) {
      Ort::Value& map = buffers_.at(m.output);
      std::memset(map.GetTensorMutableData<uint8_t>(), 0, map.GetTensorTypeAndShapeInfo().GetElementCount());
    }
    ++skipped_;
    return false;
  }

  for (size_t i = 0; i < inputs.size(); ++i) binding_.BindInput(layout_.model_inputs[i].c_str(), inputs[i]);
  const bool first_run = buffers_.empty();
  if (first_run) bind_first_run();
  try {
    session_.Run(run_options, binding_);
  } catch (...) {
    reset();
    throw;
  }
  if (first_run) {
    std::vector<std::string> names = binding_.GetOutputNames();
    std::vector<Ort::Value> values = binding_.GetOutputValues();  // in the order the outputs were bound
    for (size_t i = 0; i < names.size(); ++i) buffers_.emplace(names[i], std::move(values[i]));
    move_state_into_arena();
    bind_in_place();
    input_shapes_ = std::move(shapes);
  }
  finite_ = -1;
  if (gate_check_ != nullptr && layout_.frame_skip.mode == "bitwise") keep_frames(inputs);
  return true;
}

// docs/state_protocol.md, "Skipping a frame that changes nothing": the converter proved (frame_skip) that a run
// in which no gate sees a change, or whose frames equal the last run's, changes nothing; this checks that.
bool DeltaStream::nothing_changes(const std::vector<Ort::Value>& inputs) {
  const FrameSkip& skip = layout_.frame_skip;
  if (gate_check_ == nullptr || skip.mode.empty()) return false;
  if (wait_ > 0) {
    --wait_;
    return false;
  }
  bool nothing = true;
  if (skip.mode == "bitwise") {
    for (size_t i = 0; i < inputs.size() && nothing; ++i) {
      const size_t bytes = byte_size(inputs[i]);
      nothing = bytes != 0 && i < last_frames_.size() && last_frames_[i].size() == bytes &&
                std::memcmp(inputs[i].GetTensorRawData(), last_frames_[i].data(), bytes) == 0;
    }
  } else if (skip.mode == "tau") {
    for (const FrameSkipGate& gate : skip.gates) {
      size_t index = 0;
      while (index < layout_.model_inputs.size() && layout_.model_inputs[index] != gate.input) ++index;
      if (index == inputs.size() || !is_float(inputs[index])) return false;
      const Ort::Value& reference = buffers_.at(gate.present);
      std::vector<int64_t> shape = shape_of(inputs[index]);
      const float* frame = inputs[index].GetTensorData<float>();
      if (!gate.perm.empty()) {
        if (shape.size() != 4 || !valid_perm(gate.perm)) return false;
        std::vector<int64_t> moved;
        transpose_4d(frame, shape, gate.perm, transposed_, moved);
        shape = std::move(moved);
        frame = transposed_.data();
      }
      if (shape.size() != 4 || !is_float(reference) || shape != shape_of(reference)) return false;
      const uint8_t* map = nullptr;
      std::vector<int64_t> map_shape(4, 0);
      auto given = change_maps_.find(gate.change_map);
      if (given != change_maps_.end()) {
        map = given->second->GetTensorData<uint8_t>();
        map_shape = shape_of(*given->second);
        if (map_shape.size() != 4) return false;  // the run reports the error
      }
      if (gate_check_->finds_change(gate.rule, static_cast<float>(gate.threshold), gate.gate_block,
                                    static_cast<float>(gate.gate_hard), shape.data(), frame,
                                    reference.GetTensorData<float>(), map, map_shape.data())) {
        nothing = false;
        break;
      }
    }
  } else {
    return false;  // a mode this program does not know
  }
  if (!nothing) {
    if (++misses_ >= kMissesBeforeSpacing) wait_ = kCheckSpacing - 1;
    return false;
  }
  misses_ = 0;
  return state_is_finite();
}

// A Delta op comparing its whole input counts a NaN/Inf pixel as changed on every run, and rule 3 keeps such a
// pixel in its X_ref: its x_ref must be finite for a skip. Checked once per real run.
bool DeltaStream::state_is_finite() {
  if (finite_ < 0) {
    int finite = 1;
    for (const std::string& name : layout_.frame_skip.finite_checks) {
      const Ort::Value& value = buffers_.at(name);
      if (!is_float(value)) {
        finite = 0;
        break;
      }
      const float* data = value.GetTensorData<float>();
      const size_t count = value.GetTensorTypeAndShapeInfo().GetElementCount();
      for (size_t i = 0; i < count && finite; ++i) finite = std::isfinite(data[i]) ? 1 : 0;
    }
    finite_ = finite;
  }
  return finite_ == 1;
}

void DeltaStream::keep_frames(const std::vector<Ort::Value>& inputs) {
  last_frames_.resize(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    const char* data = static_cast<const char*>(inputs[i].GetTensorRawData());
    last_frames_[i].assign(data, data + byte_size(inputs[i]));
  }
}

const Ort::Value& DeltaStream::output(const std::string& name) const {
  auto it = buffers_.find(name);
  if (it == buffers_.end()) throw std::out_of_range("DeltaStream: no output '" + name + "' (has the stream run?)");
  return it->second;
}

void DeltaStream::reset() {
  buffers_.clear();
  arena_.release();  // after the values that point into it
  input_shapes_.clear();
  last_frames_.clear();
  finite_ = -1;
  misses_ = wait_ = 0;
  binding_.ClearBoundOutputs();
}

double DeltaStream::recomputed_fraction() const {
  size_t marked = 0, total = 0;
  for (const ChangeMap& m : layout_.maps) {
    const Ort::Value& map = output(m.output);
    const size_t count = map.GetTensorTypeAndShapeInfo().GetElementCount();
    const uint8_t* data = map.GetTensorData<uint8_t>();
    for (size_t i = 0; i < count; ++i) marked += data[i] != 0;
    total += count;
  }
  return total == 0 ? 0.0 : static_cast<double>(marked) / static_cast<double>(total);
}

}  // namespace deltaonnx_example

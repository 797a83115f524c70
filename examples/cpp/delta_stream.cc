#include "delta_stream.h"

#include <set>
#include <stdexcept>

namespace deltaonnx_example {

DeltaStream::DeltaStream(Ort::Session& session, const StateLayout& layout)
    : session_(session),
      layout_(layout),
      cpu_(Ort::MemoryInfo::CreateCpu(OrtArenaAllocator, OrtMemTypeDefault)),
      binding_(session),
      empty_state_(nullptr),
      no_change_map_(nullptr) {
  Ort::AllocatorWithDefaultOptions allocator;
  const int64_t empty_shape[4] = {0, 0, 0, 0};
  empty_state_ = Ort::Value::CreateTensor<float>(allocator, empty_shape, 4);
  const int64_t no_map_shape[4] = {0, 1, 0, 0};
  no_change_map_ = Ort::Value::CreateTensor<uint8_t>(allocator, no_map_shape, 4);
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
  for (const std::string& name : layout_.change_map_inputs) binding_.BindInput(name.c_str(), no_change_map_);
  std::set<std::string> presents;
  for (const StatePair& s : layout_.state) presents.insert(s.present);
  for (const std::string& name : layout_.model_outputs)
    if (!presents.count(name)) binding_.BindOutput(name.c_str(), cpu_);
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

void DeltaStream::run(const std::vector<Ort::Value>& inputs, const Ort::RunOptions& run_options) {
  if (inputs.size() != layout_.model_inputs.size())
    throw std::invalid_argument("DeltaStream::run: expected " + std::to_string(layout_.model_inputs.size()) +
                                " inputs, got " + std::to_string(inputs.size()));
  std::vector<std::vector<int64_t>> shapes;
  for (const Ort::Value& v : inputs) shapes.push_back(v.GetTensorTypeAndShapeInfo().GetShape());
  if (shapes != input_shapes_) reset();  // a new resolution or batch size: start over (protocol, step 3)

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
    bind_in_place();
    input_shapes_ = std::move(shapes);
  }
}

const Ort::Value& DeltaStream::output(const std::string& name) const {
  auto it = buffers_.find(name);
  if (it == buffers_.end()) throw std::out_of_range("DeltaStream: no output '" + name + "' (has the stream run?)");
  return it->second;
}

void DeltaStream::reset() {
  buffers_.clear();
  input_shapes_.clear();
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

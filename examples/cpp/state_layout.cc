#include "state_layout.h"

#include <set>
#include <stdexcept>

#include "json_value.h"

namespace deltaonnx_example {
namespace {

constexpr const char* kMetadataKey = "deltaonnx";
constexpr int kSupportedFormat = 1;
constexpr const char* kReservedPrefix = "deltaonnx.";  // names the converter adds; never the model's own

bool reserved(const std::string& name) { return name.rfind(kReservedPrefix, 0) == 0; }

// A "perm" entry: a list of axes, or null / absent (the same layout: empty).
std::vector<int64_t> axes(const JsonValue* perm) {
  std::vector<int64_t> result;
  if (perm != nullptr && perm->is_array())
    for (const JsonValue& axis : perm->as_array()) result.push_back(static_cast<int64_t>(axis.as_number()));
  return result;
}

std::vector<std::string> graph_names(const Ort::Session& session, bool inputs) {
  Ort::AllocatorWithDefaultOptions allocator;
  std::vector<std::string> names;
  const size_t count = inputs ? session.GetInputCount() : session.GetOutputCount();
  for (size_t i = 0; i < count; ++i) {
    Ort::AllocatedStringPtr name =
        inputs ? session.GetInputNameAllocated(i, allocator) : session.GetOutputNameAllocated(i, allocator);
    names.emplace_back(name.get());
  }
  return names;
}

}  // namespace

StateLayout read_state_layout(const Ort::Session& session) {
  Ort::AllocatorWithDefaultOptions allocator;
  Ort::ModelMetadata metadata = session.GetModelMetadata();
  Ort::AllocatedStringPtr text = metadata.LookupCustomMetadataMapAllocated(kMetadataKey, allocator);
  if (!text) {
    throw std::runtime_error(
        "the model has no 'deltaonnx' metadata, so it is not a deltaonnx-converted model; convert it first: "
        "python -m deltaonnx convert model.onnx -o model.delta.onnx");
  }
  const JsonValue root = JsonValue::parse(text.get());
  const JsonValue* format = root.find("format");
  if (format == nullptr || !format->is_number() || format->as_number() != kSupportedFormat) {
    throw std::runtime_error("unsupported 'deltaonnx' metadata format (this program reads format 1)");
  }

  StateLayout layout;
  if (const JsonValue* t = root.find("threshold"); t && t->is_number()) layout.threshold = t->as_number();
  if (const JsonValue* t = root.find("inner_threshold"); t && t->is_number()) layout.inner_threshold = t->as_number();
  for (const JsonValue& entry : root.at("state").as_array()) {
    layout.state.push_back({entry.at("node").as_string(), entry.at("kind").as_string(),
                            entry.at("past").as_string(), entry.at("present").as_string()});
  }
  if (const JsonValue* maps = root.find("maps")) {
    for (const JsonValue& entry : maps->as_array())
      layout.maps.push_back({entry.at("node").as_string(), entry.at("output").as_string()});
  }
  if (const JsonValue* gates = root.find("gates")) {
    for (const JsonValue& entry : gates->as_array()) {
      BlockGate gate;
      gate.node = entry.at("node").as_string();
      gate.input = entry.at("input").as_string();
      gate.perm = axes(entry.find("perm"));
      gate.change_map = entry.at("change_map").as_string();
      gate.gate_block = static_cast<int64_t>(entry.at("gate_block").as_number());
      layout.gates.push_back(std::move(gate));
    }
  }
  if (const JsonValue* skip = root.find("frame_skip")) {  // absent: the converter could not prove a skip exact
    layout.frame_skip.mode = skip->at("mode").as_string();
    for (const JsonValue& entry : skip->at("gates").as_array()) {
      FrameSkipGate gate;
      gate.node = entry.at("node").as_string();
      gate.input = entry.at("input").as_string();
      gate.present = entry.at("present").as_string();
      gate.perm = axes(entry.find("perm"));
      gate.rule = entry.at("rule").as_string();
      gate.threshold = entry.at("threshold").as_number();
      gate.gate_block = static_cast<int64_t>(entry.at("gate_block").as_number());
      gate.gate_hard = entry.at("gate_hard").as_number();
      layout.frame_skip.gates.push_back(std::move(gate));
    }
    for (FrameSkipGate& gate : layout.frame_skip.gates)
      for (const BlockGate& block_gate : layout.gates)
        if (gate.node == block_gate.node) gate.change_map = block_gate.change_map;
    for (const JsonValue& name : skip->at("finite_checks").as_array())
      layout.frame_skip.finite_checks.push_back(name.as_string());
  }

  const std::vector<std::string> inputs = graph_names(session, true);
  const std::vector<std::string> outputs = graph_names(session, false);
  const std::set<std::string> input_set(inputs.begin(), inputs.end());
  const std::set<std::string> output_set(outputs.begin(), outputs.end());
  std::set<std::string> pasts;
  for (const StatePair& s : layout.state) {
    if (!input_set.count(s.past))
      throw std::runtime_error("state input '" + s.past + "' listed in the metadata is not a graph input");
    if (!output_set.count(s.present))
      throw std::runtime_error("state output '" + s.present + "' listed in the metadata is not a graph output");
    pasts.insert(s.past);
  }
  for (const ChangeMap& m : layout.maps) {
    if (!output_set.count(m.output))
      throw std::runtime_error("change map '" + m.output + "' listed in the metadata is not a graph output");
  }
  for (const BlockGate& gate : layout.gates) {
    if (!input_set.count(gate.change_map))
      throw std::runtime_error("change map input '" + gate.change_map + "' listed in the metadata is not a graph input");
  }
  std::vector<std::string> checked = layout.frame_skip.finite_checks;
  for (const FrameSkipGate& gate : layout.frame_skip.gates) checked.push_back(gate.present);
  for (const std::string& name : checked) {
    if (!output_set.count(name))
      throw std::runtime_error("frame_skip state '" + name + "' listed in the metadata is not a graph output");
  }
  for (const std::string& name : inputs)
    if (!pasts.count(name) && !reserved(name)) layout.model_inputs.push_back(name);
  for (const std::string& name : outputs)
    if (!reserved(name)) layout.model_outputs.push_back(name);
  return layout;
}

}  // namespace deltaonnx_example

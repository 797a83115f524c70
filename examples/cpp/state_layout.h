// Which inputs and outputs of a converted model are state, read from its `deltaonnx` metadata
// (docs/state_protocol.md) and checked against the graph.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <string>
#include <vector>

namespace deltaonnx_example {

// One carried state tensor: feed `past` the value `present` had after the previous run of the same stream.
struct StatePair {
  std::string node;     // the Delta op that owns it
  std::string kind;     // "x_ref" (the op's reference input) or "y" (its previous output)
  std::string past;     // graph input
  std::string present;  // graph output; for some "y" states also one of the model's own outputs
};

// A change map output: uint8 [N,1,Ho,Wo], 1 where the node recomputed in the last run.
struct ChangeMap {
  std::string node;
  std::string output;
};

struct StateLayout {
  std::vector<std::string> model_inputs;   // graph inputs that are not state: the frames go here
  std::vector<std::string> model_outputs;  // the original model's outputs, in graph order
  std::vector<StatePair> state;            // in metadata order
  std::vector<ChangeMap> maps;
  // The external change-map inputs of the block gate's DeltaGate ops (metadata "gates"): fed an empty uint8
  // [0,1,0,0] (no map) unless the application knows where the frame changed (docs/state_protocol.md).
  std::vector<std::string> change_map_inputs;
  double threshold = 0.0;                  // the input gate tau the model was converted with
  double inner_threshold = 0.0;
};

// Reads the layout of `session`'s model. Throws std::runtime_error with the reason when the model has no
// `deltaonnx` metadata (not converted), an unsupported format, or names that are not in the graph.
StateLayout read_state_layout(const Ort::Session& session);

}  // namespace deltaonnx_example

// Which inputs and outputs of a converted model are state, read from its `deltaonnx` metadata
// (docs/state_protocol.md) and checked against the graph.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <cstdint>
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

// What decides, before a run, that the run would change nothing (the metadata's "frame_skip", written by the
// converter where the graph allows it; docs/state_protocol.md, "Skipping a frame that changes nothing").
struct FrameSkipGate {
  std::string node;            // the DeltaGate (or the Delta op) that reads the model input
  std::string input;           // that model input
  std::string present;         // its x_ref state output: the reference the gate compares against
  std::string change_map;      // a DeltaGate's change-map input (the map set for it narrows the check); "": none
  std::vector<int64_t> perm;   // input axes -> the gate's X axes (a Transpose between them); empty: same layout
  std::string rule;            // the gate's rule ("pixel" or "block") and attributes, as deltaonnx_gate_finds_change takes them
  double threshold = 0.0, gate_hard = -1.0;
  int64_t gate_block = 1;
};

struct FrameSkip {
  std::string mode;                        // "tau": ask each gate; "bitwise": the frame equals the last one; "": never
  std::vector<FrameSkipGate> gates;        // mode "tau"
  std::vector<std::string> finite_checks;  // x_ref state outputs that must hold no NaN/Inf for a skip
};

// A DeltaGate of the block gate and its external change-map input, fed an empty uint8 [0,1,0,0] (no map)
// unless the application knows where the frame changed (docs/state_protocol.md).
struct BlockGate {
  std::string node;
  std::string input;            // the model input it gates
  std::vector<int64_t> perm;    // input axes -> the gate's NCHW axes (a Transpose between them); empty: same
  std::string change_map;       // the graph input of its change map
  int64_t gate_block = 8;       // k: a map may also have one cell per k x k block
};

struct StateLayout {
  std::vector<std::string> model_inputs;   // graph inputs that are not state: the frames go here
  std::vector<std::string> model_outputs;  // the original model's outputs, in graph order
  std::vector<StatePair> state;            // in metadata order
  std::vector<ChangeMap> maps;
  std::vector<BlockGate> gates;            // the block gate's DeltaGate ops (metadata "gates")
  FrameSkip frame_skip;
  double threshold = 0.0;                  // the input gate tau the model was converted with
  double inner_threshold = 0.0;
};

// Reads the layout of `session`'s model. Throws std::runtime_error with the reason when the model has no
// `deltaonnx` metadata (not converted), an unsupported format, or names that are not in the graph.
StateLayout read_state_layout(const Ort::Session& session);

}  // namespace deltaonnx_example

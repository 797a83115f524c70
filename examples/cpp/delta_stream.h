// One video stream of a converted model: runs frames and carries the Delta ops' state from each run to the
// next in place, with Ort::IoBinding, as docs/state_protocol.md describes. Nothing is copied between runs.
//
// Threads: create one Ort::Session per model and one DeltaStream per camera; DeltaStreams of one session may
// run concurrently from different threads (ORT's Run is thread-safe and each stream owns its buffers and its
// binding). One DeltaStream must not be run from two threads at once.
#pragma once

#include <onnxruntime_cxx_api.h>

#include <map>
#include <string>
#include <vector>

#include "gate_check.h"
#include "state_arena.h"
#include "state_layout.h"

namespace deltaonnx_example {

class DeltaStream {
 public:
  // `gate_check` (optional, kept by reference): with it, a frame the model's gates would not pass is not run at
  // all (see run()); without it every frame runs, which is exact too.
  DeltaStream(Ort::Session& session, const StateLayout& layout, const GateCheck* gate_check = nullptr);

  // Runs one frame: `inputs` holds one value per layout.model_inputs, in that order (CPU tensors). A change of
  // any input shape drops the state first. If ORT fails, the state is dropped (in-place buffers may be half
  // written) and the exception propagates.
  // Skipping: when the metadata's frame_skip allows it (docs/state_protocol.md) and the stream ran before at
  // these shapes, a frame that no gate would pass (its change map all zero: the gate's own engine asked, with
  // the change map given below) or, in bitwise mode, a frame equal to the last one, is not run: the outputs
  // stay what they were, exactly what the run would return, and the change maps read all zero. Returns false
  // when the run was skipped.
  bool run(const std::vector<Ort::Value>& inputs, const Ort::RunOptions& run_options = Ort::RunOptions{nullptr});

  // Where the frames of `model_input` may change from now on (uint8 [N,1,H,W] at the gate's X resolution, or
  // one cell per gate block; 0 = it did not change, so the gate does not look there): fed to its DeltaGate's
  // change-map input on every run until replaced (docs/state_protocol.md). `map` must outlive its use. A
  // model converted without the block gate has no such input: std::invalid_argument.
  void set_change_map(const std::string& model_input, const Ort::Value& map);

  // Any output of the last run (a model output, a state output or a change map). The buffer is reused by the
  // next run of this stream: copy what you need to keep.
  const Ort::Value& output(const std::string& name) const;

  // Forgets the state: the next run starts from empty state and recomputes everything (a scene cut, a new clip).
  void reset();

  // Fraction of the change-map pixels marked in the last run, over all Delta ops (1 on a first frame).
  double recomputed_fraction() const;

  // Frames given to run() since the stream was created, and how many of them were skipped.
  long frames() const { return frames_; }
  long skipped() const { return skipped_; }

 private:
  void bind_first_run();
  void move_state_into_arena();
  void bind_in_place();
  bool nothing_changes(const std::vector<Ort::Value>& inputs);
  bool state_is_finite();
  void keep_frames(const std::vector<Ort::Value>& inputs);

  Ort::Session& session_;
  const StateLayout& layout_;
  Ort::MemoryInfo cpu_;
  Ort::IoBinding binding_;
  Ort::Value empty_state_;                       // float32 [0,0,0,0]: "no state" for every past input
  Ort::Value no_change_map_;                     // uint8 [0,1,0,0]: a DeltaGate's "no external map"
  StateArena arena_;                             // the state buffers' memory (before buffers_: outlives them)
  std::map<std::string, Ort::Value> buffers_;    // output name -> its buffer, from the first run on
  std::vector<std::vector<int64_t>> input_shapes_;  // the shapes the state was built for
  std::map<std::string, const Ort::Value*> change_maps_;  // change-map graph input -> the map set for it
  const GateCheck* gate_check_;
  std::vector<std::vector<char>> last_frames_;  // bitwise mode: the frames of the last run
  std::vector<float> transposed_;               // a frame in its gate's layout
  int finite_ = -1;                             // the finite_checks states hold no NaN/Inf: -1 unknown, 0, 1
  int misses_ = 0, wait_ = 0;                   // checks that found a change in a row; frames to run unchecked
  long frames_ = 0, skipped_ = 0;
};

}  // namespace deltaonnx_example

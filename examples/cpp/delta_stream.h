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

#include "state_layout.h"

namespace deltaonnx_example {

class DeltaStream {
 public:
  DeltaStream(Ort::Session& session, const StateLayout& layout);

  // Runs one frame: `inputs` holds one value per layout.model_inputs, in that order (CPU tensors). A change of
  // any input shape drops the state first. If ORT fails, the state is dropped (in-place buffers may be half
  // written) and the exception propagates.
  void run(const std::vector<Ort::Value>& inputs, const Ort::RunOptions& run_options = Ort::RunOptions{nullptr});

  // Any output of the last run (a model output, a state output or a change map). The buffer is reused by the
  // next run of this stream: copy what you need to keep.
  const Ort::Value& output(const std::string& name) const;

  // Forgets the state: the next run starts from empty state and recomputes everything (a scene cut, a new clip).
  void reset();

  // Fraction of the change-map pixels marked in the last run, over all Delta ops (1 on a first frame).
  double recomputed_fraction() const;

 private:
  void bind_first_run();
  void bind_in_place();

  Ort::Session& session_;
  const StateLayout& layout_;
  Ort::MemoryInfo cpu_;
  Ort::IoBinding binding_;
  Ort::Value empty_state_;                       // float32 [0,0,0,0]: "no state" for every past input
  Ort::Value no_change_map_;                     // uint8 [0,1,0,0]: a DeltaGate's "no external map"
  std::map<std::string, Ort::Value> buffers_;    // output name -> its buffer, from the first run on
  std::vector<std::vector<int64_t>> input_shapes_;  // the shapes the state was built for
};

}  // namespace deltaonnx_example

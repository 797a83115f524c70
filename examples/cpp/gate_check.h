// The gate's answer before a run: whether a DeltaGate (or a Delta op reading the frame) would see any change,
// asked of the op library's own engine through its C entry point deltaonnx_gate_finds_change
// (ops/delta_gate/cpu/gate_probe.h), so the application can skip a run that would change nothing.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace deltaonnx_example {

class GateCheck {
 public:
  // Finds deltaonnx_gate_finds_change in the op library at `path` (ORT has loaded it already: this only takes
  // another reference). Throws std::runtime_error when the library lacks it (one built before the entry point).
  explicit GateCheck(const std::string& path);
  ~GateCheck();
  GateCheck(const GateCheck&) = delete;
  GateCheck& operator=(const GateCheck&) = delete;

  // True when the gate would mark some pixel of `x` (NCHW `shape`) against `x_ref`, looking only where the
  // optional `map` ([N,1,h,w], nullptr: everywhere) marks. Throws std::runtime_error on invalid arguments.
  bool finds_change(const std::string& rule, float threshold, int64_t gate_block, float gate_hard,
                    const int64_t shape[4], const float* x, const float* x_ref, const uint8_t* map,
                    const int64_t map_shape[4]) const;

 private:
  using Entry = int (*)(const char*, float, int64_t, float, const int64_t*, const float*, const float*,
                        const uint8_t*, const int64_t*, char*, size_t);
  void* library_ = nullptr;
  Entry entry_ = nullptr;
};

}  // namespace deltaonnx_example

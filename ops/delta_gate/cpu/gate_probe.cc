#include "delta_gate/cpu/gate_probe.h"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "common/checked_size.h"
#include "common/kernel_table.h"
#include "common/parallel.h"
#include "delta_gate/gate_engine.h"

namespace {

int fail(const std::string& message, char* error, size_t error_size) {
  if (error != nullptr && error_size > 0) {
    const size_t n = std::min(message.size(), error_size - 1);
    std::memcpy(error, message.data(), n);
    error[n] = '\0';
  }
  return -1;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) int deltaonnx_gate_finds_change(
    const char* rule, float threshold, int64_t gate_block, float gate_hard, const int64_t* shape, const float* x,
    const float* x_ref, const uint8_t* map_in, const int64_t* map_shape, char* error, size_t error_size) {
  using namespace deltaonnx;
  try {
    if (rule == nullptr || shape == nullptr || x == nullptr || x_ref == nullptr)
      return fail("rule, shape, x and x_ref are required", error, error_size);
    GateSpec spec;
    const std::string bad = GateSpec::make(rule, threshold, gate_block, gate_hard, &spec);
    if (!bad.empty()) return fail(bad, error, error_size);
    for (int d = 0; d < 4; ++d)
      if (shape[d] < 0) return fail("shape dimensions must be >= 0", error, error_size);
    GateRun run;
    run.batch = shape[0];
    run.channels = shape[1];
    run.height = shape[2];
    run.width = shape[3];
    run.x = x;
    run.x_ref = x_ref;
    const int64_t plane = checked_product({run.height, run.width}, "X");
    checked_product({run.batch, run.channels, plane}, "X");
    if (checked_product({run.batch, plane}, "X") == 0) return 0;  // nothing to compare
    if (map_in != nullptr && map_shape != nullptr &&
        checked_product({map_shape[0], map_shape[1], map_shape[2], map_shape[3]}, "the change map") != 0) {
      if (map_shape[0] != run.batch || map_shape[1] != 1)
        return fail("the change map must be [N,1,H,W] or one cell per block, with X's N", error, error_size);
      const std::string wrong = check_gate_map(spec, run.height, run.width, map_shape[2], map_shape[3],
                                               &run.map_per_block);
      if (!wrong.empty()) return fail(wrong, error, error_size);
      run.map_in = map_in;
    }
    std::vector<uint8_t> verdict(checked_count({run.batch, plane}, "the verdict"));
    run.map_out = verdict.data();  // x_gated stays nullptr: the verdict only
    return run_gate(spec, run, kernels(), serial_for) > 0 ? 1 : 0;
  } catch (const std::exception& e) {  // a size that overflows, an allocation that fails
    return fail(e.what(), error, error_size);
  }
}

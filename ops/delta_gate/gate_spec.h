// DeltaGate's attributes as the engines use them, and the shapes an external change map may have: shared by the
// CPU engine, the ORT kernels of both libraries and the pybind module (ORT-free, no kernel table).
#pragma once
#include <cstdint>
#include <string>

namespace deltaonnx {

// The defaults of the block gate (reference.DEFAULT_GATE_BLOCK, DEFAULT_GATE_HARD): k, and tau_hard =
// kDefaultGateHardFactor x tau when gate_hard is not given.
constexpr int64_t kDefaultGateBlock = 8;
constexpr float kDefaultGateHardFactor = 3.f;

struct GateSpec {
  bool block_rule = true;  // false: the pixel rule (k = 1, tau_hard = tau, no block means)
  int64_t block = kDefaultGateBlock;  // k of the k x k blocks (edge blocks smaller)
  float tau = 0.f;         // bound on each channel's block mean of X - X_ref
  float hard = 0.f;        // bound on every pixel's max_c |X - X_ref|

  // The spec a node's attributes give: rule "pixel" or "block"; hard < 0 means default_hard_factor x tau.
  // Returns an error message naming the attribute, or "" when valid.
  static std::string make(const std::string& rule, float tau, int64_t block, float hard, GateSpec* out);
};

// An external map at block resolution [ceil(H/k), ceil(W/k)] spread to frame resolution [H, W].
void spread_block_map(const uint8_t* cells, int64_t height, int64_t width, int64_t block, uint8_t* marks);

// Whether an external map of [map_h, map_w] fits a frame of [height, width]: at frame resolution, or (block
// rule, k > 1) one cell per block. Returns "" (and sets *per_block) or an error message.
std::string check_gate_map(const GateSpec& spec, int64_t height, int64_t width, int64_t map_h, int64_t map_w,
                           bool* per_block);

}  // namespace deltaonnx

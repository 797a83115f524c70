#include "delta_gate/gate_spec.h"

#include <cmath>

namespace deltaonnx {

std::string GateSpec::make(const std::string& rule, float tau, int64_t block, float hard, GateSpec* out) {
  if (!(std::isfinite(tau) && tau >= 0.f)) return "threshold must be finite and >= 0";
  GateSpec s;
  s.tau = tau;
  if (rule == "pixel") {
    s.block_rule = false;
    s.block = 1;
    s.hard = tau;
  } else if (rule == "block") {
    if (block < 1 || block > 4096) return "gate_block must be in [1, 4096]";
    s.block = block;
    s.hard = hard < 0.f ? kDefaultGateHardFactor * tau : hard;
    if (!(std::isfinite(s.hard) && s.hard >= tau)) return "gate_hard must be finite and >= threshold";
  } else {
    return "rule must be \"pixel\" or \"block\", got \"" + rule + "\"";
  }
  *out = s;
  return "";
}

void spread_block_map(const uint8_t* cells, int64_t height, int64_t width, int64_t block, uint8_t* marks) {
  const int64_t cells_w = (width + block - 1) / block;
  for (int64_t y = 0; y < height; ++y)
    for (int64_t x = 0; x < width; ++x) marks[y * width + x] = cells[(y / block) * cells_w + x / block] != 0;
}

std::string check_gate_map(const GateSpec& spec, int64_t height, int64_t width, int64_t map_h, int64_t map_w,
                           bool* per_block) {
  const int64_t kb = spec.block;
  *per_block = false;
  if (map_h == height && map_w == width) return "";
  if (spec.block_rule && kb > 1 && map_h == (height + kb - 1) / kb && map_w == (width + kb - 1) / kb) {
    *per_block = true;
    return "";
  }
  std::string e = "the change map must be [N,1," + std::to_string(height) + "," + std::to_string(width) + "]";
  if (spec.block_rule && kb > 1)
    e += " or, one cell per block, [N,1," + std::to_string((height + kb - 1) / kb) + "," +
         std::to_string((width + kb - 1) / kb) + "]";
  return e + ", got [N,1," + std::to_string(map_h) + "," + std::to_string(map_w) + "]";
}

}  // namespace deltaonnx

// The channel block b of DeltaConv's blocked tensors (attribute layout = "blocked": memory [N][C/b][H][W][b] under
// the 4-D shape [N, C, H, W]), resolved once per process by the CPU library: MLAS's NCHWc block, so the dense path
// runs ORT's NCHWc Conv on the tensors as they are, or 1 (plain NCHW) where MLAS has no NCHWc kernels.
// The CUDA library uses b = 1 (ops.md). DELTAONNX_CHANNEL_BLOCK (tests only: 1, 4, 8 or 16) forces another b,
// so the engine's b = 8 and b = 1 paths run on an AVX-512 machine (the NCHWc dense path is then off).
#pragma once
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "common/aligned_scratch.h"

namespace deltaonnx {

// roundup(C, b): the channels a blocked tensor of C logical channels holds (docs/ops.md#blocked-layout); its pad
// lanes C..roundup(C, b)-1 are exactly zero. The numpy reference's is blocked_memory.padded_channels.
inline int64_t padded_channels(int64_t channels, int64_t block) {
  return block > 1 ? (channels + block - 1) / block * block : channels;
}

// The largest channel block any library uses (MLAS's NCHWc block on AVX-512): scratch sized for it fits every b.
constexpr int64_t kMaxChannelBlock = 16;

inline int64_t forced_channel_block() {
  const char* v = std::getenv("DELTAONNX_CHANNEL_BLOCK");
  if (v == nullptr) return 0;
  for (int64_t b : {int64_t{1}, int64_t{4}, int64_t{8}, kMaxChannelBlock})
    if (std::strtol(v, nullptr, 10) == b) return b;
  return 0;  // anything else is ignored: the library's own block
}

inline int64_t cpu_channel_block() {
  static const int64_t block = [] {
    const int64_t forced = forced_channel_block();
    if (forced > 0) return forced;
    const int64_t mlas = mlas_nchwc_block_size();
    return mlas > 0 ? mlas : int64_t{1};
  }();
  return block;
}

}  // namespace deltaonnx

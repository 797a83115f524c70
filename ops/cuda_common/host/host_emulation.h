// The CUDA kernels of libdeltaonnx_ops_cuda run on the host: each function walks the kernel's grid in plain
// C++ and calls the very per-thread bodies the device runs (pipeline_steps.h, gather_gemm.h, max_pool_step.h,
// map_union_step.h). Kernels with barriers run phase by phase (every thread of a block finishes a phase before
// any starts the next, which is what __syncthreads guarantees); warp votes and atomics run warp by warp.
// Header-only, plain C++ (no CUDA headers): the pybind11 module and the emulated op library include it.
#pragma once
#include <cstdint>
#include <vector>

#include "cuda_common/pipeline_steps.h"
#include "delta_conv/cuda/gather_gemm.h"
#include "delta_pool/cuda/max_pool_step.h"
#include "map_union/cuda/map_union_step.h"
#include "delta_gate/cuda/gate_step.h"
#include "channel_ops/channel_step.h"
#include "delta_resize/resize_step.h"

namespace deltaonnx {
namespace cuda {
namespace host {

// Threads per block of the 1-D and per-item kernels (launch_config.cuh's kBlockThreads).
constexpr int kBlockThreads = 256;

namespace detail {

inline int64_t blocks_for(int64_t threads) { return (threads + kBlockThreads - 1) / kBlockThreads; }

template <class Tile>
void run_gemm_tiles(const GatherGemm& gemm) {
  const GemmGrid grid = gemm_grid<Tile>(gemm);
  std::vector<float> a_tile(Tile::kSharedA), b_tile(Tile::kSharedB);  // the block's shared memory
  std::vector<GemmThread<Tile>> threads(Tile::kThreads);                // the block's registers
  const int32_t depth = static_cast<int32_t>(gemm.shape.depth());
  for (int64_t bz = 0; bz < grid.z; ++bz) {
    for (int64_t by = 0; by < grid.y; ++by) {
      for (int64_t bx = 0; bx < grid.x; ++bx) {
        const GemmBlock block = gemm_block<Tile>(gemm, bx, by, bz);
        if (!gemm_block_active(block)) continue;
        for (int tid = 0; tid < Tile::kThreads; ++tid) gemm_thread_init<Tile>(gemm, block, tid, threads[tid]);
        for (int32_t k0 = 0; k0 < depth; k0 += Tile::BK) {
          for (int tid = 0; tid < Tile::kThreads; ++tid) {
            gemm_load<Tile>(gemm, block, tid, threads[tid], k0, a_tile.data(), b_tile.data());
          }
          // __syncthreads()
          for (int tid = 0; tid < Tile::kThreads; ++tid) {
            gemm_accumulate<Tile>(tid, a_tile.data(), b_tile.data(), threads[tid]);
          }
          // __syncthreads()
        }
        for (int tid = 0; tid < Tile::kThreads; ++tid) gemm_store<Tile>(gemm, block, tid, threads[tid]);
      }
    }
  }
}

}  // namespace detail

inline void run_change_step(const ChangeStep& step) {
  for (int64_t i = 0; i < step.threads(); ++i) change_step_thread(step, i);
}

inline void run_recompute_step(const RecomputeStep& step) {
  const int64_t total = step.out_plane();
  for (int64_t n = 0; n < step.batch; ++n) {
    for (int64_t warp_start = 0; warp_start < detail::blocks_for(total) * kBlockThreads; warp_start += kWarpSize) {
      bool flags[kWarpSize];
      uint32_t ballot = 0;  // __ballot_sync
      for (int lane = 0; lane < kWarpSize; ++lane) {
        const int64_t q = warp_start + lane;
        flags[lane] = q < total && recompute_step_flag(step, n, q);
        if (flags[lane]) ballot |= 1u << lane;
      }
      if (ballot == 0) continue;
      const int32_t base = step.counts[n];  // the leader's atomicAdd
      step.counts[n] += popcount32(ballot);
      for (int lane = 0; lane < kWarpSize; ++lane) {
        if (flags[lane]) step.pixel_list[n * total + warp_append_slot(ballot, lane, base)] = static_cast<int32_t>(warp_start + lane);
      }
    }
  }
}

inline void run_densify_step(const PixelList& list, uint8_t* map_out, int64_t batch) {
  for (int64_t n = 0; n < batch; ++n) {
    for (int64_t q = 0; q < list.total; ++q) densify_step_thread(list, map_out, n, q);
  }
}

inline void run_keep_step(const KeepStep& step) {
  for (int64_t i = 0; i < step.threads(); ++i) keep_step_thread(step, i);
}

inline void run_gather_gemm(const GatherGemm& gemm, int tile = 0) {
  const bool wide = tile == 0 ? use_wide_tile(gemm.shape) : tile == 1;
  if (wide) {
    detail::run_gemm_tiles<WideTile>(gemm);
  } else {
    detail::run_gemm_tiles<NarrowTile>(gemm);
  }
  if (!is_channel_activation(gemm.act.kind)) return;
  for (int64_t n = 0; n < gemm.batch; ++n)
    for (int64_t i = 0; i < gemm.list.total; ++i) channel_activation_thread(gemm, n, i);
}

inline void run_max_pool(const MaxPoolStep& step) {
  for (int64_t n = 0; n < step.batch; ++n) {
    for (int64_t c = 0; c < step.channels; ++c) {
      for (int64_t i = 0; i < step.list.total; ++i) max_pool_thread(step, n, c, i);
    }
  }
}

inline void run_map_union(const uint8_t* const* maps, const uint8_t* per_item, int64_t num_maps, uint8_t* out,
                          int64_t size, int64_t item_size) {
  for (int64_t first = 0; first < num_maps; first += kMapUnionInputsPerLaunch) {
    const MapUnionStep step = map_union_launch(maps, per_item, num_maps, first, out, size, item_size);
    for (int64_t i = 0; i < size; ++i) map_union_thread(step, i);
  }
}

inline void run_resize(const ResizeStep& step) {
  for (int64_t i = 0; i < step.out_elements(); ++i) resize_thread(step, i);
}

inline void run_resize_map(const ResizeStep& step) {
  for (int64_t q = 0; q < step.map_elements(); ++q) resize_map_thread(step, q);
}

inline void run_global_pool(const GlobalPoolStep& step) {
  for (int64_t i = 0; i < step.g.outputs(); ++i) global_pool_thread(step, i);
}

inline void run_channel_scale(const ChannelScaleStep& step) {
  for (int64_t i = 0; i < step.g.elements(); ++i) channel_scale_thread(step, i);
}

// DeltaChannelGate: the pool's grid, the reduce layer's, the expand layer's, then the map's (four launches, each
// reading what the one before wrote).
inline void run_channel_gate(const ChannelGateStep& step) {
  const int64_t items = step.pool.g.batch;
  if (items == 0) return;
  run_global_pool(step.pool);
  for (int64_t i = 0; i < items * step.reduce.outputs; ++i) gate_layer_thread(step.reduce, step.pool.y, step.hidden, i);
  for (int64_t i = 0; i < items * step.expand.outputs; ++i) gate_layer_thread(step.expand, step.hidden, step.s, i);
  if (step.map_out == nullptr) return;
  for (int64_t n = 0; n < items; ++n) step.map_out[n] = gate_changed(step, n);
}

// DeltaGate: the verdict kernel's grid, then the apply kernel's (two launches: the second reads every verdict).
inline void run_gate(const GateStep& step) {
  for (int64_t i = 0; i < step.verdict_threads(); ++i) gate_verdict_thread(step, i);
  for (int64_t i = 0; i < step.apply_threads(); ++i) gate_apply_thread(step, i);
}

}  // namespace host
}  // namespace cuda
}  // namespace deltaonnx


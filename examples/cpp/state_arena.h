// One stream's state in one block of memory, on 2 MB huge pages where Linux offers them (madvise), as DeltaSession
// keeps it (python/deltaonnx/session/state_arena.py). ORT allocates each present output of the first run on its own
// pages; every Delta op writes its state every run, and tens of buffers scattered over thousands of 4 KB pages cost
// TLB misses dense ORT (a few reused buffers) does not pay: mobilenetv2_like 0.73-0.76x -> 0.77-0.79x of dense
// ORT everything changing (docs/results.md#state-arena).
#pragma once

#include <cstddef>
#include <cstdint>

namespace deltaonnx_example {

class StateArena {
 public:
  StateArena() = default;
  StateArena(const StateArena&) = delete;
  StateArena& operator=(const StateArena&) = delete;
  ~StateArena() { release(); }

  // Drops the last block and maps one of at least `bytes` (zeroed); huge pages are asked for when it spans one.
  void reserve(size_t bytes);
  // The next `bytes` of the block, aligned to a cache line; nullptr past its end.
  void* take(size_t bytes);
  void release();
  bool huge_pages() const { return huge_; }

 private:
  unsigned char* base_ = nullptr;  // the mapping (or allocation) as made
  unsigned char* block_ = nullptr;  // its aligned start
  size_t mapped_ = 0, size_ = 0, used_ = 0;
  bool huge_ = false;
};

}  // namespace deltaonnx_example

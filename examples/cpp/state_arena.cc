#include "state_arena.h"

#include <cstdlib>
#include <cstring>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace deltaonnx_example {
namespace {
constexpr size_t kHugePage = size_t{2} << 20;
constexpr size_t kLine = 64;
size_t round_up(size_t n, size_t to) { return (n + to - 1) / to * to; }
}  // namespace

void StateArena::reserve(size_t bytes) {
  release();
  size_ = round_up(bytes, kLine);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (size_ >= kHugePage) {
    // One huge page more than needed, so the block can start on a 2 MB boundary (only aligned 2 MB ranges get
    // huge pages); the slack is never touched, so it costs no memory.
    mapped_ = round_up(size_, kHugePage) + kHugePage;
    void* mapping = mmap(nullptr, mapped_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mapping == MAP_FAILED) throw std::bad_alloc();
    base_ = static_cast<unsigned char*>(mapping);
    block_ = base_ + (kHugePage - reinterpret_cast<uintptr_t>(base_) % kHugePage) % kHugePage;
    huge_ = madvise(block_, mapped_ - static_cast<size_t>(block_ - base_), MADV_HUGEPAGE) == 0;
    return;
  }
#endif
  mapped_ = 0;
  base_ = static_cast<unsigned char*>(std::aligned_alloc(kLine, size_ == 0 ? kLine : size_));
  if (base_ == nullptr) throw std::bad_alloc();
  std::memset(base_, 0, size_);
  block_ = base_;
}

void* StateArena::take(size_t bytes) {
  const size_t need = round_up(bytes, kLine);
  if (block_ == nullptr || used_ + need > size_) return nullptr;
  void* slice = block_ + used_;
  used_ += need;
  return slice;
}

void StateArena::release() {
#if defined(__linux__)
  if (base_ != nullptr && mapped_ != 0) munmap(base_, mapped_);
  else
#endif
    std::free(base_);
  base_ = block_ = nullptr;
  mapped_ = size_ = used_ = 0;
  huge_ = false;
}

}  // namespace deltaonnx_example

// Overflow-checked size arithmetic and the bounds every window attribute must respect, written once for the
// attribute parsing (op_definition/), the CPU engines and the CUDA ops. A model is a file users download: no
// attribute or tensor shape may make a buffer size wrap (docs/design.md, "Hardening").
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <stdexcept>
#include <string>

namespace deltaonnx {

// Bounds of the window attributes. Far above any real CNN (kernels <= 31, strides <= 32, pads <= kernel), low
// enough that every product of a few of them with a tensor extent fits in int64 with room to spare.
constexpr int64_t kMaxWindowExtent = int64_t{1} << 16;  // kernel, stride, dilation, each pad
constexpr int64_t kMaxSpatialExtent = int64_t{1} << 31; // H, W of any tensor the ops read or write

// Thrown when a size computed from a model's attributes or a tensor's shape does not fit.
struct SizeOverflow : std::length_error {
  using std::length_error::length_error;
};

// a * b for non-negative a, b; false when the product exceeds INT64_MAX.
inline bool mul_fits(int64_t a, int64_t b, int64_t* out) {
  if (a < 0 || b < 0) return false;
  if (a != 0 && b > std::numeric_limits<int64_t>::max() / a) return false;
  *out = a * b;
  return true;
}

// The product of non-negative factors, or SizeOverflow naming what was being sized.
inline int64_t checked_product(std::initializer_list<int64_t> factors, const char* what) {
  int64_t product = 1;
  for (int64_t f : factors) {
    if (!mul_fits(product, f, &product)) throw SizeOverflow(std::string("the size of ") + what + " overflows");
  }
  return product;
}

// The same as an element count (std::vector::resize and friends).
inline size_t checked_count(std::initializer_list<int64_t> factors, const char* what) {
  return static_cast<size_t>(checked_product(factors, what));
}

// The same as a byte count for `count` elements of T.
template <class T>
inline size_t checked_bytes(std::initializer_list<int64_t> factors, const char* what) {
  const int64_t n = checked_product(factors, what);
  return static_cast<size_t>(checked_product({n, static_cast<int64_t>(sizeof(T))}, what));
}

}  // namespace deltaonnx

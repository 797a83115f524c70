// A tensor's shape held inline (no allocation): what every Delta op reads from ORT on every run, compares and
// checks. ORT-free. Up to kMaxRank dimensions are kept; a longer shape keeps its rank and whether it holds no
// elements, equals no shape (not even its own copy) and prints its first dimensions: the ops take 4-D tensors,
// so such a tensor is only ever "another shape" (rule 1) or an error.
#pragma once
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

namespace deltaonnx {

class Shape {
 public:
  static constexpr size_t kMaxRank = 8;

  Shape() = default;
  Shape(std::initializer_list<int64_t> dims) : Shape(dims.begin(), dims.size()) {}
  Shape(const std::vector<int64_t>& dims) : Shape(dims.data(), dims.size()) {}  // NOLINT: a vector is a shape
  Shape(const int64_t* dims, size_t rank) : rank_(rank) {
    std::copy_n(dims, std::min(rank, kMaxRank), dims_.begin());
    empty_ = std::any_of(dims, dims + rank, [](int64_t d) { return d == 0; });
  }

  size_t size() const { return rank_; }
  bool too_long() const { return rank_ > kMaxRank; }  // dims past kMaxRank not kept
  const int64_t* data() const { return dims_.data(); }
  const int64_t* begin() const { return dims_.data(); }
  const int64_t* end() const { return dims_.data() + std::min(rank_, kMaxRank); }
  int64_t operator[](size_t i) const { return dims_[i]; }
  bool holds_no_elements() const { return empty_; }  // some dimension is 0
  std::vector<int64_t> to_vector() const { return std::vector<int64_t>(begin(), end()); }

  friend bool operator==(const Shape& a, const Shape& b) {
    return a.rank_ == b.rank_ && !a.too_long() && std::equal(a.begin(), a.end(), b.begin());
  }
  friend bool operator!=(const Shape& a, const Shape& b) { return !(a == b); }

 private:
  std::array<int64_t, kMaxRank> dims_{};
  size_t rank_ = 0;
  bool empty_ = false;
};

inline bool holds_no_elements(const Shape& shape) { return shape.holds_no_elements(); }

inline std::string shape_text(const Shape& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size() && i < Shape::kMaxRank; ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  if (shape.too_long()) s += ",... (" + std::to_string(shape.size()) + " dimensions)";
  return s + "]";
}

// [N, 1, H, W] of a 4-D shape [N, C, H, W]: the change map of its pixels.
inline Shape map_shape_of(const Shape& s) { return {s[0], 1, s[2], s[3]}; }

}  // namespace deltaonnx

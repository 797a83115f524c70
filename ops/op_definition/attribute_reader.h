// A node's attributes as the Delta ops read them, on every execution provider: absent attributes take the
// op's default, and an attribute present with another ONNX type is an error naming it (threshold=1 stored as
// an INT is refused, never read as the default 0). Errors are UserError (op_status.h).
#pragma once
#include <onnxruntime_cxx_api.h>

#include <cstdint>
#include <string>
#include <vector>

#include "op_definition/op_status.h"

namespace deltaonnx {

class AttributeReader {
 public:
  explicit AttributeReader(const OrtKernelInfo* info);
  const std::string& node() const { return node_; }
  bool has(const char* name) const;
  // Whether the node gives input `index` (an optional input left out has an empty name or none).
  bool has_input(size_t index) const;
  int64_t get_int(const char* name, int64_t fallback) const;
  float get_float(const char* name, float fallback) const;
  std::string get_string(const char* name, const std::string& fallback) const;
  std::vector<int64_t> get_ints(const char* name, const std::vector<int64_t>& fallback) const;
  std::vector<float> get_floats(const char* name, const std::vector<float>& fallback) const;
  [[noreturn]] void fail(const std::string& what) const { throw UserError(what); }

 private:
  [[noreturn]] void wrong_type(const char* name, const char* expected) const;
  bool empty_list_is_another_type(const char* name, bool ints) const;
  const OrtKernelInfo* info_;
  std::string node_;
};

// The node's name ("" when ORT gives none).
std::string node_name_of(const OrtKernelInfo* info);

}  // namespace deltaonnx

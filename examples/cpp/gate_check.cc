#include "gate_check.h"

#include <dlfcn.h>

#include <stdexcept>

namespace deltaonnx_example {

GateCheck::GateCheck(const std::string& path) {
  library_ = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (library_ == nullptr) throw std::runtime_error("cannot open the op library " + path + ": " + dlerror());
  entry_ = reinterpret_cast<Entry>(dlsym(library_, "deltaonnx_gate_finds_change"));
  if (entry_ == nullptr) {
    dlclose(library_);
    throw std::runtime_error("the op library " + path + " has no deltaonnx_gate_finds_change (built before it?)");
  }
}

GateCheck::~GateCheck() {
  if (library_ != nullptr) dlclose(library_);
}

bool GateCheck::finds_change(const std::string& rule, float threshold, int64_t gate_block, float gate_hard,
                             const int64_t shape[4], const float* x, const float* x_ref, const uint8_t* map,
                             const int64_t map_shape[4]) const {
  char error[256] = {0};
  const int found = entry_(rule.c_str(), threshold, gate_block, gate_hard, shape, x, x_ref, map, map_shape, error,
                           sizeof(error));
  if (found < 0) throw std::runtime_error(std::string("deltaonnx_gate_finds_change: ") + error);
  return found == 1;
}

}  // namespace deltaonnx_example

// What the CUDA op kernels need from ORT: attributes with defaults, errors that name the node, the compute
// stream, scratch memory from ORT's allocator, and exceptions turned into OrtStatus at the C boundary.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <onnxruntime_cxx_api.h>

namespace deltaonnx {
namespace cuda {

constexpr const char* kDomain = "com.deltaonnx";
#if defined(DELTAONNX_CUDA_HOST_EMULATION)
// The host-emulated test build (cmake: DELTAONNX_CUDA_EMULATION) runs the same ops on ORT's CPU provider.
constexpr const char* kExecutionProvider = "CPUExecutionProvider";
#else
constexpr const char* kExecutionProvider = "CUDAExecutionProvider";
#endif
// Batch items and channels map to gridDim.y / gridDim.z in some launches.
constexpr int64_t kMaxBatch = 65535;

// A node's attributes, read with defaults. An attribute that is present with another type is an error naming
// the node (ORT's own getters throw for absent attributes too, which is not what optional ones need).
class AttributeReader {
 public:
  AttributeReader(const OrtKernelInfo* info, std::string op);
  const std::string& op() const { return op_; }
  const std::string& node() const { return node_; }
  bool has(const char* name) const;
  int64_t get_int(const char* name, int64_t fallback) const;
  float get_float(const char* name, float fallback) const;
  std::string get_string(const char* name, const std::string& fallback) const;
  std::vector<int64_t> get_ints(const char* name, const std::vector<int64_t>& fallback) const;
  std::vector<float> get_floats(const char* name, const std::vector<float>& fallback) const;
  [[noreturn]] void fail(const std::string& what) const;

 private:
  [[noreturn]] void wrong_type(const char* name, const char* expected) const;
  const OrtKernelInfo* info_;
  std::string op_, node_;
};

std::string node_name_of(const OrtKernelInfo* info);

// "<op> node '<name>': <what>" as an Ort::Exception.
[[noreturn]] void fail(const std::string& op, const std::string& node, const std::string& what,
                       OrtErrorCode code = ORT_INVALID_ARGUMENT);
void check_cuda(cudaError_t error, const std::string& op, const std::string& node, const char* step);

// ORT's CUDA stream of this run; the ops never launch on the default stream.
cudaStream_t compute_stream(const Ort::KernelContext& ctx, const std::string& op, const std::string& node);

// Optional input `index`: nullptr when the node leaves it out (absent or empty name).
const OrtValue* optional_input(const Ort::KernelContext& ctx, size_t index);

std::vector<int64_t> shape_of(const OrtValue* value);
int64_t element_count(const std::vector<int64_t>& shape);
std::string shape_string(const std::vector<int64_t>& shape);

// Device memory for one run from ORT's allocator for the device that holds `like` (its arena: no cudaMalloc per
// run), requested on the compute stream like ORT's own kernels' scratch buffers, and freed when this goes out
// of scope (the arena orders reuse after this stream's queued work).
class DeviceScratch {
 public:
  DeviceScratch(const Ort::KernelContext& ctx, const OrtValue* like, size_t bytes);
  ~DeviceScratch();
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;

  // Carves aligned pieces off the buffer, in the order the caller sized it (see align_up()).
  template <class T>
  T* take(size_t count) {
    T* p = reinterpret_cast<T*>(static_cast<char*>(data_) + offset_);
    offset_ += align_up(count * sizeof(T));
    return p;
  }
  static size_t align_up(size_t bytes) { return (bytes + 255) / 256 * 256; }

 private:
  OrtAllocator* allocator_ = nullptr;
  void* data_ = nullptr;
  size_t offset_ = 0;
};

// Runs `body`, turning any exception into an OrtStatus for ORT (nullptr on success).
template <class Body>
OrtStatusPtr status_of(Body&& body) noexcept {
  try {
    body();
    return nullptr;
  } catch (const Ort::Exception& e) {
    return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_RUNTIME_EXCEPTION, e.what());
  } catch (...) {
    return Ort::GetApi().CreateStatus(ORT_RUNTIME_EXCEPTION, "deltaonnx CUDA op: unknown exception");
  }
}

}  // namespace cuda
}  // namespace deltaonnx

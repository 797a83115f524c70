// What the CUDA op kernels need from ORT beyond the shared op definition (op_definition/): the execution
// provider they register for, the compute stream, scratch memory from ORT's allocator, CUDA errors as
// DeviceError (op_status.h turns them into an OrtStatus naming the op and node).
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include <cuda_runtime_api.h>
#include <onnxruntime_cxx_api.h>

#include "op_definition/op_status.h"

namespace deltaonnx {
namespace cuda {

#if defined(DELTAONNX_CUDA_HOST_EMULATION)
// The host-emulated test build (cmake: DELTAONNX_CUDA_EMULATION) runs the same ops on ORT's CPU provider.
constexpr const char* kExecutionProvider = "CPUExecutionProvider";
#else
constexpr const char* kExecutionProvider = "CUDAExecutionProvider";
#endif
// Batch items and channels map to gridDim.y / gridDim.z in some launches.
constexpr int64_t kMaxBatch = 65535;

// Throws DeviceError "CUDA error in <step>: ..." unless error is cudaSuccess.
void check_cuda(cudaError_t error, const char* step);

// ORT's CUDA stream of this run; the ops never launch on the default stream.
cudaStream_t compute_stream(const Ort::KernelContext& ctx);

int64_t element_count(const std::vector<int64_t>& shape);

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

}  // namespace cuda
}  // namespace deltaonnx

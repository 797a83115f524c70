#include "cuda_common/ort_support.h"

#include <utility>

namespace deltaonnx {
namespace cuda {

void check_cuda(cudaError_t error, const char* step) {
  if (error == cudaSuccess) return;
  throw DeviceError(std::string("CUDA error in ") + step + ": " + cudaGetErrorName(error) + " (" +
                    cudaGetErrorString(error) + ")");
}

cudaStream_t compute_stream(const Ort::KernelContext& ctx) {
#if defined(DELTAONNX_CUDA_HOST_EMULATION)
  (void)ctx;
  return nullptr;  // the emulated launchers run synchronously on the calling thread
#else
  void* stream = ctx.GetGPUComputeStream();
  if (stream == nullptr) throw DeviceError("ORT gave no CUDA compute stream (is the node assigned to CUDAExecutionProvider?)");
  return static_cast<cudaStream_t>(stream);
#endif
}

int64_t element_count(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  return count;
}

DeviceScratch::DeviceScratch(const Ort::KernelContext& ctx, const OrtValue* like, size_t bytes) {
  if (bytes == 0) return;
  Ort::ConstMemoryInfo memory = Ort::ConstValue(like).GetTensorMemoryInfo();
  const OrtMemoryInfo* info = static_cast<const OrtMemoryInfo*>(memory);
  allocator_ = ctx.GetAllocator(*info);
  if (allocator_ == nullptr) throw DeviceError("ORT has no allocator for the device");
#if defined(DELTAONNX_CUDA_HOST_EMULATION)
  data_ = allocator_->Alloc(allocator_, bytes);  // the CPU provider has no stream to order frees on
#else
  // Tied to the compute stream, as ORT's own kernels' scratch: a chunk freed here is reused by another stream
  // only after this stream's work on it is done.
  OrtStatus* status = Ort::GetApi().KernelContext_GetScratchBuffer(ctx.GetOrtKernelContext(), info, bytes, &data_);
  if (status != nullptr) {
    Ort::GetApi().ReleaseStatus(status);
    data_ = nullptr;
  }
#endif
  if (data_ == nullptr) {
    Ort::GetApi().ReleaseAllocator(allocator_);
    allocator_ = nullptr;
    throw DeviceError("could not allocate " + std::to_string(bytes) + " bytes of scratch");
  }
}

DeviceScratch::~DeviceScratch() {
  if (allocator_ == nullptr) return;
  if (data_ != nullptr) allocator_->Free(allocator_, data_);
  Ort::GetApi().ReleaseAllocator(allocator_);
}

}  // namespace cuda
}  // namespace deltaonnx

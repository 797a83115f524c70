#include "cuda_common/ort_support.h"

#include <sstream>
#include <utility>

namespace deltaonnx {
namespace cuda {
namespace {

// Returns true when the ORT call succeeded; a failure (the attribute is absent) is released, not thrown.
bool succeeded(OrtStatus* status) {
  if (status == nullptr) return true;
  Ort::GetApi().ReleaseStatus(status);
  return false;
}

}  // namespace

AttributeReader::AttributeReader(const OrtKernelInfo* info, std::string op)
    : info_(info), op_(std::move(op)), node_(node_name_of(info)) {}

bool AttributeReader::has(const char* name) const {
  // Each typed getter fails for an absent attribute; a present one answers exactly one of them.
  const OrtApi& api = Ort::GetApi();
  size_t size = 0;
  int64_t i = 0;
  float f = 0.f;
  return succeeded(api.KernelInfoGetAttribute_int64(info_, name, &i)) ||
         succeeded(api.KernelInfoGetAttribute_float(info_, name, &f)) ||
         succeeded(api.KernelInfoGetAttribute_string(info_, name, nullptr, &size)) ||
         succeeded(api.KernelInfoGetAttributeArray_int64(info_, name, nullptr, &size)) ||
         succeeded(api.KernelInfoGetAttributeArray_float(info_, name, nullptr, &size));
}

void AttributeReader::fail(const std::string& what) const { cuda::fail(op_, node_, what); }

void AttributeReader::wrong_type(const char* name, const char* expected) const {
  fail(std::string("attribute '") + name + "' must be " + expected);
}

int64_t AttributeReader::get_int(const char* name, int64_t fallback) const {
  int64_t value = 0;
  if (succeeded(Ort::GetApi().KernelInfoGetAttribute_int64(info_, name, &value))) return value;
  if (has(name)) wrong_type(name, "an int");
  return fallback;
}

float AttributeReader::get_float(const char* name, float fallback) const {
  float value = 0.f;
  if (succeeded(Ort::GetApi().KernelInfoGetAttribute_float(info_, name, &value))) return value;
  if (has(name)) wrong_type(name, "a float");
  return fallback;
}

std::string AttributeReader::get_string(const char* name, const std::string& fallback) const {
  size_t size = 0;
  if (!succeeded(Ort::GetApi().KernelInfoGetAttribute_string(info_, name, nullptr, &size))) {
    if (has(name)) wrong_type(name, "a string");
    return fallback;
  }
  std::string value(size, '\0');
  Ort::ThrowOnError(Ort::GetApi().KernelInfoGetAttribute_string(info_, name, &value[0], &size));
  value.resize(size > 0 ? size - 1 : 0);  // size counts the terminating NUL
  return value;
}

std::vector<int64_t> AttributeReader::get_ints(const char* name, const std::vector<int64_t>& fallback) const {
  size_t size = 0;
  if (!succeeded(Ort::GetApi().KernelInfoGetAttributeArray_int64(info_, name, nullptr, &size))) {
    if (has(name)) wrong_type(name, "a list of ints");
    return fallback;
  }
  std::vector<int64_t> value(size);
  if (size > 0) Ort::ThrowOnError(Ort::GetApi().KernelInfoGetAttributeArray_int64(info_, name, value.data(), &size));
  return value;
}

std::vector<float> AttributeReader::get_floats(const char* name, const std::vector<float>& fallback) const {
  size_t size = 0;
  if (!succeeded(Ort::GetApi().KernelInfoGetAttributeArray_float(info_, name, nullptr, &size))) {
    if (has(name)) wrong_type(name, "a list of floats");
    return fallback;
  }
  std::vector<float> value(size);
  if (size > 0) Ort::ThrowOnError(Ort::GetApi().KernelInfoGetAttributeArray_float(info_, name, value.data(), &size));
  return value;
}

std::string node_name_of(const OrtKernelInfo* info) {
  size_t size = 0;
  if (!succeeded(Ort::GetApi().KernelInfo_GetNodeName(info, nullptr, &size)) || size == 0) return "";
  std::string name(size, '\0');
  if (!succeeded(Ort::GetApi().KernelInfo_GetNodeName(info, &name[0], &size))) return "";
  name.resize(size - 1);
  return name;
}

void fail(const std::string& op, const std::string& node, const std::string& what, OrtErrorCode code) {
  throw Ort::Exception(op + " node '" + node + "': " + what, code);
}

void check_cuda(cudaError_t error, const std::string& op, const std::string& node, const char* step) {
  if (error == cudaSuccess) return;
  fail(op, node, std::string("CUDA error in ") + step + ": " + cudaGetErrorName(error) + " (" +
                     cudaGetErrorString(error) + ")",
       ORT_RUNTIME_EXCEPTION);
}

cudaStream_t compute_stream(const Ort::KernelContext& ctx, const std::string& op, const std::string& node) {
#if defined(DELTAONNX_CUDA_HOST_EMULATION)
  (void)ctx, (void)op, (void)node;
  return nullptr;  // the emulated launchers run synchronously on the calling thread
#else
  void* stream = ctx.GetGPUComputeStream();
  if (stream == nullptr) {
    fail(op, node, "ORT gave no CUDA compute stream (is the node assigned to CUDAExecutionProvider?)",
         ORT_RUNTIME_EXCEPTION);
  }
  return static_cast<cudaStream_t>(stream);
#endif
}

const OrtValue* optional_input(const Ort::KernelContext& ctx, size_t index) {
  if (index >= ctx.GetInputCount()) return nullptr;
  Ort::ConstValue value = ctx.GetInput(index);
  return static_cast<const OrtValue*>(value);
}

std::vector<int64_t> shape_of(const OrtValue* value) {
  return Ort::ConstValue(value).GetTensorTypeAndShapeInfo().GetShape();
}

int64_t element_count(const std::vector<int64_t>& shape) {
  int64_t count = 1;
  for (int64_t d : shape) count *= d;
  return count;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << '[';
  for (size_t i = 0; i < shape.size(); ++i) out << (i ? "," : "") << shape[i];
  out << ']';
  return out.str();
}

DeviceScratch::DeviceScratch(const Ort::KernelContext& ctx, const OrtValue* like, size_t bytes) {
  if (bytes == 0) return;
  Ort::ConstMemoryInfo memory = Ort::ConstValue(like).GetTensorMemoryInfo();
  const OrtMemoryInfo* info = static_cast<const OrtMemoryInfo*>(memory);
  allocator_ = ctx.GetAllocator(*info);
  if (allocator_ == nullptr) throw Ort::Exception("deltaonnx: ORT has no allocator for the device", ORT_FAIL);
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
    throw Ort::Exception("deltaonnx: could not allocate " + std::to_string(bytes) + " bytes of scratch", ORT_FAIL);
  }
}

DeviceScratch::~DeviceScratch() {
  if (allocator_ == nullptr) return;
  if (data_ != nullptr) allocator_->Free(allocator_, data_);
  Ort::GetApi().ReleaseAllocator(allocator_);
}

}  // namespace cuda
}  // namespace deltaonnx

// Entry point of libdeltaonnx_ops_cuda.so: registers DeltaConv, DeltaPool and DeltaMapUnion for
// CUDAExecutionProvider in the domain com.deltaonnx. ORT calls RegisterCustomOps when the library is passed to
// SessionOptions.register_custom_ops_library (Python) / RegisterCustomOpsLibrary (C/C++).
//
// A session registers either this library or the CPU one (libdeltaonnx_ops.so), not both: ORT refuses the same
// domain from two libraries ("Domain already set in registry").
#include <mutex>
#include <vector>

#include <onnxruntime_cxx_api.h>

#include "cuda_common/ort_support.h"
#include "delta_conv/cuda/delta_conv_cuda_op.h"
#include "delta_pool/cuda/delta_pool_cuda_op.h"
#include "map_union/cuda/map_union_cuda_op.h"

namespace {

// ORT 1.21's API, the headers this library is built against; any newer ORT serves it.
constexpr uint32_t kOrtApiVersion = 21;

const deltaonnx::cuda::DeltaConvCudaOp kDeltaConv;
const deltaonnx::cuda::DeltaPoolCudaOp kDeltaPool;
const deltaonnx::cuda::MapUnionCudaOp kMapUnion;

// Domains must outlive every session that used them, so they live as long as the library.
std::mutex domains_mutex;
std::vector<Ort::CustomOpDomain>& registered_domains() {
  static auto* domains = new std::vector<Ort::CustomOpDomain>();
  return *domains;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(kOrtApiVersion);
  if (api == nullptr) {
    // Too old an ORT to serve API 21: report it through the oldest API, which every ORT has.
    const OrtApi* oldest = api_base->GetApi(1);
    return oldest->CreateStatus(ORT_FAIL, "libdeltaonnx_ops_cuda needs ONNX Runtime 1.21 or newer");
  }
  Ort::InitApi(api);
  return deltaonnx::cuda::status_of([&] {
    Ort::CustomOpDomain domain(deltaonnx::cuda::kDomain);
    domain.Add(&kDeltaConv);
    domain.Add(&kDeltaPool);
    domain.Add(&kMapUnion);
    Ort::UnownedSessionOptions(options).Add(domain);
    std::lock_guard<std::mutex> lock(domains_mutex);
    registered_domains().push_back(std::move(domain));
  });
}

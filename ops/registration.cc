// The CPU op library's entry point: ORT calls RegisterCustomOps when a session registers the library.
// One table lists every op of the domain.
#include <onnxruntime_cxx_api.h>

#include <mutex>
#include <vector>

#include "delta_conv/cpu/delta_conv_kernel.h"
#include "delta_pool/cpu/delta_pool_kernel.h"
#include "map_union/map_union_kernel.h"

namespace {

constexpr const char* kDomain = "com.deltaonnx";
constexpr uint32_t kApiVersion = 21;  // what the headers (1.21) define; works on newer runtimes

const deltaonnx::DeltaConvOp kDeltaConv;
const deltaonnx::DeltaPoolOp kDeltaPool;
const deltaonnx::MapUnionOp kMapUnion;
const OrtCustomOp* const kOps[] = {&kDeltaConv, &kDeltaPool, &kMapUnion};

// Domains must outlive every session that uses them.
std::vector<Ort::CustomOpDomain>& domains() {
  static std::vector<Ort::CustomOpDomain> all;
  return all;
}
std::mutex domains_mutex;

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(kApiVersion);
  if (api == nullptr) {
    const OrtApi* oldest = api_base->GetApi(1);
    return oldest->CreateStatus(ORT_FAIL, "deltaonnx needs ONNX Runtime 1.21 or newer (C API version 21)");
  }
  Ort::InitApi(api);
  try {
    Ort::CustomOpDomain domain{kDomain};
    for (const OrtCustomOp* op : kOps) domain.Add(op);
    Ort::UnownedSessionOptions session_options(options);
    session_options.Add(domain);
    std::lock_guard<std::mutex> lock(domains_mutex);
    domains().push_back(std::move(domain));
  } catch (const Ort::Exception& e) {
    return api->CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_FAIL, e.what());
  }
  return nullptr;
}

// Entry point of the experimental library (domain com.deltaonnx.experimental): ORT calls RegisterCustomOps
// when a session registers it. Not part of the product build.
#include <onnxruntime_cxx_api.h>

#include <mutex>
#include <vector>

#include "invoked_conv.h"
#include "invoked_gemm_conv.h"
#include "invoked_nchwc_conv.h"
#include "invoke_probe.h"

namespace {

constexpr const char* kDomain = "com.deltaonnx.experimental";
constexpr uint32_t kApiVersion = 21;  // the headers' version (1.21); newer runtimes serve it too

const ort_invoke::InvokedConvOp kInvokedConv;
const ort_invoke::InvokedGemmConvOp kInvokedGemmConv;
const ort_invoke::InvokeProbeOp kInvokeProbe;
const ort_invoke::InvokedNchwcConvOp kInvokedNchwcConv;

std::vector<Ort::CustomOpDomain>& domains() {  // must outlive every session that uses them
  static std::vector<Ort::CustomOpDomain> all;
  return all;
}
std::mutex domains_mutex;

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(kApiVersion);
  if (api == nullptr) return api_base->GetApi(1)->CreateStatus(ORT_FAIL, "needs ONNX Runtime 1.21 or newer");
  Ort::InitApi(api);
  try {
    Ort::CustomOpDomain domain{kDomain};
    domain.Add(&kInvokedConv);
    domain.Add(&kInvokedGemmConv);
    domain.Add(&kInvokeProbe);
    domain.Add(&kInvokedNchwcConv);
    Ort::UnownedSessionOptions(options).Add(domain);
    std::lock_guard<std::mutex> lock(domains_mutex);
    domains().push_back(std::move(domain));
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_FAIL, e.what());
  }
  return nullptr;
}

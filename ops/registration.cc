// The entry point of both op libraries: ORT calls RegisterCustomOps when a session registers one of them.
// One table lists each op of the domain com.deltaonnx with its CPU and its CUDA kernel; the CPU library
// (libdeltaonnx_ops.so) registers the first column, the CUDA library (libdeltaonnx_ops_cuda.so, built with
// DELTAONNX_CUDA_LIBRARY) the second. Both declare the op through op_definition/op_schemas.h.
//
// A session registers one library, not both: ORT refuses the same domain from two ("Domain already set").
#include <onnxruntime_cxx_api.h>

#include <mutex>
#include <vector>

#include "op_definition/op_schemas.h"
#include "op_definition/shape_reference.h"

#if defined(DELTAONNX_CUDA_LIBRARY)
#include "delta_conv/cuda/delta_conv_cuda_op.h"
#include "delta_pool/cuda/delta_pool_cuda_op.h"
#include "map_union/cuda/map_union_cuda_op.h"
#include "delta_gate/cuda/delta_gate_cuda_op.h"
#include "delta_reorder/cuda/delta_reorder_cuda_op.h"
#include "delta_resize/cuda/delta_resize_cuda_op.h"
#include "channel_ops/cuda/channel_cuda_ops.h"
#include "channel_ops/cuda/channel_gate_cuda_op.h"
#define DELTAONNX_KERNEL(cpu, cuda) cuda
#define DELTAONNX_LIBRARY_NAME "libdeltaonnx_ops_cuda"
#else
#include "delta_conv/cpu/delta_conv_kernel.h"
#include "delta_pool/cpu/delta_pool_kernel.h"
#include "map_union/map_union_kernel.h"
#include "delta_gate/cpu/delta_gate_kernel.h"
#include "delta_reorder/cpu/delta_reorder_kernel.h"
#include "delta_resize/cpu/delta_resize_kernel.h"
#include "channel_ops/cpu/channel_kernels.h"
#include "channel_ops/cpu/channel_gate_kernel.h"
#define DELTAONNX_KERNEL(cpu, cuda) cpu
#define DELTAONNX_LIBRARY_NAME "libdeltaonnx_ops"
#endif

namespace {

// ORT 1.21's API, the headers the libraries are built against; any newer ORT serves it.
constexpr uint32_t kOrtApiVersion = 21;

//                    op               CPU kernel                 CUDA kernel
const DELTAONNX_KERNEL(deltaonnx::DeltaConvOp, deltaonnx::cuda::DeltaConvCudaOp) kDeltaConv;
const DELTAONNX_KERNEL(deltaonnx::DeltaPoolOp, deltaonnx::cuda::DeltaPoolCudaOp) kDeltaPool;
const DELTAONNX_KERNEL(deltaonnx::MapUnionOp, deltaonnx::cuda::MapUnionCudaOp) kMapUnion;
const DELTAONNX_KERNEL(deltaonnx::DeltaGateOp, deltaonnx::cuda::DeltaGateCudaOp) kDeltaGate;
const DELTAONNX_KERNEL(deltaonnx::DeltaReorderOp, deltaonnx::cuda::DeltaReorderCudaOp) kDeltaReorder;
const DELTAONNX_KERNEL(deltaonnx::DeltaResizeOp, deltaonnx::cuda::DeltaResizeCudaOp) kDeltaResize;
const DELTAONNX_KERNEL(deltaonnx::GlobalPoolOp, deltaonnx::cuda::GlobalPoolCudaOp) kGlobalPool;
const DELTAONNX_KERNEL(deltaonnx::ChannelScaleOp, deltaonnx::cuda::ChannelScaleCudaOp) kChannelScale;
const DELTAONNX_KERNEL(deltaonnx::ChannelGateOp, deltaonnx::cuda::ChannelGateCudaOp) kChannelGate;
const OrtCustomOp* const kOps[] = {&kDeltaConv,    &kDeltaPool,   &kMapUnion,     &kDeltaGate,   &kDeltaReorder,
                                   &kDeltaResize, &kGlobalPool, &kChannelScale, &kChannelGate};

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
    return oldest->CreateStatus(ORT_FAIL, DELTAONNX_LIBRARY_NAME " needs ONNX Runtime 1.21 or newer (C API version 21)");
  }
  Ort::InitApi(api);
  deltaonnx::init_shape_reference(api_base);
  try {
    Ort::CustomOpDomain domain(deltaonnx::kDomain);
    for (const OrtCustomOp* op : kOps) domain.Add(op);
    Ort::UnownedSessionOptions(options).Add(domain);
    std::lock_guard<std::mutex> lock(domains_mutex);
    registered_domains().push_back(std::move(domain));
  } catch (const Ort::Exception& e) {
    return api->CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::exception& e) {
    return api->CreateStatus(ORT_FAIL, e.what());
  }
  return nullptr;
}

#include "op_definition/shape_reference.h"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <mutex>

namespace deltaonnx {
namespace {

// OrtApi is a table of function pointers that only ever grows at its end: API 24's table holds 415 pointers,
// GetTensorElementTypeAndShapeDataReference the last (offset 3312 bytes). Our headers (API 21) end at 285, so the
// slot is named here; init_shape_reference checks what it finds before any op uses it.
constexpr uint32_t kShapeReferenceApi = 24;
constexpr size_t kShapeReferenceSlot = 414;

using ShapeReferenceFn = OrtStatus*(ORT_API_CALL*)(const OrtValue* value, ONNXTensorElementDataType* elem_type,
                                                    const int64_t** shape_data, size_t* shape_data_count);

// Set once, by the first registration, before any op of this library exists; atomic because ops of sessions made
// earlier may run in other threads while a later session registers.
std::atomic<ShapeReferenceFn> shape_reference{nullptr};
const OrtApi* reference_api = nullptr;  // API 24's table, to release the call's status; written before shape_reference
std::once_flag shape_reference_once;

// The call must give back the shapes of tensors made here, float and uint8, 4-D, empty and 1-D, with no status.
bool passes_check(const OrtApi* api, ShapeReferenceFn fn) {
  OrtMemoryInfo* cpu = nullptr;
  if (OrtStatus* s = api->CreateCpuMemoryInfo(OrtArenaAllocator, OrtMemTypeDefault, &cpu)) {
    api->ReleaseStatus(s);
    return false;
  }
  struct Case {
    int64_t dims[4];
    size_t rank;
    ONNXTensorElementDataType type;
    size_t element_bytes;
  };
  const Case cases[] = {{{2, 3, 5, 7}, 4, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 4},
                        {{0, 0, 0, 0}, 4, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 4},
                        {{1, 1, 4, 6}, 4, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, 1},
                        {{11, 0, 0, 0}, 1, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, 4}};
  alignas(64) static unsigned char buffer[2 * 3 * 5 * 7 * 4];
  bool ok = true;
  for (const Case& c : cases) {
    size_t count = 1;
    for (size_t d = 0; d < c.rank; ++d) count *= static_cast<size_t>(c.dims[d]);
    OrtValue* value = nullptr;
    if (OrtStatus* s = api->CreateTensorWithDataAsOrtValue(cpu, buffer, count * c.element_bytes, c.dims, c.rank, c.type,
                                                           &value)) {
      api->ReleaseStatus(s);
      ok = false;
      break;
    }
    ONNXTensorElementDataType type = ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    const int64_t* dims = nullptr;
    size_t rank = 0;
    OrtStatus* s = fn(value, &type, &dims, &rank);
    if (s != nullptr) {
      api->ReleaseStatus(s);
      ok = false;
    } else {
      ok = type == c.type && rank == c.rank && (rank == 0 || (dims != nullptr && std::memcmp(dims, c.dims, rank * 8) == 0));
    }
    api->ReleaseValue(value);
    if (!ok) break;
  }
  api->ReleaseMemoryInfo(cpu);
  return ok;
}

}  // namespace

void init_shape_reference(const OrtApiBase* api_base) {
  std::call_once(shape_reference_once, [api_base] {
    const char* wanted = std::getenv("DELTAONNX_SHAPE_QUERY");
    if (wanted != nullptr && std::strcmp(wanted, "allocate") == 0) return;
    const OrtApi* api = api_base->GetApi(kShapeReferenceApi);  // nullptr from an ORT older than 1.24
    if (api == nullptr) return;
    const auto fn = reinterpret_cast<const ShapeReferenceFn*>(api)[kShapeReferenceSlot];
    if (fn == nullptr || !passes_check(api, fn)) return;
    reference_api = api;
    shape_reference.store(fn, std::memory_order_release);
  });
}

bool shape_reference_active() { return shape_reference.load(std::memory_order_acquire) != nullptr; }

bool shape_by_reference(const OrtValue* value, Shape* shape) {
  const ShapeReferenceFn fn = shape_reference.load(std::memory_order_acquire);
  if (fn == nullptr) return false;
  ONNXTensorElementDataType type;
  const int64_t* dims = nullptr;
  size_t rank = 0;
  if (OrtStatus* s = fn(value, &type, &dims, &rank)) {  // not a tensor: the caller's query says why
    reference_api->ReleaseStatus(s);
    return false;
  }
  *shape = Shape(dims, rank);
  return true;
}

}  // namespace deltaonnx

// For tests and diagnostics (ctypes on the loaded library): 1 when shapes are read by reference, else 0. Decided
// when the first session registers the library.
extern "C" __attribute__((visibility("default"))) int DeltaonnxShapesByReference() {
  return deltaonnx::shape_reference_active() ? 1 : 0;
}

// The signature of every op of the domain com.deltaonnx (docs/ops.md), written once (inline: one object per
// program, so the kernels templated on a schema have external linkage): input and output slots with
// their types and whether a node may leave them out. The CPU and the CUDA library declare their ops through
// SchemaOp, so both accept exactly the same nodes; they differ only in the kernel and the execution provider.
#pragma once
#include <onnxruntime_cxx_api.h>

#include <cstddef>

#include "op_definition/attribute_reader.h"
#include "op_definition/op_status.h"

namespace deltaonnx {

inline constexpr const char* kDomain = "com.deltaonnx";

enum class SlotKind { kRequired, kOptional, kVariadic };

struct TensorSlot {
  const char* name;
  ONNXTensorElementDataType type;
  SlotKind kind;
};

struct OpSchema {
  const char* name;
  const TensorSlot* inputs;
  size_t num_inputs;
  const TensorSlot* outputs;
  size_t num_outputs;
};

namespace delta_conv {
enum Input : size_t { kX = 0, kW, kB, kXRef, kYPrev, kMapIn, kZ, kMapZ };
enum Output : size_t { kY = 0, kXRefNext, kMapOut };
}  // namespace delta_conv

namespace delta_pool {
enum Input : size_t { kX = 0, kXRef, kYPrev, kMapIn };
enum Output : size_t { kY = 0, kXRefNext, kMapOut };
}  // namespace delta_pool

inline constexpr ONNXTensorElementDataType kFloat = ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT;
inline constexpr ONNXTensorElementDataType kUint8 = ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8;

// X_ref is optional: at threshold 0 with a change map the converter drops it (docs/design.md); X_ref_next is then
// left out too. map_out is optional: a consumer-less map may be left out (the op keeps it in scratch).
// Z, the sum (a residual Add fused into the conv: Y = act(conv + B + Z)), comes with its change map map_z
// (op_definition/sum_input.h).
inline constexpr TensorSlot kDeltaConvInputs[] = {
    {"X", kFloat, SlotKind::kRequired},     {"W", kFloat, SlotKind::kRequired},
    {"B", kFloat, SlotKind::kOptional},     {"X_ref", kFloat, SlotKind::kOptional},
    {"Y_prev", kFloat, SlotKind::kRequired}, {"map_in", kUint8, SlotKind::kOptional},
    {"Z", kFloat, SlotKind::kOptional},      {"map_z", kUint8, SlotKind::kOptional}};
inline constexpr TensorSlot kDeltaOutputs[] = {
    {"Y", kFloat, SlotKind::kRequired}, {"X_ref_next", kFloat, SlotKind::kOptional}, {"map_out", kUint8, SlotKind::kOptional}};
inline constexpr TensorSlot kDeltaPoolInputs[] = {
    {"X", kFloat, SlotKind::kRequired}, {"X_ref", kFloat, SlotKind::kOptional},
    {"Y_prev", kFloat, SlotKind::kRequired}, {"map_in", kUint8, SlotKind::kOptional}};
inline constexpr TensorSlot kMapUnionInputs[] = {{"maps", kUint8, SlotKind::kVariadic}};
inline constexpr TensorSlot kMapUnionOutputs[] = {{"map", kUint8, SlotKind::kRequired}};

inline constexpr OpSchema kDeltaConvSchema{"DeltaConv", kDeltaConvInputs, 8, kDeltaOutputs, 3};
inline constexpr OpSchema kDeltaPoolSchema{"DeltaPool", kDeltaPoolInputs, 4, kDeltaOutputs, 3};
inline constexpr OpSchema kMapUnionSchema{"DeltaMapUnion", kMapUnionInputs, 1, kMapUnionOutputs, 1};

namespace delta_gate {
enum Input : size_t { kX = 0, kXRef, kMapIn };
enum Output : size_t { kXGated = 0, kMapOut };
}  // namespace delta_gate

// DeltaGate (ops/delta_gate): X_ref is the state (empty on a first frame); map_in the external change map.
inline constexpr TensorSlot kDeltaGateInputs[] = {
    {"X", kFloat, SlotKind::kRequired}, {"X_ref", kFloat, SlotKind::kRequired}, {"map_in", kUint8, SlotKind::kOptional}};
inline constexpr TensorSlot kDeltaGateOutputs[] = {{"X_gated", kFloat, SlotKind::kRequired},
                                            {"map_out", kUint8, SlotKind::kRequired}};
inline constexpr OpSchema kDeltaGateSchema{"DeltaGate", kDeltaGateInputs, 3, kDeltaGateOutputs, 2};

// DeltaReorder (ops/delta_reorder): X [N,C,H,W] in one memory order, Y of the same shape in the other
// (attribute 'to': "blocked" | "nchw"; docs/ops.md#deltareorder). Y is a function of X alone; with its last
// output Y_prev and X's change map it redoes only the marked pixels.
namespace delta_reorder {
enum Input : size_t { kX = 0, kYPrev, kMapIn };
}  // namespace delta_reorder
inline constexpr TensorSlot kDeltaReorderInputs[] = {
    {"X", kFloat, SlotKind::kRequired}, {"Y_prev", kFloat, SlotKind::kOptional}, {"map_in", kUint8, SlotKind::kOptional}};
inline constexpr TensorSlot kDeltaReorderOutputs[] = {{"Y", kFloat, SlotKind::kRequired}};
inline constexpr OpSchema kDeltaReorderSchema{"DeltaReorder", kDeltaReorderInputs, 3, kDeltaReorderOutputs, 1};

// DeltaResize (ops/delta_resize): X [N,C,H,W] upsampled by integer factors, nearest (output pixel (y, x) reads
// (y / fh, x / fw)), NCHW or blocked (attribute 'layout'; docs/ops.md#deltaresize). With its last output Y_prev and X's
// change map it redoes only the outputs of marked pixels; map_out is the map upsampled.
namespace delta_resize {
enum Input : size_t { kX = 0, kYPrev, kMapIn };
enum Output : size_t { kY = 0, kMapOut };
}  // namespace delta_resize
inline constexpr TensorSlot kDeltaResizeOutputs[] = {{"Y", kFloat, SlotKind::kRequired},
                                                     {"map_out", kUint8, SlotKind::kOptional}};
// its inputs are DeltaReorder's (X, Y_prev, map_in)
inline constexpr OpSchema kDeltaResizeSchema{"DeltaResize", kDeltaReorderInputs, 3, kDeltaResizeOutputs, 2};

// DeltaGlobalAveragePool (ops/channel_ops): X [N,Cx,H,W] (NCHW, or blocked: a region's tensor, read as it lies) to
// Y [N,C,1,1] NCHW, each channel's mean; no state (a global pool redoes everything; its readers compare).
// DeltaChannelScale: X [N,Cx,H,W] times S [N or 1,C,1,1] (a squeeze-excite gate, NCHW) per channel, Y in X's layout.
namespace channel_ops {
enum Input : size_t { kX = 0, kScale };
}  // namespace channel_ops
inline constexpr TensorSlot kGlobalPoolInputs[] = {{"X", kFloat, SlotKind::kRequired}};
inline constexpr TensorSlot kChannelScaleInputs[] = {{"X", kFloat, SlotKind::kRequired},
                                                     {"S", kFloat, SlotKind::kRequired}};
inline constexpr TensorSlot kChannelOpOutputs[] = {{"Y", kFloat, SlotKind::kRequired}};
inline constexpr OpSchema kGlobalPoolSchema{"DeltaGlobalAveragePool", kGlobalPoolInputs, 1, kChannelOpOutputs, 1};
inline constexpr OpSchema kChannelScaleSchema{"DeltaChannelScale", kChannelScaleInputs, 2, kChannelOpOutputs, 1};
// DeltaChannelGate (ops/channel_ops): a squeeze-excite gate, S [N,C2,1,1] = act2(W2 act1(W1 mean(X) + B1) + B2), X
// NCHW or blocked; map_out [N,1,1,1] marks the items with a changed pixel in map_in. No state.
namespace channel_gate {
enum Input : size_t { kX = 0, kW1, kB1, kW2, kB2, kMapIn };
enum Output : size_t { kS = 0, kMapOut };
}  // namespace channel_gate
inline constexpr TensorSlot kChannelGateInputs[] = {
    {"X", kFloat, SlotKind::kRequired},  {"W1", kFloat, SlotKind::kRequired}, {"B1", kFloat, SlotKind::kOptional},
    {"W2", kFloat, SlotKind::kRequired}, {"B2", kFloat, SlotKind::kOptional}, {"map_in", kUint8, SlotKind::kOptional}};
inline constexpr TensorSlot kChannelGateOutputs[] = {{"S", kFloat, SlotKind::kRequired},
                                                     {"map_out", kUint8, SlotKind::kOptional}};
inline constexpr OpSchema kChannelGateSchema{"DeltaChannelGate", kChannelGateInputs, 6, kChannelGateOutputs, 2};
// Which of the two a kernel templated on its schema is (compared as types: comparing the objects' addresses is not a
// constant expression on every compiler).
template <const OpSchema& Schema>
inline constexpr bool kIsGlobalPool = false;
template <>
inline constexpr bool kIsGlobalPool<kGlobalPoolSchema> = true;

inline OrtCustomOpInputOutputCharacteristic characteristic_of(SlotKind kind) {
  switch (kind) {
    case SlotKind::kOptional: return INPUT_OUTPUT_OPTIONAL;
    case SlotKind::kVariadic: return INPUT_OUTPUT_VARIADIC;
    default: return INPUT_OUTPUT_REQUIRED;
  }
}

// An ORT custom op declared from `Schema`, whose kernels are `Kernel(const OrtKernelInfo*)` with
// `void compute(OrtKernelContext*)`, both wrapped so no exception reaches ORT. Derived may add
// GetExecutionProviderType (the CUDA library does).
template <class Derived, class Kernel, const OpSchema& Schema>
struct SchemaOp : Ort::CustomOpBase<Derived, Kernel, /*WithStatus=*/true> {
  OrtStatusPtr CreateKernelV2(const OrtApi& /*api*/, const OrtKernelInfo* info, void** kernel) const {
    return op_status(Schema.name, node_name_of(info), [&] { *kernel = new Kernel(info); });
  }
  const char* GetName() const { return Schema.name; }
  size_t GetInputTypeCount() const { return Schema.num_inputs; }
  ONNXTensorElementDataType GetInputType(size_t i) const { return Schema.inputs[i].type; }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return characteristic_of(Schema.inputs[i].kind);
  }
  size_t GetOutputTypeCount() const { return Schema.num_outputs; }
  ONNXTensorElementDataType GetOutputType(size_t i) const { return Schema.outputs[i].type; }
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t i) const {
    return characteristic_of(Schema.outputs[i].kind);
  }
  int GetVariadicInputMinArity() const { return 1; }
  bool GetVariadicInputHomogeneity() const { return true; }
};

// The kernel side: every kernel keeps its node's name and runs compute() under op_status.
template <const OpSchema& Schema>
class SchemaKernel {
 public:
  explicit SchemaKernel(const OrtKernelInfo* info) : node_(node_name_of(info)) {}
  const std::string& node() const { return node_; }

 protected:
  template <class Body>
  OrtStatusPtr guarded(Body&& body) const {
    return op_status(Schema.name, node_, std::forward<Body>(body));
  }

 private:
  std::string node_;
};

}  // namespace deltaonnx

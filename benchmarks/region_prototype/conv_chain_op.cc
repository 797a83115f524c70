// Prototype (not part of the op library): what one ORT node running a chain of convs costs per conv, against a node
// per conv. Issue 15's small models lose 1-2 us per Delta op to ORT's dispatch of a custom op and the op's own reads
// of its inputs, outputs and shapes; a "region" op that runs several convs of a blocked region through one call would
// pay those once. This op, ConvChain (domain deltaonnx.prototype), takes X [1, C, H, W] (C = 16), W [K, 16, 16]
// and B [K, 16], both constant, and runs K 1x1 convs with Relu through ORT's NCHWc Conv (invoked, as DeltaConv's
// dense path invokes it), ping-ponging two blocked buffers, with one ReorderInput before and one ReorderOutput after.
// ConvChainOutputs does the same but gives every conv's blocked output to ORT as an output of the node (K outputs,
// each through GetOutput), as a chain keeping each member's Y as its state would have to.
// Compiled on first use by region_prototype.py (build()), which checks it against dense ORT and times it against
// dense ORT's chain and the DeltaConv chain (docs/decisions/region-op.md).
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>

#include <cstdlib>
#include <memory>
#include <mutex>
#include <vector>

namespace {

constexpr int64_t kBlock = 16;
constexpr const char* kNchwc = "com.microsoft.nchwc";

struct ChainKernel {
  ChainKernel(const OrtKernelInfo* raw, bool outputs) : outputs_(outputs) {
    Ort::ConstKernelInfo info(raw);
    int constant = 0;
    Ort::ConstValue w = info.GetTensorConstantInput(1, &constant);
    if (!constant) throw std::runtime_error("ConvChain: W must be constant");
    Ort::ConstValue b = info.GetTensorConstantInput(2, &constant);
    if (!constant) throw std::runtime_error("ConvChain: B must be constant");
    const std::vector<int64_t> ws = w.GetTensorTypeAndShapeInfo().GetShape();
    count_ = ws[0];
    cpu_ = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeDefault);
    const float* wd = w.GetTensorData<float>();
    const float* bd = b.GetTensorData<float>();
    weights_.resize(static_cast<size_t>(count_ * kBlock * kBlock));
    bias_.assign(bd, bd + count_ * kBlock);
    const int64_t w_shape[4] = {kBlock, kBlock, 1, 1}, b_shape[1] = {kBlock};
    for (int64_t k = 0; k < count_; ++k) {
      float* dst = weights_.data() + k * kBlock * kBlock;  // OIHWBiBo of one block: [in lane][out lane]
      for (int64_t o = 0; o < kBlock; ++o)
        for (int64_t i = 0; i < kBlock; ++i) dst[i * kBlock + o] = wd[(k * kBlock + o) * kBlock + i];
      w_values_.push_back(Ort::Value::CreateTensor<float>(cpu_, dst, kBlock * kBlock, w_shape, 4));
      b_values_.push_back(Ort::Value::CreateTensor<float>(cpu_, bias_.data() + k * kBlock, kBlock, b_shape, 1));
    }
    const char* type_names[] = {"T"};
    const ONNXTensorElementDataType types[] = {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT};
    const int64_t zero = 0, one = 1, ones[2] = {1, 1}, pads[4] = {0, 0, 0, 0};
    const std::string relu = "Relu", notset = "NOTSET";
    Ort::OpAttr in_attrs[] = {Ort::OpAttr("channels_last", &zero, 1, ORT_OP_ATTR_INT)};
    reorder_in_ = Ort::Op::Create(raw, "ReorderInput", kNchwc, 1, type_names, types, 1, in_attrs, 1, 1, 1);
    std::vector<Ort::OpAttr> conv_attrs;
    conv_attrs.emplace_back("kernel_shape", ones, 2, ORT_OP_ATTR_INTS);
    conv_attrs.emplace_back("strides", ones, 2, ORT_OP_ATTR_INTS);
    conv_attrs.emplace_back("dilations", ones, 2, ORT_OP_ATTR_INTS);
    conv_attrs.emplace_back("pads", pads, 4, ORT_OP_ATTR_INTS);
    conv_attrs.emplace_back("group", &one, 1, ORT_OP_ATTR_INT);
    conv_attrs.emplace_back("auto_pad", notset.data(), static_cast<int>(notset.size()), ORT_OP_ATTR_STRING);
    conv_attrs.emplace_back("activation", relu.data(), static_cast<int>(relu.size()), ORT_OP_ATTR_STRING);
    conv_ = Ort::Op::Create(raw, "Conv", kNchwc, 1, type_names, types, 1, conv_attrs.data(), conv_attrs.size(), 3, 1);
    const int64_t channels = kBlock;
    Ort::OpAttr out_attrs[] = {Ort::OpAttr("channels_last", &zero, 1, ORT_OP_ATTR_INT),
                               Ort::OpAttr("channels", &channels, 1, ORT_OP_ATTR_INT)};
    reorder_out_ = Ort::Op::Create(raw, "ReorderOutput", kNchwc, 1, type_names, types, 1, out_attrs, 2, 1, 1);
  }

  void Compute(OrtKernelContext* raw) {
    Ort::KernelContext ctx(raw);
    Ort::ConstValue x = ctx.GetInput(0);
    const std::vector<int64_t> xs = x.GetTensorTypeAndShapeInfo().GetShape();
    const int64_t plane = xs[2] * xs[3], count = kBlock * plane;
    Ort::UnownedValue y = ctx.GetOutput(0, xs.data(), xs.size());
    if (outputs_) {  // conv k reads output k (k > 0: the last conv's) and writes output k + 1
      thread_local std::vector<float> first;
      first.resize(static_cast<size_t>(count));
      Ort::Value a = Ort::Value::CreateTensor<float>(cpu_, first.data(), count, xs.data(), 4);
      const OrtValue* in[] = {x};
      OrtValue* out[] = {a};
      reorder_in_.Invoke(raw, in, 1, out, 1);
      const OrtValue* src = a;
      Ort::UnownedValue last{nullptr};
      for (int64_t k = 0; k < count_; ++k) {
        last = ctx.GetOutput(static_cast<size_t>(1 + k), xs.data(), xs.size());
        const OrtValue* conv_in[] = {src, w_values_[k], b_values_[k]};
        OrtValue* conv_out[] = {last};
        conv_.Invoke(raw, conv_in, 3, conv_out, 1);
        src = last;
      }
      const OrtValue* tail_in[] = {src};
      OrtValue* tail_out[] = {y};
      reorder_out_.Invoke(raw, tail_in, 1, tail_out, 1);
      return;
    }
    thread_local std::vector<float> ping, pong;  // the chain's blocked buffers
    ping.resize(static_cast<size_t>(count));
    pong.resize(static_cast<size_t>(count));
    Ort::Value a = Ort::Value::CreateTensor<float>(cpu_, ping.data(), count, xs.data(), 4);
    Ort::Value b = Ort::Value::CreateTensor<float>(cpu_, pong.data(), count, xs.data(), 4);
    {
      const OrtValue* in[] = {x};
      OrtValue* out[] = {a};
      reorder_in_.Invoke(raw, in, 1, out, 1);
    }
    for (int64_t k = 0; k < count_; ++k) {
      Ort::Value& src = k % 2 == 0 ? a : b;
      Ort::Value& dst = k % 2 == 0 ? b : a;
      const OrtValue* in[] = {src, w_values_[k], b_values_[k]};
      OrtValue* out[] = {dst};
      conv_.Invoke(raw, in, 3, out, 1);
    }
    const OrtValue* in[] = {count_ % 2 == 0 ? a : b};
    OrtValue* out[] = {y};
    reorder_out_.Invoke(raw, in, 1, out, 1);
  }

  bool outputs_ = false;
  int64_t count_ = 0;
  std::vector<float> weights_, bias_;
  Ort::MemoryInfo cpu_{nullptr};
  std::vector<Ort::Value> w_values_, b_values_;
  Ort::Op reorder_in_{nullptr}, conv_{nullptr}, reorder_out_{nullptr};
};

struct ChainOp : Ort::CustomOpBase<ChainOp, ChainKernel> {
  explicit ChainOp(bool outputs) : outputs_(outputs) {}
  void* CreateKernel(const OrtApi&, const OrtKernelInfo* info) const { return new ChainKernel(info, outputs_); }
  const char* GetName() const { return outputs_ ? "ConvChainOutputs" : "ConvChain"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  size_t GetOutputTypeCount() const { return outputs_ ? 2 : 1; }  // Y, then (ConvChainOutputs) each conv's output
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t index) const {
    return outputs_ && index == 1 ? INPUT_OUTPUT_VARIADIC : INPUT_OUTPUT_REQUIRED;
  }
  bool outputs_;
};

ChainOp chain_op(false), chain_outputs_op(true);
std::mutex domains_mutex;
std::vector<Ort::CustomOpDomain> domains;

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  Ort::InitApi(api_base->GetApi(21));
  Ort::CustomOpDomain domain("deltaonnx.prototype");
  domain.Add(&chain_op);
  domain.Add(&chain_outputs_op);
  Ort::UnownedSessionOptions(options).Add(domain);
  std::lock_guard<std::mutex> lock(domains_mutex);
  domains.push_back(std::move(domain));
  return nullptr;
}

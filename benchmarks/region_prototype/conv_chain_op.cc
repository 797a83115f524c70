// Prototype (not part of the op library): what one ORT node running a chain of convs costs per conv, against a node
// per conv. Issue 15's small models lose 1-2 us per Delta op to ORT's dispatch of a custom op and the op's own reads
// of its inputs, outputs and shapes; a "region" op that runs several convs of a blocked region through one call would
// pay those once (docs/decisions/region-op.md).
//
// ConvChain (domain deltaonnx.prototype): X [1, C, H, W] (C a multiple of 16), then the chain's constant weights:
// P [Kp, C, C] and BP [Kp, C] for its 1x1 convs, D [Kd, C, 3, 3] and BD [Kd, C] for its depthwise 3x3 convs (pad 1,
// stride 1). Attribute `kinds` (INTS) orders the members, 0 = the next 1x1, 1 = the next depthwise; every member has
// Relu. Each runs through ORT's invoked NCHWc Conv (as DeltaConv's dense path does), after one ReorderInput, before
// one ReorderOutput into Y. With `keep_outputs` = 1 every member's blocked output is also an output of the node (K more,
// each through GetOutput), as a chain keeping each member's Y as its state would; else two buffers in turn.
// Compiled on first use by region_prototype.py (build()), which checks it against dense ORT and times it.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>

#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr int64_t kBlock = 16;
constexpr const char* kNchwc = "com.microsoft.nchwc";

struct Member {
  bool depthwise = false;
  Ort::Value w{nullptr}, b{nullptr};
};

struct ChainKernel {
  explicit ChainKernel(const OrtKernelInfo* raw) {
    Ort::ConstKernelInfo info(raw);
    kinds_ = info.GetAttributes<int64_t>("kinds");
    outputs_ = info.GetAttribute<int64_t>("keep_outputs") != 0;
    auto constant = [&](size_t index) {
      int is_constant = 0;
      Ort::ConstValue v = info.GetTensorConstantInput(index, &is_constant);
      if (!is_constant) throw std::runtime_error("ConvChain: weights must be constant");
      return v;
    };
    Ort::ConstValue p = constant(1), bp = constant(2), d = constant(3), bd = constant(4);
    channels_ = p.GetTensorTypeAndShapeInfo().GetShape()[1];
    const int64_t C = channels_, blocks = C / kBlock;
    if (C % kBlock != 0) throw std::runtime_error("ConvChain: C must be a multiple of 16");
    cpu_ = Ort::MemoryInfo::CreateCpu(OrtDeviceAllocator, OrtMemTypeDefault);
    const float *pw = p.GetTensorData<float>(), *dw = d.GetTensorData<float>();
    const float *pb = bp.GetTensorData<float>(), *db = bd.GetTensorData<float>();
    int64_t next_p = 0, next_d = 0;
    storage_.reserve(kinds_.size() * 2);
    for (int64_t kind : kinds_) {
      Member m;
      m.depthwise = kind == 1;
      const int64_t taps = m.depthwise ? 9 : 1, inputs = m.depthwise ? 1 : C;
      storage_.emplace_back(static_cast<size_t>(C * inputs * taps), 0.f);
      float* dst = storage_.back().data();
      if (m.depthwise) {  // [C/b][1][3][3][b out]
        const float* src = dw + next_d * C * 9;
        for (int64_t c = 0; c < C; ++c)
          for (int64_t t = 0; t < 9; ++t) dst[((c / kBlock) * 9 + t) * kBlock + c % kBlock] = src[c * 9 + t];
      } else {  // [C/b out][C/b in][1][1][b in][b out]
        const float* src = pw + next_p * C * C;
        for (int64_t o = 0; o < C; ++o)
          for (int64_t i = 0; i < C; ++i)
            dst[((o / kBlock) * blocks + i / kBlock) * kBlock * kBlock + (i % kBlock) * kBlock + o % kBlock] =
                src[o * C + i];
      }
      const int64_t w_shape[4] = {C, inputs, m.depthwise ? 3 : 1, m.depthwise ? 3 : 1}, b_shape[1] = {C};
      m.w = Ort::Value::CreateTensor<float>(cpu_, dst, static_cast<size_t>(C * inputs * taps), w_shape, 4);
      const float* bias = m.depthwise ? db + next_d * C : pb + next_p * C;
      storage_.emplace_back(bias, bias + C);
      m.b = Ort::Value::CreateTensor<float>(cpu_, storage_.back().data(), static_cast<size_t>(C), b_shape, 1);
      (m.depthwise ? next_d : next_p) += 1;
      members_.push_back(std::move(m));
    }
    const char* type_names[] = {"T"};
    const ONNXTensorElementDataType types[] = {ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT};
    const int64_t zero = 0, one = 1, ones[2] = {1, 1}, threes[2] = {3, 3}, no_pads[4] = {0, 0, 0, 0};
    const int64_t pads[4] = {1, 1, 1, 1};
    const std::string relu = "Relu", notset = "NOTSET";
    Ort::OpAttr in_attrs[] = {Ort::OpAttr("channels_last", &zero, 1, ORT_OP_ATTR_INT)};
    reorder_in_ = Ort::Op::Create(raw, "ReorderInput", kNchwc, 1, type_names, types, 1, in_attrs, 1, 1, 1);
    auto conv = [&](bool depthwise) {
      std::vector<Ort::OpAttr> a;
      a.emplace_back("kernel_shape", depthwise ? threes : ones, 2, ORT_OP_ATTR_INTS);
      a.emplace_back("strides", ones, 2, ORT_OP_ATTR_INTS);
      a.emplace_back("dilations", ones, 2, ORT_OP_ATTR_INTS);
      a.emplace_back("pads", depthwise ? pads : no_pads, 4, ORT_OP_ATTR_INTS);
      a.emplace_back("group", depthwise ? &C : &one, 1, ORT_OP_ATTR_INT);
      a.emplace_back("auto_pad", notset.data(), static_cast<int>(notset.size()), ORT_OP_ATTR_STRING);
      a.emplace_back("activation", relu.data(), static_cast<int>(relu.size()), ORT_OP_ATTR_STRING);
      return Ort::Op::Create(raw, "Conv", kNchwc, 1, type_names, types, 1, a.data(), a.size(), 3, 1);
    };
    pointwise_ = conv(false);
    depthwise_ = conv(true);
    Ort::OpAttr out_attrs[] = {Ort::OpAttr("channels_last", &zero, 1, ORT_OP_ATTR_INT),
                               Ort::OpAttr("channels", &C, 1, ORT_OP_ATTR_INT)};
    reorder_out_ = Ort::Op::Create(raw, "ReorderOutput", kNchwc, 1, type_names, types, 1, out_attrs, 2, 1, 1);
  }

  void Compute(OrtKernelContext* raw) {
    Ort::KernelContext ctx(raw);
    Ort::ConstValue x = ctx.GetInput(0);
    const std::vector<int64_t> xs = x.GetTensorTypeAndShapeInfo().GetShape();
    const int64_t count = channels_ * xs[2] * xs[3];
    Ort::UnownedValue y = ctx.GetOutput(0, xs.data(), xs.size());
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
    const OrtValue* src = a;
    for (size_t k = 0; k < members_.size(); ++k) {
      OrtValue* dst = nullptr;
      Ort::UnownedValue given{nullptr};
      if (outputs_) {
        given = ctx.GetOutput(1 + k, xs.data(), xs.size());
        dst = given;
      } else {
        dst = src == static_cast<const OrtValue*>(a) ? static_cast<OrtValue*>(b) : static_cast<OrtValue*>(a);
      }
      const OrtValue* in[] = {src, members_[k].w, members_[k].b};
      OrtValue* out[] = {dst};
      (members_[k].depthwise ? depthwise_ : pointwise_).Invoke(raw, in, 3, out, 1);
      src = dst;
    }
    const OrtValue* in[] = {src};
    OrtValue* out[] = {y};
    reorder_out_.Invoke(raw, in, 1, out, 1);
  }

  std::vector<int64_t> kinds_;
  bool outputs_ = false;
  int64_t channels_ = 0;
  std::vector<std::vector<float>> storage_;  // blocked weights and biases, referenced by the members' values
  std::vector<Member> members_;
  Ort::MemoryInfo cpu_{nullptr};
  Ort::Op reorder_in_{nullptr}, pointwise_{nullptr}, depthwise_{nullptr}, reorder_out_{nullptr};
};

struct ChainOp : Ort::CustomOpBase<ChainOp, ChainKernel> {
  void* CreateKernel(const OrtApi&, const OrtKernelInfo* info) const { return new ChainKernel(info); }
  const char* GetName() const { return "ConvChain"; }
  size_t GetInputTypeCount() const { return 5; }
  ONNXTensorElementDataType GetInputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  size_t GetOutputTypeCount() const { return 2; }  // Y, then (keep_outputs = 1) each member's blocked output
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
  OrtCustomOpInputOutputCharacteristic GetOutputCharacteristic(size_t index) const {
    return index == 1 ? INPUT_OUTPUT_VARIADIC : INPUT_OUTPUT_REQUIRED;
  }
  int GetVariadicOutputMinArity() const { return 0; }
};

ChainOp chain_op;
std::mutex domains_mutex;
std::vector<Ort::CustomOpDomain> domains;

}  // namespace

extern "C" __attribute__((visibility("default"))) OrtStatus* ORT_API_CALL
RegisterCustomOps(OrtSessionOptions* options, const OrtApiBase* api_base) {
  Ort::InitApi(api_base->GetApi(21));
  Ort::CustomOpDomain domain("deltaonnx.prototype");
  domain.Add(&chain_op);
  Ort::UnownedSessionOptions(options).Add(domain);
  std::lock_guard<std::mutex> lock(domains_mutex);
  domains.push_back(std::move(domain));
  return nullptr;
}

#include "delta_gate/gate_op_inputs.h"

#include "op_definition/attribute_reader.h"
#include "op_definition/op_schemas.h"
#include "op_definition/ort_tensors.h"

namespace deltaonnx {

GateSpec read_gate_spec(const OrtKernelInfo* info) {
  const AttributeReader attributes(info);
  GateSpec spec;
  const std::string error = GateSpec::make(attributes.get_string("rule", "block"), attributes.get_float("threshold", 0.f),
                                           attributes.get_int("gate_block", kDefaultGateBlock),
                                           attributes.get_float("gate_hard", -1.f), &spec);
  if (!error.empty()) attributes.fail(error);
  return spec;
}

GateInputs read_gate_inputs(const Ort::KernelContext& ctx, const GateSpec& spec) {
  GateInputs in;
  const KernelInputs inputs(ctx);
  in.shape = input_shape_4d(inputs, delta_gate::kX, "X");
  GateRun& run = in.run;
  run.batch = in.shape[0];
  run.channels = in.shape[1];
  run.height = in.shape[2];
  run.width = in.shape[3];
  run.x = inputs.data<float>(delta_gate::kX);
  if (inputs.value(delta_gate::kXRef) == nullptr)
    throw UserError("the state input X_ref is required (feed an empty tensor on the first frame)");
  if (inputs.shape(delta_gate::kXRef) == in.shape) run.x_ref = inputs.data<float>(delta_gate::kXRef);  // rule 1
  if (inputs.value(delta_gate::kMapIn) != nullptr) {
    const Shape& ms = inputs.shape(delta_gate::kMapIn);
    if (!holds_no_elements(ms)) {  // an empty map is no map
      if (ms.size() != 4 || ms[0] != in.shape[0] || ms[1] != 1)
        throw UserError("the change map must be [N,1,H,W] or one cell per block, got " + shape_text(ms) + " for X " +
                        shape_text(in.shape));
      const std::string error = check_gate_map(spec, in.shape[2], in.shape[3], ms[2], ms[3], &run.map_per_block);
      if (!error.empty()) throw UserError(error);
      run.map_in = inputs.data<uint8_t>(delta_gate::kMapIn);
    }
  }
  return in;
}

}  // namespace deltaonnx

"""Single-op ONNX models of the Delta ops for the op tests (one builder each, shared by the test files)."""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper, numpy_helper

DOMAIN = "com.deltaonnx"


def _model(node: onnx.NodeProto, inputs: list, outputs: list, initializers: list) -> onnx.ModelProto:
    graph = helper.make_graph([node], node.op_type.lower(), inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 10
    return model


def conv_model(attrs: dict, *, W, B=None, with_map=False, with_map_out=True, ref_input=True,
               name="delta_conv_0") -> onnx.ModelProto:
    """DeltaConv with W (and B) as initializers; ref_input=False leaves X_ref and X_ref_next out (a dropped
    reference, which needs with_map)."""
    inputs = ["X", "W", "B" if B is not None else "", "X_ref" if ref_input else "", "Y_prev"] + (["map_in"] if with_map else [])
    outputs = ["Y", "X_ref_next" if ref_input else ""] + (["map_out"] if with_map_out else [])
    node = helper.make_node("DeltaConv", inputs, outputs, domain=DOMAIN, name=name, **attrs)
    graph_inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                    for n in ("X", "X_ref", "Y_prev") if n != "X_ref" or ref_input]
    if with_map:
        graph_inputs.append(helper.make_tensor_value_info("map_in", TensorProto.UINT8, None))
    graph_outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                     for n in ("Y", "X_ref_next") if n != "X_ref_next" or ref_input]
    if with_map_out:
        graph_outputs.append(helper.make_tensor_value_info("map_out", TensorProto.UINT8, None))
    initializers = [numpy_helper.from_array(W, "W")] + ([numpy_helper.from_array(B, "B")] if B is not None else [])
    return _model(node, graph_inputs, graph_outputs, initializers)


def pool_model(attrs: dict, *, with_map=False, name="delta_pool_0") -> onnx.ModelProto:
    inputs = ["X", "X_ref", "Y_prev"] + (["map_in"] if with_map else [])
    node = helper.make_node("DeltaPool", inputs, ["Y", "X_ref_next", "map_out"], domain=DOMAIN, name=name, **attrs)
    graph_inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("X", "X_ref", "Y_prev")]
    if with_map:
        graph_inputs.append(helper.make_tensor_value_info("map_in", TensorProto.UINT8, None))
    graph_outputs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None),
                     helper.make_tensor_value_info("X_ref_next", TensorProto.FLOAT, None),
                     helper.make_tensor_value_info("map_out", TensorProto.UINT8, None)]
    return _model(node, graph_inputs, graph_outputs, [])

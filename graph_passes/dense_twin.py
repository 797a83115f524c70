"""The dense twin of a converted model: each DeltaConv back to Conv (+ its fused activation), each DeltaPool back
to MaxPool, each DeltaGate and DeltaReorder an Identity (the twin is NCHW throughout), each DeltaResize a nearest
Resize by its factors, each DeltaGlobalAveragePool a GlobalAveragePool, each DeltaChannelScale a Mul and each
DeltaChannelGate its pool, two 1x1 Convs and their activations, the state and the change maps gone.

DeltaSession runs it for a stream whose frames change almost everywhere (a moving camera), where skipping
unchanged pixels cannot pay: ORT then optimises the twin like the original model (NCHWc kernels, fusions),
so such a stream costs what dense ORT costs. The twin carries the converter's folding (BatchNormalization
folded into the weights), so its outputs equal the original's to float rounding."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from .metadata import ConversionMetadata
from .protocol import DELTA_CONV_SUM_INPUT, DOMAIN

_CONV_ATTRIBUTES = ("kernel_shape", "strides", "pads", "dilations", "group", "auto_pad")
# Delta ops whose dense twin is one ONNX op of the same inputs, no attributes.
_PLAIN_TWINS = {"DeltaGlobalAveragePool": "GlobalAveragePool", "DeltaChannelScale": "Mul"}
_POOL_ATTRIBUTES = ("kernel_shape", "strides", "pads", "dilations", "ceil_mode", "auto_pad")


def _attributes(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def _activation_nodes(name: str, act: str, params: list, source: str, out: str, opset: int, channels: int,
                      initializers: list) -> list[onnx.NodeProto]:
    """ONNX nodes computing `out` = act(`source`), as DeltaConv defines its activations (docs/ops.md)."""
    def const(suffix: str, value, dtype=np.float32) -> str:
        tensor = numpy_helper.from_array(np.asarray(value, dtype=dtype), f"{name}.{suffix}")
        initializers.append(tensor)
        return tensor.name

    if act in ("Relu", "Sigmoid", "Tanh"):
        return [helper.make_node(act, [source], [out])]
    if act == "LeakyRelu":
        return [helper.make_node("LeakyRelu", [source], [out], alpha=params[0] if params else 0.01)]
    if act in ("Clip", "Relu6"):
        lo, hi = (params[0], params[1]) if len(params) == 2 else ((0.0, 6.0) if act == "Relu6" else (-np.inf, np.inf))
        if opset < 11:
            return [helper.make_node("Clip", [source], [out], min=float(lo), max=float(hi))]
        return [helper.make_node("Clip", [source, const("min", lo), const("max", hi)], [out])]
    if act in ("SiLU", "Swish"):
        return [helper.make_node("Sigmoid", [source], [f"{name}.sigmoid"]),
                helper.make_node("Mul", [source, f"{name}.sigmoid"], [out])]
    if act == "HardSigmoid":
        alpha, beta = (params[0], params[1]) if len(params) == 2 else (0.2, 0.5)
        return [helper.make_node("HardSigmoid", [source], [out], alpha=alpha, beta=beta)]
    if act == "HardSwish":
        if opset >= 14:
            return [helper.make_node("HardSwish", [source], [out])]
        return [helper.make_node("HardSigmoid", [source], [f"{name}.hs"], alpha=1.0 / 6.0, beta=0.5),
                helper.make_node("Mul", [source, f"{name}.hs"], [out])]
    if act == "PRelu":
        slope = np.asarray(params, np.float32).reshape(-1, 1, 1) if len(params) == channels else np.asarray(params, np.float32)
        return [helper.make_node("PRelu", [source, const("slope", slope)], [out])]
    if act == "Softmax" and params and params[0] != channels:  # over each group of G channels of each pixel
        return _group_softmax_nodes(name, int(params[0]), source, out, opset, channels, const)
    if act == "Softmax":  # over the channels of each pixel
        if opset >= 13:
            return [helper.make_node("Softmax", [source], [out], axis=1)]
        # before opset 13 Softmax flattens the dims from `axis` on: channels last first (ORT cancels the pairs)
        return [helper.make_node("Transpose", [source], [f"{name}.nhwc"], perm=[0, 2, 3, 1]),
                helper.make_node("Softmax", [f"{name}.nhwc"], [f"{name}.softmax"], axis=3),
                helper.make_node("Transpose", [f"{name}.softmax"], [out], perm=[0, 3, 1, 2])]
    raise ValueError(f"dense twin: unknown activation {act!r}")


def _group_softmax_nodes(name: str, group: int, source: str, out: str, opset: int, channels: int,
                         const) -> list[onnx.NodeProto]:
    """Softmax over each group of `group` channels: [N, M, H, W] -> [N, M/G, G, H*W], the Softmax over G, and back
    to `source`'s shape. Before opset 13 Softmax flattens the dims from `axis` on, so G goes last first."""
    if channels <= 0 or channels % group:
        raise ValueError(f"dense twin: {name}: Softmax groups of {group} do not divide {channels} output channels")
    grouped = const("groups", [0, channels // group, group, -1], np.int64)
    nodes = [helper.make_node("Shape", [source], [f"{name}.shape"])]
    nodes.append(helper.make_node("Reshape", [source, grouped], [f"{name}.grouped"]))
    if opset >= 13:
        nodes.append(helper.make_node("Softmax", [f"{name}.grouped"], [f"{name}.softmax"], axis=2))
    else:
        nodes += [helper.make_node("Transpose", [f"{name}.grouped"], [f"{name}.last"], perm=[0, 1, 3, 2]),
                  helper.make_node("Softmax", [f"{name}.last"], [f"{name}.normalised"], axis=3),
                  helper.make_node("Transpose", [f"{name}.normalised"], [f"{name}.softmax"], perm=[0, 1, 3, 2])]
    nodes.append(helper.make_node("Reshape", [f"{name}.softmax", f"{name}.shape"], [out]))
    return nodes


def _nearest_resize(node: onnx.NodeProto, initializers: list) -> onnx.NodeProto:
    """DeltaResize as ONNX's Resize (opset 11+, which the converter required of the Resize it replaced): output pixel
    (y, x) reads (y // fh, x // fw), NCHW."""
    factors = [float(f) for f in _attributes(node)["factors"]]
    scales = numpy_helper.from_array(np.array([1.0, 1.0, *factors], np.float32), f"{node.name}.scales")
    roi = numpy_helper.from_array(np.zeros(0, np.float32), f"{node.name}.roi")  # required before opset 13
    initializers.extend([roi, scales])
    return helper.make_node("Resize", [node.input[0], roi.name, scales.name], [node.output[0]], name=node.name,
                            mode="nearest", coordinate_transformation_mode="asymmetric", nearest_mode="floor")


def _activation_of(attrs: dict, key: str = "activation") -> str:
    """A Delta op's activation attribute as a name, "" for none."""
    act = attrs.get(key, b"")
    act = act.decode() if isinstance(act, bytes) else act
    return "" if act in ("", "None", "Identity") else act


def _channel_gate_nodes(node: onnx.NodeProto, opset: int, weights: dict, initializers: list) -> list[onnx.NodeProto]:
    """DeltaChannelGate as the squeeze-excite gate it fused: GlobalAveragePool, Conv (W1, B1), its activation, Conv
    (W2, B2), the gate's activation."""
    attrs = _attributes(node)
    inputs = list(node.input) + [""] * (5 - len(node.input))
    x, w1, b1, w2, b2 = inputs[:5]
    name = node.name
    nodes = [helper.make_node("GlobalAveragePool", [x], [f"{name}.pooled"], name=f"{name}.pool")]
    source = f"{name}.pooled"
    for suffix, w, b, act_key, out in (("reduce", w1, b1, "activation", f"{name}.hidden"),
                                       ("expand", w2, b2, "gate_activation", node.output[0])):
        act = _activation_of(attrs, act_key)
        conv_out = out if not act else f"{name}.{suffix}"
        nodes.append(helper.make_node("Conv", [source, w] + ([b] if b else []), [conv_out], name=f"{name}.{suffix}_conv"))
        if act:
            channels = int(weights[w].dims[0]) if w in weights else 0
            nodes += _activation_nodes(f"{name}.{suffix}", act, list(attrs.get(f"{act_key}_params", [])), conv_out, out,
                                       opset, channels, initializers)
        source = out
    return nodes


def dense_twin(converted: onnx.ModelProto, model_outputs: list[str]) -> onnx.ModelProto:
    """The converted model computed densely: same model inputs, the outputs `model_outputs` only."""
    meta = ConversionMetadata.of(converted)
    state_inputs = {s.past for s in meta.state} | set(meta.change_map_inputs.values()) if meta else set()
    graph = converted.graph
    opset = _opset(converted)
    weights = {t.name: t for t in graph.initializer}
    initializers: list = []
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        # dense: every frame passes the gate whole; the twin is NCHW throughout, so a reorder is a no-op
        if node.domain == DOMAIN and node.op_type in ("DeltaGate", "DeltaReorder"):
            nodes.append(helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name))
            continue
        if node.domain == DOMAIN and node.op_type == "DeltaResize":
            nodes.append(_nearest_resize(node, initializers))
            continue
        if node.domain == DOMAIN and node.op_type in _PLAIN_TWINS:  # the same computation on NCHW tensors
            nodes.append(helper.make_node(_PLAIN_TWINS[node.op_type], list(node.input), [node.output[0]], name=node.name))
            continue
        if node.domain == DOMAIN and node.op_type == "DeltaChannelGate":
            nodes += _channel_gate_nodes(node, opset, weights, initializers)
            continue
        if node.domain != DOMAIN or node.op_type not in ("DeltaConv", "DeltaPool"):
            nodes.append(node)
            continue
        attrs = _attributes(node)
        y = node.output[0]
        if node.op_type == "DeltaPool":
            keep = {k: v for k, v in attrs.items() if k in _POOL_ATTRIBUTES}
            nodes.append(helper.make_node("MaxPool", [node.input[0]], [y], name=node.name, **keep))
            continue
        keep = {k: v for k, v in attrs.items() if k in _CONV_ATTRIBUTES}
        act = _activation_of(attrs)
        conv_inputs = [node.input[0], node.input[1]] + ([node.input[2]] if len(node.input) > 2 and node.input[2] else [])
        channels = int(weights[node.input[1]].dims[0]) if node.input[1] in weights else 0
        z = node.input[DELTA_CONV_SUM_INPUT] if len(node.input) > DELTA_CONV_SUM_INPUT else ""  # the sum input: Conv, then Add, then the activation
        plain = not act
        pre = y if plain and not z else f"{node.name}.conv"
        nodes.append(helper.make_node("Conv", conv_inputs, [pre], name=node.name, **keep))
        if z:
            summed = y if plain else f"{node.name}.sum"
            nodes.append(helper.make_node("Add", [pre, z], [summed], name=f"{node.name}.add"))
            pre = summed
        if plain:
            continue
        nodes += _activation_nodes(node.name, act, list(attrs.get("activation_params", [])), pre, y, opset,
                                   channels, initializers)
    # Keep what the model's outputs need: the change-map plumbing and the state fall away.
    needed = set(model_outputs)
    live = []
    for node in reversed(nodes):
        if any(o and o in needed for o in node.output):
            live.append(node)
            needed.update(i for i in node.input if i)
    live.reverse()
    outputs = {o.name: o for o in graph.output}
    inputs = [i for i in graph.input if i.name not in state_inputs]
    twin_graph = helper.make_graph(
        live, f"{graph.name}_dense", inputs, [outputs[name] for name in model_outputs],
        initializer=[t for t in graph.initializer if t.name in needed] + initializers)
    twin = helper.make_model(twin_graph, opset_imports=[o for o in converted.opset_import if o.domain != DOMAIN])
    twin.ir_version = converted.ir_version
    return twin

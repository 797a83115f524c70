"""What the tests build again and again, written once: single-op models of the Delta ops, ORT sessions with or
without the op library, a dense Conv and its DeltaConv twin, the frames and change maps the op tests feed."""
from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import deltaonnx
from deltaonnx import reference
from deltaonnx.graph_passes.protocol import DOMAIN

EMPTY = np.zeros((0, 0, 0, 0), np.float32)  # the empty state a stream starts from (docs/state_protocol.md)


def value_info(name: str, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    """A graph input/output of unknown shape."""
    return helper.make_tensor_value_info(name, elem, None)


def op_model(nodes: Sequence[onnx.NodeProto], inputs: Sequence, outputs: Sequence, initializers: Sequence = (),
             opset: int = 17) -> onnx.ModelProto:
    """A model of `nodes` that imports the Delta ops' domain; inputs/outputs are ValueInfoProtos or
    (name, element type) pairs."""
    def infos(items):
        return [item if isinstance(item, onnx.ValueInfoProto) else value_info(*item) for item in items]

    graph = helper.make_graph(list(nodes), nodes[0].op_type.lower() if len(nodes) == 1 else "g", infos(inputs),
                              infos(outputs), initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 10  # onnx writes a newer IR by default than ORT reads
    return model


def op_session(model: Union[onnx.ModelProto, bytes], library: Optional[str] = None, *, custom: bool = True,
               threads: int = 1, level: Optional[ort.GraphOptimizationLevel] = None) -> ort.InferenceSession:
    """A CPU session of `model` with the op library registered (`library`, default the built CPU one) unless
    custom=False; `threads` intra-op threads; `level` ORT's graph optimisation level (default ORT's)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if level is not None:
        options.graph_optimization_level = level
    if custom:
        options.register_custom_ops_library(library or deltaonnx.library_path())
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def conv_model(attrs: dict, *, W, B=None, with_map=False, with_map_out=True, ref_input=True,
               name="delta_conv_0") -> onnx.ModelProto:
    """DeltaConv with W (and B) as initializers; ref_input=False leaves X_ref and X_ref_next out (a dropped
    reference, which needs with_map)."""
    inputs = ["X", "W", "B" if B is not None else "", "X_ref" if ref_input else "", "Y_prev"] + (["map_in"] if with_map else [])
    outputs = ["Y", "X_ref_next" if ref_input else ""] + (["map_out"] if with_map_out else [])
    node = helper.make_node("DeltaConv", inputs, outputs, domain=DOMAIN, name=name, **attrs)
    graph_inputs = [value_info(n) for n in ("X", "X_ref", "Y_prev") if n != "X_ref" or ref_input]
    if with_map:
        graph_inputs.append(value_info("map_in", TensorProto.UINT8))
    graph_outputs = [value_info(n) for n in ("Y", "X_ref_next") if n != "X_ref_next" or ref_input]
    if with_map_out:
        graph_outputs.append(value_info("map_out", TensorProto.UINT8))
    initializers = [numpy_helper.from_array(W, "W")] + ([numpy_helper.from_array(B, "B")] if B is not None else [])
    return op_model([node], graph_inputs, graph_outputs, initializers)


def pool_model(attrs: dict, *, with_map=False, name="delta_pool_0") -> onnx.ModelProto:
    inputs = ["X", "X_ref", "Y_prev"] + (["map_in"] if with_map else [])
    node = helper.make_node("DeltaPool", inputs, ["Y", "X_ref_next", "map_out"], domain=DOMAIN, name=name, **attrs)
    graph_inputs = [value_info(n) for n in ("X", "X_ref", "Y_prev")]
    if with_map:
        graph_inputs.append(value_info("map_in", TensorProto.UINT8))
    graph_outputs = [value_info("Y"), value_info("X_ref_next"), value_info("map_out", TensorProto.UINT8)]
    return op_model([node], graph_inputs, graph_outputs)


ORT_ACTIVATIONS = {  # fused name -> (params, ONNX nodes after Conv producing "y" from "c")
    "": ((), lambda: [helper.make_node("Identity", ["c"], ["y"])]),
    "Relu": ((), lambda: [helper.make_node("Relu", ["c"], ["y"])]),
    "LeakyRelu": ((0.1,), lambda: [helper.make_node("LeakyRelu", ["c"], ["y"], alpha=0.1)]),
    "Clip": ((0.0, 6.0), lambda: [helper.make_node("Clip", ["c", "lo", "hi"], ["y"])]),
    "Sigmoid": ((), lambda: [helper.make_node("Sigmoid", ["c"], ["y"])]),
    "SiLU": ((), lambda: [helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Mul", ["c", "s"], ["y"])]),
    "HardSigmoid": ((0.2, 0.5), lambda: [helper.make_node("HardSigmoid", ["c"], ["y"], alpha=0.2, beta=0.5)]),
    "HardSwish": ((), lambda: [helper.make_node("HardSwish", ["c"], ["y"])]),
    "Tanh": ((), lambda: [helper.make_node("Tanh", ["c"], ["y"])]),
    "Softmax": ((), lambda: [helper.make_node("Softmax", ["c"], ["y"], axis=1)]),  # over channels (opset 17)
}


class ConvPair:
    """A dense ORT Conv(+activation) model and the single-node DeltaConv model with the same weights."""

    def __init__(self, w, b, attrs, activation="", act_params=None, threshold=0.0, with_map=False,
                 dense_fraction=0.5, threads=1, delta_attrs=None):
        """delta_attrs: attributes of the DeltaConv node only (e.g. layout)."""
        self.w, self.b, self.attrs = w, b, dict(attrs)
        M = w.shape[0]
        inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if b is not None else [])
        conv_inputs = ["x", "w"] + (["b"] if b is not None else [])
        if activation == "PRelu":
            slope = act_params if act_params is not None else np.linspace(-0.5, 0.5, M).astype(np.float32)
            self.act_params = [float(v) for v in np.ravel(slope)]
            post = [helper.make_node("PRelu", ["c", "slope"], ["y"])]
            inits.append(numpy_helper.from_array(np.asarray(self.act_params, np.float32).reshape(M, 1, 1), "slope"))
        elif activation == "Softmax" and act_params:  # over each group of G channels: [N, M/G, G, H*W] in ORT
            group = int(act_params[0])
            self.act_params = [float(group)]
            post = [helper.make_node("Shape", ["c"], ["c_shape"]),
                    helper.make_node("Reshape", ["c", "groups"], ["grouped"]),
                    helper.make_node("Softmax", ["grouped"], ["normalised"], axis=2),
                    helper.make_node("Reshape", ["normalised", "c_shape"], ["y"])]
            inits.append(numpy_helper.from_array(np.array([0, M // group, group, -1], np.int64), "groups"))
        else:
            params, make_post = ORT_ACTIVATIONS[activation]
            self.act_params = list(params)
            post = make_post()
            if activation == "Clip":
                inits += [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")]
        dense_nodes = [helper.make_node("Conv", conv_inputs, ["c"], **attrs)] + post
        self.dense = op_session(op_model(dense_nodes, [value_info("x")], [value_info("y")], inits), custom=False, threads=threads)
        delta_inits = inits[:2] if b is not None else inits[:1]
        delta_inputs = ["x", "w", "b" if b is not None else "", "x_ref", "y_prev"] + (["map_in"] if with_map else [])
        extra = {"activation_params": self.act_params} if self.act_params else {}
        node = helper.make_node("DeltaConv", delta_inputs, ["y", "x_ref_next", "map"], domain=DOMAIN, name="dc",
                                activation=activation, threshold=threshold, dense_fraction=dense_fraction,
                                **extra, **attrs, **(delta_attrs or {}))
        ins = [value_info("x"), value_info("x_ref"), value_info("y_prev")] + ([value_info("map_in", TensorProto.UINT8)] if with_map else [])
        outs = [value_info("y"), value_info("x_ref_next"), value_info("map", TensorProto.UINT8)]
        self.delta = op_session(op_model([node], ins, outs, delta_inits), threads=threads)
        self.with_map = with_map
        self.activation, self.threshold, self.dense_fraction = activation, threshold, dense_fraction

    def run_dense(self, x):
        return self.dense.run(None, {"x": x})[0]

    def run_delta(self, x, x_ref, y_prev, map_in=None):
        feed = {"x": x, "x_ref": x_ref, "y_prev": y_prev}
        if self.with_map:
            feed["map_in"] = map_in
        return self.delta.run(None, feed)

    def run_reference(self, x, x_ref, y_prev, map_in=None):
        return reference.delta_conv(x, self.w, self.b, x_ref, y_prev, map_in, activation=self.activation,
                                    activation_params=self.act_params, threshold=self.threshold,
                                    dense_fraction=self.dense_fraction, **self.attrs)


def exact_change_map(x, prev):
    """The change map a producer would pass: 1 wherever any channel differs (or no previous frame)."""
    if prev is None or prev.shape != x.shape:
        return np.ones((x.shape[0], 1) + x.shape[2:], np.uint8)
    diff = ~(np.abs(x - prev) <= 0)
    return diff.any(axis=1, keepdims=True).astype(np.uint8)


def marked_frames(rng, shape, count=5, fraction=0.25):
    """`count` NCHW frames and their exact change maps: a first frame (map all 1), then each frame with about
    `fraction` of the pixels (all their channels) given new values, its map marking exactly those."""
    n, c, h, w = shape
    frames, maps = [rng.standard_normal(shape).astype(np.float32)], [np.ones((n, 1, h, w), np.uint8)]
    for _ in range(count - 1):
        marks = (rng.random((n, 1, h, w)) < fraction).astype(np.uint8)
        x = frames[-1].copy()
        x[np.broadcast_to(marks != 0, shape)] = rng.standard_normal(int(marks.sum()) * c).astype(np.float32)
        frames.append(x)
        maps.append(marks)
    return frames, maps


def frame_sequence(rng, shape, kinds):
    """Frames for a sequence of step kinds: first, none, local, global, nan, resize."""
    n, c, h, w = shape
    frames, x = [], None
    for kind in kinds:
        if kind == "first" or x is None:
            x = rng.standard_normal(shape).astype(np.float32)
        elif kind == "none":
            x = x.copy()
        elif kind == "local":
            x = x.copy()
            y0, x0 = rng.integers(0, h), rng.integers(0, w)
            x[rng.integers(0, n), :, y0:y0 + max(1, h // 4), x0:x0 + max(1, w // 5)] += 1.0
        elif kind == "global":
            x = rng.standard_normal(x.shape).astype(np.float32)
        elif kind == "nan":
            x = x.copy()
            x[0, rng.integers(0, c), rng.integers(0, x.shape[2]), rng.integers(0, x.shape[3])] = np.nan
        elif kind == "resize":
            x = rng.standard_normal((n, c, x.shape[2] + 2, x.shape[3] + 3)).astype(np.float32)
        frames.append(x)
    return frames


def assert_close_nan(actual, expected, rtol=1e-4, atol=1e-4):
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True)


def run_copying(session: ort.InferenceSession, seq) -> list[tuple]:
    """Runs a single DeltaConv session (inputs X, X_ref, Y_prev) over frames, the state passed as copies: (Y,
    X_ref_next, map_out) per frame."""
    x_ref, y_prev, outs = EMPTY, EMPTY, []
    for x in seq:
        y, x_ref, map_out = session.run(None, {"X": x, "X_ref": x_ref, "Y_prev": y_prev})
        outs.append((y, x_ref, map_out))
        y_prev = y
    return outs


def run_in_place(session: ort.InferenceSession, feeds, y_shape, ref_shape, device: str = "cpu", device_id: int = 0,
                 names=("X", "X_ref", "Y_prev", "Y", "X_ref_next", "map_out"), map_name=None,
                 fill: float = 0.0) -> list[tuple]:
    """docs/state_protocol.md "In place": one OrtValue (on `device`, every element `fill` at first) bound as both
    past and present state for Y and for X_ref; feeds are X per frame, or (X, map) with map_name the map input's
    name. Per frame (Y, X_ref_next, map_out) as numpy copies. names: X, X_ref, Y_prev, Y, X_ref_next, map_out."""
    x_name, ref_in, y_in, y_out, ref_out, map_out = names
    y_state = ort.OrtValue.ortvalue_from_numpy(np.full(y_shape, fill, np.float32), device, device_id)
    ref_state = ort.OrtValue.ortvalue_from_numpy(np.full(ref_shape, fill, np.float32), device, device_id)
    outs = []
    for t, feed in enumerate(feeds):
        x, change = feed if map_name else (feed, None)
        binding = session.io_binding()
        binding.bind_cpu_input(x_name, x)
        if map_name:
            binding.bind_cpu_input(map_name, change)
        if t == 0:
            binding.bind_cpu_input(ref_in, EMPTY)
            binding.bind_cpu_input(y_in, EMPTY)
        else:
            binding.bind_ortvalue_input(ref_in, ref_state)
            binding.bind_ortvalue_input(y_in, y_state)
        binding.bind_ortvalue_output(y_out, y_state)
        binding.bind_ortvalue_output(ref_out, ref_state)
        binding.bind_output(map_out)
        session.run_with_iobinding(binding)
        outs.append((y_state.numpy().copy(), ref_state.numpy().copy(), binding.get_outputs()[2].numpy()))
    return outs


def assert_in_place_equals_copying(session: ort.InferenceSession, seq, y_shape, ref_shape, device: str = "cpu",
                                   device_id: int = 0) -> None:
    """docs/state_protocol.md "In place": one OrtValue (on `device`) bound as both past and present state; the op
    then writes only what it recomputes, and every frame equals the copying run's exactly."""
    copying = run_copying(session, seq)
    for t, (got, want) in enumerate(zip(run_in_place(session, seq, y_shape, ref_shape, device, device_id), copying)):
        for name, g, w in zip(("Y", "X_ref_next", "map_out"), got, want):
            np.testing.assert_array_equal(g, w, err_msg=f"frame {t}: {name}")


def assert_pad_lanes_zero(y, b, channels, what):
    """Lanes channels.. of y (blocked) are +-0, or NaN at a pixel whose real lanes hold a NaN."""
    lanes = reference.from_blocked(y, b)
    real_nan = np.isnan(lanes[:, :channels]).any(axis=1, keepdims=True)
    pads = lanes[:, channels:]
    bad = (pads != 0) & ~(np.isnan(pads) & real_nan)
    assert not bad.any(), f"{what}: {int(bad.sum())} pad lanes not zero (e.g. {pads[bad][:4]})"

"""Builders and checks shared by the conversion tests (tests/models/test_convert_*.py, test_pass_*.py and a few
others): small ONNX models, a runner that feeds a converted model its state from run to run, and the comparison
with dense ORT."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper


REL_TOL = 1e-4


def metadata_of(model: onnx.ModelProto) -> dict:
    return json.loads({p.key: p.value for p in model.metadata_props}["deltaonnx"])


class StatefulRunner:
    """Runs a converted model feeding each run's present state as the next run's past
    (docs/state_protocol.md), in ORT with the op library or in the numpy reference evaluator; the block
    gates' change-map inputs get an empty map (no map) unless the feeds hold one."""

    def __init__(self, converted: onnx.ModelProto, library: str | None = None) -> None:
        meta = metadata_of(converted)
        self.gates = meta.get("gates", [])
        self.no_maps = {gate["change_map"]: np.zeros((0, 1, 0, 0), np.uint8) for gate in self.gates}
        self.present_of = {entry["past"]: entry["present"] for entry in meta["state"]}
        self.map_outputs = [entry["output"] for entry in meta["maps"]]
        if library is None:
            from deltaonnx.reference import make_reference_evaluator

            evaluator = make_reference_evaluator(converted)
            self.output_names = [o.name for o in converted.graph.output]
            self._run = lambda feeds: evaluator.run(None, feeds)
        else:
            options = ort.SessionOptions()
            options.register_custom_ops_library(library)
            session = ort.InferenceSession(converted.SerializeToString(), options, providers=["CPUExecutionProvider"])
            self.output_names = [o.name for o in session.get_outputs()]
            self._run = lambda feeds: session.run(None, feeds)
        self.reset()

    def reset(self) -> None:
        self.state = {past: np.zeros((0, 0, 0, 0), np.float32) for past in self.present_of}

    def run(self, feeds: dict) -> dict:
        results = dict(zip(self.output_names, self._run({**self.no_maps, **feeds, **self.state})))
        self.state = {past: results[present] for past, present in self.present_of.items()}
        return results


def dense_session(model: onnx.ModelProto) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def video(shape, frames: int, rng: np.random.Generator, spatial_axes=(-2, -1)) -> list[np.ndarray]:
    """Frames with what video has: small local changes, a repeated frame, a large change."""
    current = rng.standard_normal(shape).astype(np.float32)
    sequence = [current]
    h_axis, w_axis = spatial_axes
    h, w = shape[h_axis], shape[w_axis]
    for index in range(1, frames):
        current = current.copy()
        if index == 2:
            pass  # an identical frame: nothing may change
        elif index == frames - 1:
            current += rng.standard_normal(shape).astype(np.float32)  # everything changes
        else:
            for _ in range(2):
                y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
                index_tuple = [slice(None)] * len(shape)
                index_tuple[h_axis] = slice(y, y + 3)
                index_tuple[w_axis] = slice(x, x + 4)
                patch = current[tuple(index_tuple)]
                current[tuple(index_tuple)] = patch + rng.standard_normal(patch.shape).astype(np.float32)
        sequence.append(current)
    return sequence


def assert_same_as_dense(original: onnx.ModelProto, converted: onnx.ModelProto, frames_by_input: list[dict],
                         library: str | None) -> StatefulRunner:
    """Every model output of every frame equals dense ORT on the original (rel err <= REL_TOL)."""
    dense = dense_session(original)
    runner = StatefulRunner(converted, library)
    output_names = [o.name for o in original.graph.output]
    for index, feeds in enumerate(frames_by_input):
        assert_outputs_close(dict(zip(output_names, dense.run(None, feeds))), runner.run(feeds), index)
    return runner


def assert_outputs_close(expected: dict, got: dict, index: int) -> None:
    """Every output in `expected` within REL_TOL of it in `got` (max abs error over max abs value)."""
    for name, want in expected.items():
        scale = max(float(np.max(np.abs(want))), 1e-6)
        error = float(np.max(np.abs(got[name] - want))) / scale
        assert error <= REL_TOL, f"frame {index}, output {name}: rel err {error:.2e}"


def model_input_shape(model: onnx.ModelProto, index: int = 0) -> list[int]:
    return [d.dim_value for d in model.graph.input[index].type.tensor_type.shape.dim]


def make_model(nodes, inputs, outputs, initializers=(), opset=17, ir_version=10, extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "test", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), *extra_opsets])
    model.ir_version = ir_version
    return model


def tensor_info(name, shape, dtype=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dtype, shape)


def weights(rng, name, shape, scale=0.3) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def const(name, values, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)


def nodes_of(model: onnx.ModelProto, op_type: str, domain: str | None = None) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == op_type and (domain is None or n.domain == domain)]


def attr(node: onnx.NodeProto, name: str):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return None


def conv_block_model(rng, activation_nodes, activation_inits=(), *, opset=17, out="out", channels=4, hw=12,
                     extra_opsets=()) -> onnx.ModelProto:
    """x[1,3,hw,hw] -> Conv(3x3, pads 1) -> "y" -> activation_nodes -> `out`."""
    inits = [weights(rng, "W", (channels, 3, 3, 3)), weights(rng, "B", (channels,), 0.5), *activation_inits]
    conv = helper.make_node("Conv", ["x", "W", "B"], ["y"], name="conv", pads=[1, 1, 1, 1])
    return make_model(
        [conv, *activation_nodes], [tensor_info("x", [1, 3, hw, hw])], [tensor_info(out, None)], inits, opset,
        extra_opsets=extra_opsets,
    )


def op_node(op, inputs, outputs, **attributes):
    return helper.make_node(op, inputs, outputs, **attributes)


ZOO_MODELS = ["cnn1", "resnet18_like", "mobilenetv2_like", "mobilenetv3_like", "yolov8_like", "unet_like", "nhwc_input"]

REAL_MODELS = {
    # name: (fetcher, layout, two resolutions the stream switches between)
    "mtcnn_pnet": ("mtcnn_pnet", "NHWC", [(1, 72, 96, 3), (1, 60, 80, 3)]),
    "nudenet_320n": ("nudenet_320n", "NCHW", [(1, 3, 128, 160), (1, 3, 96, 96)]),
}


def fetched_real_model(name: str):
    """The path of REAL_MODELS[name], fetched into the cache (the test skips when offline)."""
    real_material = pytest.importorskip("real_material")
    try:
        return getattr(real_material, REAL_MODELS[name][0])()
    except real_material.DownloadError as error:
        pytest.skip(f"offline? {error}")

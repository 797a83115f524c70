"""convert(gate="block"): one DeltaGate per model input (graph_passes/input_gate.py). The converted model must
equal dense ORT run on the frames the numpy gate lets through (reference.delta_gate), frame after frame, in
the numpy reference evaluator and in ORT with the op library; external change maps."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from test_convert import DOMAIN, StatefulRunner, attr, dense_session, metadata_of, model_input_shape, video

import deltaonnx
from deltaonnx import reference as ref
from deltaonnx.convert import ConversionError

REL_TOL = 1e-4


@pytest.fixture(scope="module")
def zoo():
    return pytest.importorskip("zoo")


def gates_of(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == DOMAIN and n.op_type == "DeltaGate"]


def runner_for(converted, library):
    return StatefulRunner(converted, library)


def assert_equals_dense_on_gated_frames(original, converted, frames, library, nchw_of=lambda f: f, back=lambda f: f,
                                        maps=None, **gate):
    """Each frame: the converted model's outputs equal dense ORT on the numpy gate's frame."""
    dense = dense_session(original)
    runner = runner_for(converted, library)
    name = original.graph.input[0].name
    change_map = metadata_of(converted)["gates"][0]["change_map"]
    reference = np.zeros((0, 0, 0, 0), np.float32)
    outputs = [o.name for o in original.graph.output]
    for index, frame in enumerate(frames):
        map_in = None if maps is None else maps[index]
        reference, _ = ref.delta_gate(nchw_of(frame), reference, map_in, **gate)
        expected = dict(zip(outputs, dense.run(None, {name: back(reference)})))
        feeds = {name: frame}
        if map_in is not None:
            feeds[change_map] = map_in
        got = runner.run(feeds)
        for out in outputs:
            scale = max(float(np.max(np.abs(expected[out]))), 1e-6)
            error = float(np.max(np.abs(got[out] - expected[out]))) / scale
            assert error <= REL_TOL, f"frame {index}, output {out}: rel err {error:.2e}"
    return runner


def noisy_video(shape, frames, rng, spatial=(-2, -1)):
    """video() plus sensor noise of 0.05 on every frame (what the gate is for)."""
    return [f + rng.normal(0, 0.05, f.shape).astype(np.float32) for f in video(shape, frames, rng, spatial)]


def test_block_gate_graph_structure(zoo):
    original = zoo.resnet18_like()
    converted = deltaonnx.convert(original, threshold=0.1, gate="block", gate_block=8)
    (gate,) = gates_of(converted)
    assert gate.input[0] == original.graph.input[0].name
    assert attr(gate, "rule") == b"block" and attr(gate, "gate_block") == 8
    assert attr(gate, "threshold") == pytest.approx(0.1) and attr(gate, "gate_hard") == pytest.approx(0.3)
    readers = [n for n in converted.graph.node if gate.output[0] in n.input and n is not gate]
    assert readers and all(n.op_type == "DeltaConv" for n in readers)
    for node in readers:  # they compare nothing and keep no reference
        assert attr(node, "threshold") == 0.0 and node.input[5] == gate.output[1] and node.input[3] == ""
    meta = metadata_of(converted)
    assert meta["gates"][0]["node"] == gate.name and meta["state"][0]["present"] == gate.output[0]
    assert {r.name for r in readers} <= set(meta["dropped_references"])
    # the model's own inputs come first, then the state, with the change map an optional (initializer) input
    names = [i.name for i in converted.graph.input]
    assert names[0] == original.graph.input[0].name and meta["gates"][0]["change_map"] in names
    assert meta["gates"][0]["change_map"] in {t.name for t in converted.graph.initializer}


def test_no_gate_at_threshold_zero_or_with_the_pixel_rule(zoo):
    original = zoo.cnn1()
    assert not gates_of(deltaonnx.convert(original, threshold=0.0, gate="block"))
    assert not gates_of(deltaonnx.convert(original, threshold=0.1))


@pytest.mark.parametrize("kwargs, message", [
    (dict(gate="tiles"), "gate must be one of"),
    (dict(gate="block", gate_block=0), "gate_block"),
    (dict(gate="block", threshold=0.2, gate_hard=0.1), "gate_hard"),
])
def test_bad_gate_options_are_clear_errors(zoo, kwargs, message):
    with pytest.raises(ConversionError, match=message):
        deltaonnx.convert(zoo.cnn1(), **kwargs)


@pytest.mark.parametrize("name", ["cnn1", "resnet18_like", "nhwc_input"])
def test_reference_evaluator_equals_dense_on_gated_frames(zoo, name, rng):
    original = getattr(zoo, name)()
    converted = deltaonnx.convert(original, threshold=0.1, gate="block", gate_block=4)
    spatial = (1, 2) if name == "nhwc_input" else (-2, -1)
    frames = noisy_video(model_input_shape(original), 5, rng, spatial)
    if name == "nhwc_input":
        to_nchw, back = (lambda f: f.transpose(0, 3, 1, 2)), (lambda f: np.ascontiguousarray(f.transpose(0, 2, 3, 1)))
    else:
        to_nchw = back = lambda f: f
    assert_equals_dense_on_gated_frames(original, converted, frames, None, to_nchw, back,
                                        rule="block", threshold=0.1, gate_block=4, gate_hard=0.3)

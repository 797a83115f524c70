"""convert(gate="block"): one DeltaGate per model input (graph_passes/input_gate.py). The converted model must
equal dense ORT run on the frames the numpy gate lets through (reference.delta_gate), frame after frame, in
the numpy reference evaluator and in ORT with the op library; external change maps."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import helper
from builders import DOMAIN
from conversion import (StatefulRunner, assert_outputs_close, attr, conv_block_model, dense_session, metadata_of,
                        model_input_shape, video, weights)

import deltaonnx
from deltaonnx import reference as ref
from deltaonnx.convert import ConversionError
from deltaonnx.graph_passes.conversion_context import DEFAULT_INPUT_GATE_HARD

def gates_of(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.domain == DOMAIN and n.op_type == "DeltaGate"]


def assert_equals_dense_on_gated_frames(original, converted, frames, library, nchw_of=lambda f: f, back=lambda f: f,
                                        maps=None, **gate):
    """Each frame: the converted model's outputs equal dense ORT on the numpy gate's frame."""
    dense = dense_session(original)
    runner = StatefulRunner(converted, library)
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
        assert_outputs_close(expected, runner.run(feeds), index)
    return runner


def noisy_video(shape, frames, rng, spatial=(-2, -1)):
    """video() plus sensor noise of 0.05 on every frame (what the gate is for)."""
    return [f + rng.normal(0, 0.05, f.shape).astype(np.float32) for f in video(shape, frames, rng, spatial)]


def test_block_gate_graph_structure(zoo):
    original = zoo.resnet18_like()
    converted = deltaonnx.convert(original, threshold=0.1)  # convert's default: the block gate, k 8, 4 tau
    (gate,) = gates_of(converted)
    assert gate.input[0] == original.graph.input[0].name
    assert attr(gate, "rule") == b"block" and attr(gate, "gate_block") == 8
    assert DEFAULT_INPUT_GATE_HARD == 4.0
    assert attr(gate, "threshold") == pytest.approx(0.1) and attr(gate, "gate_hard") == pytest.approx(0.4)
    readers = [n for n in converted.graph.node if gate.output[0] in n.input and n is not gate]
    assert readers and all(n.op_type == "DeltaConv" for n in readers)
    for node in readers:  # they compare nothing and keep no reference
        assert attr(node, "threshold") == 0.0 and node.input[5] == gate.output[1] and node.input[3] == ""
    meta = metadata_of(converted)
    assert meta["gates"][0]["node"] == gate.name and meta["state"][0]["present"] == gate.output[0]
    assert {r.name for r in readers} <= set(meta["dropped_references"])
    # the model's own inputs come first, then the state and the change map
    names = [i.name for i in converted.graph.input]
    assert names[0] == original.graph.input[0].name and meta["gates"][0]["change_map"] in names


def test_keep_references_keeps_every_reference_but_the_gates_readers(zoo):
    """keep_references (calibrate raises the inner thresholds later) keeps the exact inner ops' X_ref; the ops
    reading a DeltaGate still drop theirs: the gate decides for them, whatever their threshold."""
    original = zoo.resnet18_like()
    kept = deltaonnx.convert(original, threshold=0.1, keep_references=True)
    (gate,) = gates_of(kept)
    readers = {n.name for n in kept.graph.node if gate.output[0] in n.input and n is not gate}
    inner = {n.name for n in kept.graph.node if n.op_type in ("DeltaConv", "DeltaPool")} - readers
    assert readers and inner
    assert set(metadata_of(kept)["dropped_references"]) == readers
    dropped = metadata_of(deltaonnx.convert(original, threshold=0.1))["dropped_references"]
    assert inner <= set(dropped)  # without keep_references the exact inner ops drop theirs too


def test_no_gate_at_threshold_zero_or_with_the_pixel_rule(zoo):
    original = zoo.cnn1()
    assert not gates_of(deltaonnx.convert(original, threshold=0.0))
    assert not gates_of(deltaonnx.convert(original, threshold=0.1, gate="pixel"))
    assert gates_of(deltaonnx.convert(original, threshold=0.1))


@pytest.mark.parametrize("kwargs, message", [
    (dict(gate="tiles"), "gate must be one of"),
    (dict(gate="block", gate_block=0), "gate_block"),
    (dict(gate="block", threshold=0.2, gate_hard=0.1), "gate_hard"),
])
def test_bad_gate_options_are_clear_errors(zoo, kwargs, message):
    with pytest.raises(ConversionError, match=message):
        deltaonnx.convert(zoo.cnn1(), **kwargs)


@pytest.mark.parametrize("library_kind", ["reference", "ort"])
@pytest.mark.parametrize("name", ["cnn1", "resnet18_like", "nhwc_input"])
def test_converted_model_equals_dense_on_gated_frames(zoo, name, rng, library_kind, request):
    library = None if library_kind == "reference" else request.getfixturevalue("cpu_op_library")
    original = getattr(zoo, name)()
    converted = deltaonnx.convert(original, threshold=0.1, gate="block", gate_block=4)
    spatial = (1, 2) if name == "nhwc_input" else (-2, -1)
    frames = noisy_video(model_input_shape(original), 5, rng, spatial)
    if name == "nhwc_input":
        to_nchw, back = (lambda f: f.transpose(0, 3, 1, 2)), (lambda f: np.ascontiguousarray(f.transpose(0, 2, 3, 1)))
    else:
        to_nchw = back = lambda f: f
    assert_equals_dense_on_gated_frames(original, converted, frames, library, to_nchw, back,
                                        rule="block", threshold=0.1, gate_block=4, gate_hard=0.1 * DEFAULT_INPUT_GATE_HARD)


def outputs_reached_from_outside(original, masked_hw, frame_shape, rng):
    """Which output elements a change outside the masked pixels can reach: those that change in the dense
    model when random frames differ only outside (a few trials, so a ReLU at zero hides nothing)."""
    dense = dense_session(original)
    name = original.graph.input[0].name
    reached = None
    for _ in range(3):
        base = rng.standard_normal(frame_shape).astype(np.float32)
        bumped = base + np.where(masked_hw, 0.0, rng.standard_normal(frame_shape)).astype(np.float32)
        changed = [x != y for x, y in zip(dense.run(None, {name: base}), dense.run(None, {name: bumped}))]
        reached = changed if reached is None else [r | c for r, c in zip(reached, changed)]
    return reached


@pytest.mark.parametrize("library_kind", ["reference", "ort"])
def test_masked_region_keeps_its_previous_outputs_exactly(rng, library_kind, request):
    """A user mask (0 over a region): whatever happens there, the outputs only that region reaches stay
    bit for bit what they were."""
    library = None if library_kind == "reference" else request.getfixturevalue("cpu_op_library")
    relu = helper.make_node("Relu", ["y"], ["r"])
    conv2 = helper.make_node("Conv", ["r", "W2"], ["out"], name="conv2", pads=[1, 1, 1, 1])
    original = conv_block_model(rng, [relu, conv2], [weights(rng, "W2", (2, 4, 3, 3))], hw=24)
    converted = deltaonnx.convert(original, threshold=0.1, gate="block", gate_block=4)
    shape = model_input_shape(original)
    name = original.graph.input[0].name
    change_map = metadata_of(converted)["gates"][0]["change_map"]
    mask = np.ones((1, 1) + tuple(shape[2:]), np.uint8)
    mask[..., :8, :] = 0  # the top 8 rows: e.g. a timestamp overlay
    # outputs reached by nothing but the masked rows
    reached_outside = outputs_reached_from_outside(original, mask[0, 0] == 0, shape, rng)
    assert not all(r.all() for r in reached_outside)  # some outputs only the masked rows reach
    runner = StatefulRunner(converted, library)
    frames = noisy_video(shape, 5, rng)
    first = runner.run({name: frames[0], change_map: mask})
    outputs = [o.name for o in original.graph.output]
    for frame in frames[1:]:
        frame = frame.copy()
        frame[..., :8, :] += rng.normal(0, 2.0, frame[..., :8, :].shape).astype(np.float32)  # the overlay changes
        got = runner.run({name: frame, change_map: mask})
        for out, outside in zip(outputs, reached_outside):
            np.testing.assert_array_equal(got[out][~outside], first[out][~outside])


@pytest.mark.parametrize("library_kind", ["reference", "ort"])
def test_map_of_all_ones_equals_no_map(zoo, rng, library_kind, request):
    library = None if library_kind == "reference" else request.getfixturevalue("cpu_op_library")
    original = zoo.resnet18_like()
    converted = deltaonnx.convert(original, threshold=0.1, gate="block")
    shape = model_input_shape(original)
    name = original.graph.input[0].name
    change_map = metadata_of(converted)["gates"][0]["change_map"]
    with_map, without = StatefulRunner(converted, library), StatefulRunner(converted, library)
    ones = np.ones((shape[0], 1) + tuple(shape[2:]), np.uint8)
    for frame in noisy_video(shape, 4, rng):
        a, b = with_map.run({name: frame, change_map: ones}), without.run({name: frame})
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_delta_session_with_the_block_gate(zoo, rng, cpu_op_library):
    """DeltaSession: same outputs as the plain stateful run, change maps fed through run(change_map=...), and
    the identical-frame skip taking the gate's answer (noise the block rule absorbs skips the run)."""
    from deltaonnx import DeltaSession

    original = zoo.resnet18_like()
    converted = deltaonnx.convert(original, threshold=0.1, gate="block", gate_block=8)
    shape = model_input_shape(original)
    name = original.graph.input[0].name
    session = DeltaSession(converted.SerializeToString(), dense_fallback=False)
    assert session.identical_frame_check["mode"] == "tau"
    runner = StatefulRunner(converted, cpu_op_library)
    change_map = metadata_of(converted)["gates"][0]["change_map"]
    frames = noisy_video(shape, 4, rng)
    mask = (rng.random((1, 1, -(-shape[2] // 8), -(-shape[3] // 8))) < 0.7).astype(np.uint8)
    for frame in frames:
        got = session.run(None, {name: frame}, change_map=mask)
        want = runner.run({name: frame, change_map: mask})
        for out, value in zip(session.get_outputs(), got):
            np.testing.assert_array_equal(value, want[out.name])
    assert session.stats()["nodes"][metadata_of(converted)["gates"][0]["node"]]["op"] is None  # the gate's map
    # a frame whose pixels each move by 0.2 (above tau) in a checkerboard: every 8x8 block mean stays put
    last = frames[-1].copy()
    before = session.stats()["skipped_runs"]
    checker = (np.indices(shape[2:]).sum(axis=0) % 2 * 2 - 1).astype(np.float32) * 0.2
    nudged = session.state()[metadata_of(converted)["state"][0]["past"]].numpy() + checker
    again = session.run(None, {name: nudged})
    assert session.stats()["skipped_runs"] == before + 1
    for value, previous in zip(again, got):
        np.testing.assert_array_equal(value, previous)
    with pytest.raises(ValueError, match="change_map"):
        session.run(None, {name: last}, change_map=np.ones((1, 1, 3, 3, 3), np.uint8))


def test_change_map_needs_a_gate(zoo, cpu_op_library):
    from deltaonnx import DeltaSession

    original = zoo.cnn1()
    session = DeltaSession(deltaonnx.convert(original, threshold=0.1, gate="pixel").SerializeToString())
    frame = np.zeros(model_input_shape(original), np.float32)
    with pytest.raises(ValueError, match="gate='block'"):
        session.run(None, {original.graph.input[0].name: frame}, change_map=np.ones((1, 1, 64, 64), np.uint8))


def test_metadata_records_the_gates_layout_and_when_a_client_may_skip(zoo):
    """gates[].perm: the transpose from the model input to the gate's NCHW frame; frame_skip: DeltaSession's proof
    that a run may be skipped, for clients that cannot read the graph (examples/cpp)."""
    nhwc = metadata_of(deltaonnx.convert(zoo.nhwc_input(), threshold=0.1))
    assert nhwc["gates"][0]["perm"] == [0, 3, 1, 2]
    (gate,) = nhwc["frame_skip"]["gates"]
    assert nhwc["frame_skip"]["mode"] == "tau" and nhwc["frame_skip"]["finite_checks"] == []
    assert gate == {"node": "DeltaGate_0", "input": nhwc["gates"][0]["input"], "present": nhwc["state"][0]["present"],
                    "perm": [0, 3, 1, 2], "threshold": pytest.approx(0.1), "rule": "block", "gate_block": 8,
                    "gate_hard": pytest.approx(0.4)}
    nchw = metadata_of(deltaonnx.convert(zoo.cnn1(), threshold=0.1))
    assert nchw["gates"][0]["perm"] is None and nchw["frame_skip"]["gates"][0]["perm"] is None
    # the pixel gate: the Delta op reading the frame answers per pixel at its own tau
    pixel = metadata_of(deltaonnx.convert(zoo.cnn1(), threshold=0.1, gate="pixel"))
    (gate,) = pixel["frame_skip"]["gates"]
    assert (gate["node"], gate["rule"], gate["gate_hard"]) == ("DeltaConv_0", "pixel", pytest.approx(0.1))


def test_no_gate_skip_where_the_frame_reaches_more_than_the_gate(rng):
    """A model input also read by an ordinary op: only bitwise-identical frames may be skipped; a random op: none."""
    original = conv_block_model(rng, [helper.make_node("Relu", ["y"], ["out"])], hw=12)
    original.graph.node.append(helper.make_node("Sigmoid", ["x"], ["s"]))
    original.graph.output.append(helper.make_tensor_value_info("s", onnx.TensorProto.FLOAT, None))
    assert metadata_of(deltaonnx.convert(original, threshold=0.1))["frame_skip"]["mode"] == "bitwise"
    noise = helper.make_node("RandomUniformLike", ["out"], ["noise"])
    original.graph.node.append(noise)
    original.graph.output.append(helper.make_tensor_value_info("noise", onnx.TensorProto.FLOAT, None))
    assert "frame_skip" not in metadata_of(deltaonnx.convert(original, threshold=0.1))


def test_delta_session_skips_a_frame_that_changes_only_where_the_map_says_nothing_did(zoo, rng, cpu_op_library):
    """The identical-frame skip asks the gate with the run's change map: a timestamp overlay masked out does not
    make a run; without the mask it does."""
    from deltaonnx import DeltaSession

    original = zoo.resnet18_like()
    converted = deltaonnx.convert(original, threshold=0.1).SerializeToString()
    shape = model_input_shape(original)
    name = original.graph.input[0].name
    mask = np.ones((1, 1) + tuple(shape[2:]), np.uint8)
    mask[..., :8, :] = 0
    frame = noisy_video(shape, 1, rng)[0]
    for masked, skips in ((True, 3), (False, 0)):
        session = DeltaSession(converted, dense_fallback=False)
        kwargs = {"change_map": mask} if masked else {}
        first = session.run(None, {name: frame}, **kwargs)
        for _ in range(3):
            overlay = frame.copy()
            overlay[..., :8, :] = rng.random(overlay[..., :8, :].shape, dtype=np.float32)
            got = session.run(None, {name: overlay}, **kwargs)
        assert session.stats()["skipped_runs"] == skips
        if masked:
            for value, previous in zip(got, first):
                np.testing.assert_array_equal(value, previous)

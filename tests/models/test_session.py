"""DeltaSession: state carried between runs, in place, per stream, with the original model's call and results.

The converted model is written by hand (Conv+Relu -> MaxPool -> Conv -> GlobalAveragePool as DeltaConv/DeltaPool
nodes with state inputs/outputs and the metadata of docs/state_protocol.md), so these tests depend on the op
library but not on the converter. The dense oracle is ORT running the same graph with plain Conv/Relu/MaxPool.
"""
from __future__ import annotations

import json
import threading

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from builders import DOMAIN
from concurrency import run_in_threads
import deltaonnx
from deltaonnx.graph_passes.protocol import CHANNEL_BLOCK_KEY
from deltaonnx.session.fallback_policy import FallbackPolicy
from deltaonnx.session.probe_check import ProbeCheck
from deltaonnx import DeltaSession

C_IN, C_MID, C_OUT = 3, 8, 6
NOMINAL_H, NOMINAL_W = 32, 32
# With tau = 0 the ops recompute from the same inputs as dense ORT; only summation order may differ.
EXACT = dict(rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------- model builders

def _weights(seed: int = 7):
    rng = np.random.default_rng(seed)
    return {
        "W0": rng.standard_normal((C_MID, C_IN, 3, 3)).astype(np.float32) * 0.4,
        "B0": rng.standard_normal(C_MID).astype(np.float32) * 0.1,
        "W1": rng.standard_normal((C_OUT, C_MID, 3, 3)).astype(np.float32) * 0.3,
        "B1": rng.standard_normal(C_OUT).astype(np.float32) * 0.1,
    }


def _initializers():
    return [numpy_helper.from_array(v, k) for k, v in _weights().items()]


def _finish(graph, domains, metadata=None) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", 17)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10  # ORT 1.31 refuses IR > 13; onnx 1.23 writes 14 by default
    if metadata is not None:
        helper.set_model_props(model, {"deltaonnx": json.dumps(metadata)})
    return model


def _image_info(name):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", C_IN, "H", "W"])


def _outputs_info():
    return [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", C_OUT, "Ho", "Wo"]),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", C_OUT, 1, 1])]


def dense_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Conv", ["image", "W0", "B0"], ["c0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("MaxPool", ["r0"], ["p0"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p0", "W1", "B1"], ["features"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
    ]
    graph = helper.make_graph(nodes, "dense", [_image_info("image")], _outputs_info(), _initializers())
    return _finish(graph, [])


def _conv_flops(c_in, c_out, k, h, w):
    return 2 * c_in * k * k * c_out * h * w


def converted_model(threshold: float = 0.0, inner_threshold: float = 0.0, with_metadata: bool = True):
    """The converted form of dense_model(), written the way docs/state_protocol.md lays it out."""
    def past(node, kind):
        return f"deltaonnx.past.{node}.{kind}"

    def present(node, kind):
        return f"deltaonnx.present.{node}.{kind}"

    def map_name(node):
        return f"deltaonnx.map.{node}"

    conv0, pool0, conv1 = "DeltaConv_0", "DeltaPool_0", "DeltaConv_1"
    y_conv0, y_pool0, y_conv1 = present(conv0, "y"), present(pool0, "y"), "features"  # model output keeps its name
    nodes = [
        helper.make_node("DeltaConv", ["image", "W0", "B0", past(conv0, "x_ref"), past(conv0, "y")],
                         [y_conv0, present(conv0, "x_ref"), map_name(conv0)], name=conv0, domain=DOMAIN,
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], activation="Relu", threshold=threshold),
        helper.make_node("DeltaPool", [y_conv0, past(pool0, "x_ref"), past(pool0, "y"), map_name(conv0)],
                         [y_pool0, present(pool0, "x_ref"), map_name(pool0)], name=pool0, domain=DOMAIN,
                         kernel_shape=[2, 2], strides=[2, 2], threshold=inner_threshold),
        helper.make_node("DeltaConv", [y_pool0, "W1", "B1", past(conv1, "x_ref"), past(conv1, "y"), map_name(pool0)],
                         [y_conv1, present(conv1, "x_ref"), map_name(conv1)], name=conv1, domain=DOMAIN,
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], threshold=inner_threshold),
        helper.make_node("GlobalAveragePool", ["features"], ["pooled"]),
    ]
    state = []
    inputs = [_image_info("image")]
    outputs = _outputs_info()
    for node, y_present in ((conv0, y_conv0), (pool0, y_pool0), (conv1, y_conv1)):
        for kind, present_name in (("x_ref", present(node, "x_ref")), ("y", y_present)):
            state.append({"node": node, "past": past(node, kind), "present": present_name, "kind": kind})
            inputs.append(helper.make_tensor_value_info(past(node, kind), TensorProto.FLOAT, None))
            if present_name != "features":
                outputs.append(helper.make_tensor_value_info(present_name, TensorProto.FLOAT, None))
        outputs.append(helper.make_tensor_value_info(map_name(node), TensorProto.UINT8, None))
    for info in inputs[1:]:  # rank-4 float state of any shape, [0,0,0,0] when empty
        info.type.tensor_type.shape.dim.extend([onnx.TensorShapeProto.Dimension() for _ in range(4)])
    ho, wo = NOMINAL_H // 2, NOMINAL_W // 2
    metadata = {
        "format": 1,
        "deltaonnx_version": deltaonnx.__version__,
        "threshold": threshold,
        "inner_threshold": inner_threshold,
        "state": state,
        "maps": [{"node": n, "output": map_name(n), "shape_of": y}
                 for n, y in ((conv0, y_conv0), (pool0, y_pool0), (conv1, y_conv1))],
        "nodes": [
            {"name": conv0, "op": "DeltaConv", "source": "conv0", "threshold": threshold,
             "flops": _conv_flops(C_IN, C_MID, 3, NOMINAL_H, NOMINAL_W), "reason": "converted"},
            {"name": pool0, "op": "DeltaPool", "source": "pool0", "threshold": inner_threshold,
             "flops": 4 * C_MID * ho * wo, "reason": "converted"},
            {"name": conv1, "op": "DeltaConv", "source": "conv1", "threshold": inner_threshold,
             "flops": _conv_flops(C_MID, C_OUT, 3, ho, wo), "reason": "converted"},
        ],
    }
    graph = helper.make_graph(nodes, "converted", inputs, outputs, _initializers())
    return _finish(graph, [DOMAIN], metadata if with_metadata else None)


# ----------------------------------------------------------------------------------------------- fixtures, helpers

@pytest.fixture(scope="module")
def dense_session():
    return ort.InferenceSession(dense_model().SerializeToString(), providers=["CPUExecutionProvider"])


@pytest.fixture
def exact_session(cpu_op_library):
    return DeltaSession(converted_model(0.0, 0.0))


def dense(dense_session, frame):
    return dense_session.run(None, {"image": frame})


def frame_with_patch(frame, rng, top, left, size=4):
    changed = frame.copy()
    changed[:, :, top:top + size, left:left + size] = rng.random((frame.shape[0], C_IN, size, size), dtype=np.float32)
    return changed


def random_frame(rng, n=1, h=NOMINAL_H, w=NOMINAL_W):
    return rng.random((n, C_IN, h, w), dtype=np.float32)


# ----------------------------------------------------------------------------------------------- construction

def test_unconverted_model_is_refused_with_a_hint():
    with pytest.raises(ValueError, match="deltaonnx convert"):
        DeltaSession(dense_model())
    with pytest.raises(ValueError, match="deltaonnx convert"):
        DeltaSession(converted_model(with_metadata=False))


def test_unconverted_model_from_path_or_bytes_is_refused(cpu_op_library, tmp_path):
    path = tmp_path / "dense.onnx"
    onnx.save(dense_model(), path)
    for source in (str(path), path, dense_model().SerializeToString()):
        with pytest.raises(ValueError, match="deltaonnx convert"):
            DeltaSession(source)


def test_model_accepted_as_path_bytes_or_proto(cpu_op_library, tmp_path, dense_session, rng):
    model = converted_model()
    path = tmp_path / "converted.onnx"
    onnx.save(model, path)
    frame = random_frame(rng)
    expected = dense(dense_session, frame)
    for source in (model, model.SerializeToString(), str(path), path):
        got = DeltaSession(source).run(None, {"image": frame})
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, **EXACT)


def test_only_the_model_own_inputs_and_outputs_are_exposed(exact_session):
    assert [i.name for i in exact_session.get_inputs()] == ["image"]
    assert [o.name for o in exact_session.get_outputs()] == ["features", "pooled"]
    assert exact_session.providers == ["CPUExecutionProvider"]
    pairs = exact_session.state_names()
    assert len(pairs) == 6
    assert ("deltaonnx.past.DeltaConv_1.y", "features") in pairs
    assert all(past.startswith("deltaonnx.past.") for past, _ in pairs)
    assert exact_session.metadata["format"] == 1
    assert {n["name"] for n in exact_session.metadata["nodes"]} == {"DeltaConv_0", "DeltaPool_0", "DeltaConv_1"}
    all_inputs = {i.name for i in exact_session.inference_session.get_inputs()}
    assert {past for past, _ in pairs} <= all_inputs


def test_caller_session_options_are_copied_not_mutated(cpu_op_library, rng):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = DeltaSession(converted_model(), sess_options=options)
    session.run(None, {"image": random_frame(rng)})
    used = session.inference_session.get_session_options()
    assert used.intra_op_num_threads == 1
    assert used.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    # the op library was registered on the copy only: the caller's options still cannot load Delta ops
    with pytest.raises(Exception, match="DeltaConv|com.deltaonnx"):
        ort.InferenceSession(converted_model().SerializeToString(), sess_options=options,
                             providers=["CPUExecutionProvider"])


def test_options_with_added_providers_are_refused(cpu_op_library):
    options = ort.SessionOptions()
    options.add_provider("CPUExecutionProvider", {})
    with pytest.raises(ValueError, match="providers="):
        DeltaSession(converted_model(), sess_options=options)


# ----------------------------------------------------------------------------------------------- exactness

@pytest.mark.sanitizer
def test_exact_against_dense_over_a_sequence_with_reset_and_shape_changes(exact_session, dense_session, rng):
    base = random_frame(rng)
    moved = frame_with_patch(base, rng, 5, 9)
    frames = [("first", base), ("patch", moved), ("same", moved), ("patch again", frame_with_patch(moved, rng, 20, 3)),
              ("reset", None), ("after reset", frame_with_patch(moved, rng, 12, 12))]
    wide = random_frame(rng, h=24, w=40)
    frames += [("resolution change", wide), ("patch at new size", frame_with_patch(wide, rng, 10, 30)),
               ("batch change", random_frame(rng, n=2, h=24, w=40)),
               ("back to the first size", frame_with_patch(base, rng, 0, 28)),
               ("whole frame changes", random_frame(rng))]
    for label, frame in frames:
        if frame is None:
            exact_session.reset()
            continue
        features, pooled = exact_session.run(None, {"image": frame})
        dense_features, dense_pooled = dense(dense_session, frame)
        assert features.shape == dense_features.shape, label
        np.testing.assert_allclose(features, dense_features, **EXACT, err_msg=label)
        np.testing.assert_allclose(pooled, dense_pooled, **EXACT, err_msg=label)


def test_output_names_subset_and_order(exact_session, dense_session, rng):
    frame = random_frame(rng)
    dense_features, dense_pooled = dense(dense_session, frame)
    (pooled,) = exact_session.run(["pooled"], {"image": frame})
    np.testing.assert_allclose(pooled, dense_pooled, **EXACT)
    frame2 = frame_with_patch(frame, rng, 8, 8)
    pooled, features = exact_session.run(["pooled", "features"], {"image": frame2})
    dense_features, dense_pooled = dense(dense_session, frame2)
    np.testing.assert_allclose(pooled, dense_pooled, **EXACT)
    np.testing.assert_allclose(features, dense_features, **EXACT)


def test_inputs_as_ortvalue_or_non_contiguous_array(exact_session, dense_session, rng):
    frame = random_frame(rng)
    (features,) = exact_session.run(["features"], {"image": ort.OrtValue.ortvalue_from_numpy(frame)})
    np.testing.assert_allclose(features, dense(dense_session, frame)[0], **EXACT)
    wide = random_frame(rng, w=2 * NOMINAL_W)
    strided = wide[:, :, :, ::2]
    assert not strided.flags.c_contiguous
    (features,) = exact_session.run(["features"], {"image": strided})
    np.testing.assert_allclose(features, dense(dense_session, np.ascontiguousarray(strided))[0], **EXACT)


@pytest.mark.sanitizer
def test_nan_frame_is_fed_as_is_and_the_stream_recovers(exact_session, dense_session, rng):
    frame = random_frame(rng)
    exact_session.run(None, {"image": frame})
    poisoned = frame.copy()
    poisoned[0, 1, 10, 10] = np.nan
    features, _ = exact_session.run(None, {"image": poisoned})
    assert np.isnan(features).any()  # the session did not filter the NaN out
    clean = frame_with_patch(frame, rng, 24, 24)
    features, pooled = exact_session.run(None, {"image": clean})
    dense_features, dense_pooled = dense(dense_session, clean)
    np.testing.assert_allclose(features, dense_features, **EXACT)
    np.testing.assert_allclose(pooled, dense_pooled, **EXACT)


# ----------------------------------------------------------------------------------------------- state carried

def test_state_is_carried_identical_frame_recomputes_nothing(exact_session, rng):
    frame = random_frame(rng)
    first_features, _ = exact_session.run(None, {"image": frame})
    first = exact_session.stats()
    assert first["runs"] == 1
    assert all(node["fraction"] == 1.0 for node in first["nodes"].values())
    features, _ = exact_session.run(None, {"image": frame.copy()})
    second = exact_session.stats()
    assert second["runs"] == 2
    assert all(node["fraction"] == 0.0 for node in second["nodes"].values()), second
    assert all(node["fraction_avg"] == 0.5 for node in second["nodes"].values())
    np.testing.assert_array_equal(features, first_features)


@pytest.mark.sanitizer
def test_state_is_bound_in_place_from_the_second_run(exact_session, rng):
    frame = random_frame(rng)
    exact_session.run(None, {"image": frame})
    first = {name: value.data_ptr() for name, value in exact_session.state().items()}
    assert len(first) == 6
    for step in range(3):
        frame = frame_with_patch(frame, rng, 4 * step, 6 * step)
        exact_session.run(None, {"image": frame})
        now = {name: value.data_ptr() for name, value in exact_session.state().items()}
        assert now == first, f"run {step + 2}: ORT returned state in new buffers instead of writing in place"
    # a resolution change rebuilds the state at the new shape, then it is carried in place again
    exact_session.run(None, {"image": random_frame(rng, h=16, w=24)})
    rebuilt = exact_session.state()
    assert tuple(rebuilt["deltaonnx.past.DeltaConv_0.x_ref"].shape()) == (1, C_IN, 16, 24)
    assert tuple(rebuilt["deltaonnx.past.DeltaConv_1.y"].shape()) == (1, C_OUT, 8, 12)
    pointers = {name: value.data_ptr() for name, value in rebuilt.items()}
    exact_session.run(None, {"image": random_frame(rng, h=16, w=24)})
    assert {name: value.data_ptr() for name, value in exact_session.state().items()} == pointers


def test_returned_outputs_are_not_overwritten_by_later_runs(exact_session, rng):
    frame = random_frame(rng)
    features, pooled = exact_session.run(None, {"image": frame})
    kept_features, kept_pooled = features.copy(), pooled.copy()
    # `features` is also conv1's y state: what was returned must be a copy, not the live buffer
    live = exact_session.state()["deltaonnx.past.DeltaConv_1.y"]
    assert features.ctypes.data != live.data_ptr()
    for step in range(3):
        exact_session.run(None, {"image": random_frame(rng)})
    np.testing.assert_array_equal(features, kept_features)
    np.testing.assert_array_equal(pooled, kept_pooled)


def test_non_state_outputs_are_returned_without_a_copy():
    """OrtValue.numpy() on CPU is a view of ORT's buffer (measured here, so the no-copy claim stays true)."""
    value = ort.OrtValue.ortvalue_from_numpy(np.arange(12, dtype=np.float32))
    view = value.numpy()
    assert view.ctypes.data == value.data_ptr()
    del value  # the view keeps the buffer alive
    np.testing.assert_array_equal(view, np.arange(12, dtype=np.float32))


# ----------------------------------------------------------------------------------------------- streams, reset

@pytest.mark.sanitizer
def test_streams_are_independent_and_reset_drops_one_or_all(exact_session, dense_session, rng):
    a, b = random_frame(rng), random_frame(rng)
    exact_session.run(None, {"image": a}, stream="a")
    exact_session.run(None, {"image": b}, stream=7)
    assert set(exact_session.streams()) == {"a", 7}
    # each stream compares against its own state: repeating its own frame recomputes nothing
    features_a, _ = exact_session.run(None, {"image": a}, stream="a")
    features_b, _ = exact_session.run(None, {"image": b}, stream=7)
    assert all(n["fraction"] == 0.0 for n in exact_session.stats("a")["nodes"].values())
    assert all(n["fraction"] == 0.0 for n in exact_session.stats(7)["nodes"].values())
    np.testing.assert_allclose(features_a, dense(dense_session, a)[0], **EXACT)
    np.testing.assert_allclose(features_b, dense(dense_session, b)[0], **EXACT)

    exact_session.reset("a")
    assert exact_session.streams() == [7]
    with pytest.raises(KeyError, match="'a'"):
        exact_session.stats("a")
    exact_session.run(None, {"image": a}, stream="a")  # starts from empty state again
    assert exact_session.stats("a")["runs"] == 1
    assert all(n["fraction"] == 1.0 for n in exact_session.stats("a")["nodes"].values())
    exact_session.run(None, {"image": b}, stream=7)  # untouched by the reset of "a"
    assert exact_session.stats(7)["runs"] == 3
    assert all(n["fraction"] == 0.0 for n in exact_session.stats(7)["nodes"].values())

    exact_session.reset("never ran")  # no-op
    exact_session.reset()
    assert exact_session.streams() == []
    with pytest.raises(KeyError):
        exact_session.stats(7)
    exact_session.run(None, {"image": b}, stream=7)
    assert all(n["fraction"] == 1.0 for n in exact_session.stats(7)["nodes"].values())


def test_a_saved_state_resumes_a_stream_in_another_session(cpu_op_library, dense_session, rng):
    """state() copied, then load_state() in a new session (another process, a restart): the resumed stream's
    next runs equal the original stream's bit for bit and recompute only what changed since the save."""
    model = converted_model(0.05, 0.0)
    original = DeltaSession(model, skip_identical_frames=False)
    frames = [random_frame(rng)]
    for step in range(5):
        frames.append(frame_with_patch(frames[-1], rng, 2 + 3 * step, 4 + 2 * step))
    for frame in frames[:3]:
        original.run(None, {"image": frame}, stream="cam")
    saved = {name: value.numpy().copy() for name, value in original.state("cam").items()}
    resumed = DeltaSession(model, skip_identical_frames=False)
    resumed.load_state(saved, stream="cam")
    assert resumed.streams() == ["cam"]  # waiting for its first run
    for frame in frames[3:]:
        want = original.run(None, {"image": frame}, stream="cam")
        got = resumed.run(None, {"image": frame}, stream="cam")
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)
        assert ({n: v["fraction"] for n, v in resumed.stats("cam")["nodes"].items()}
                == {n: v["fraction"] for n, v in original.stats("cam")["nodes"].items()})
        assert all(v["fraction"] < 0.5 for v in resumed.stats("cam")["nodes"].values())
    assert resumed.stats("cam")["runs"] == 3  # load_state starts the statistics afresh


def test_load_state_checks_names_and_types_and_missing_names_start_empty(exact_session, dense_session, rng):
    frame = random_frame(rng)
    exact_session.run(None, {"image": frame})
    saved = {name: value.numpy().copy() for name, value in exact_session.state().items()}
    with pytest.raises(KeyError, match="not state inputs"):
        exact_session.load_state({**saved, "image": frame})
    name = next(iter(saved))
    with pytest.raises(ValueError, match="4-D float32"):
        exact_session.load_state({name: saved[name].astype(np.float64)})
    with pytest.raises(ValueError, match="4-D float32"):
        exact_session.load_state({name: saved[name][0]})
    assert exact_session.stats()["runs"] == 1  # a refused load changes nothing
    partial = dict(list(saved.items())[1:])  # one op starts empty: it recomputes everything, exactly
    exact_session.load_state(partial)
    changed = frame_with_patch(frame, rng, 5, 5)
    features, _ = exact_session.run(None, {"image": changed})
    np.testing.assert_allclose(features, dense(dense_session, changed)[0], **EXACT)
    # a state saved at another resolution counts as none (rule 1)
    exact_session.load_state(saved)
    other = random_frame(rng, h=NOMINAL_H + 4, w=NOMINAL_W + 2)
    features, _ = exact_session.run(None, {"image": other})
    np.testing.assert_allclose(features, dense(dense_session, other)[0], **EXACT)
    assert all(n["fraction"] == 1.0 for n in exact_session.stats()["nodes"].values())
    # a Y_prev that does not fit its X_ref: the op's error, then the stream starts again from empty state
    broken = dict(saved)
    y_prev = "deltaonnx.past.DeltaConv_0.y"
    broken[y_prev] = np.zeros(saved[y_prev].shape[:3] + (saved[y_prev].shape[3] + 1,), np.float32)
    exact_session.load_state(broken)
    with pytest.raises(Exception, match="Y_prev"):
        exact_session.run(None, {"image": frame})
    features, _ = exact_session.run(None, {"image": frame})
    np.testing.assert_allclose(features, dense(dense_session, frame)[0], **EXACT)
    assert all(n["fraction"] == 1.0 for n in exact_session.stats()["nodes"].values())


def _run_sequence(session, frames, stream):
    return [session.run(None, {"image": f}, stream=stream) for f in frames]


def test_four_threads_on_four_streams_match_each_stream_run_alone(cpu_op_library, rng):
    # threshold > 0: each stream's outputs depend on its own history, so mixed-up state would show
    model = converted_model(threshold=0.05, inner_threshold=0.02)
    sequences = {}
    for stream in range(4):
        frame = random_frame(rng, h=48, w=48)
        frames = [frame]
        for step in range(7):
            frame = frame + rng.normal(0, 0.005, frame.shape).astype(np.float32)  # noise mostly below the gate
            frame = frame_with_patch(frame, rng, (7 * step + 5 * stream) % 40, (11 * step) % 40, size=6)
            frames.append(frame)
        sequences[stream] = frames
    alone = {stream: _run_sequence(DeltaSession(model), frames, stream) for stream, frames in sequences.items()}

    shared = DeltaSession(model)
    results = {}
    barrier = threading.Barrier(4)

    def worker(stream):
        barrier.wait()
        results[stream] = _run_sequence(shared, sequences[stream], stream)

    run_in_threads(worker, sequences)
    for stream in sequences:
        for step, (got, expected) in enumerate(zip(results[stream], alone[stream])):
            for g, e in zip(got, expected):
                np.testing.assert_array_equal(g, e, err_msg=f"stream {stream}, frame {step}")
    # the gate really skipped work in this test: otherwise it could not tell the streams apart
    assert shared.stats(0)["nodes"]["DeltaConv_0"]["fraction_avg"] < 0.9


def test_concurrent_runs_on_one_stream_are_serialized(exact_session, dense_session, rng):
    # frames large enough that runs overlap in time if nothing serialized them (ORT releases the GIL)
    frames = [random_frame(rng, h=128, w=128), None, None]
    frames[1] = frame_with_patch(frames[0], rng, 10, 10, size=40)
    frames[2] = frame_with_patch(frames[0], rng, 70, 60, size=40)
    expected = [dense(dense_session, f) for f in frames]
    barrier = threading.Barrier(3)

    def worker(index):
        barrier.wait()
        for repeat in range(12):  # whatever the interleaving, each run must match its own frame
            k = (index + repeat) % 3
            got = exact_session.run(None, {"image": frames[k]}, stream="shared")
            for g, e in zip(got, expected[k]):
                np.testing.assert_allclose(g, e, **EXACT)

    run_in_threads(worker, range(3))
    stats = exact_session.stats("shared")  # every run counted once: a delta run, or the twin's (the clock's sample
    assert stats["runs"] + stats["dense_runs"] == 36 and stats["twin_samples"] == 2  # after 30, or its fall back)


class _SlowTwin(FallbackPolicy):
    """The twin's time read as 1000 s: the clock keeps a stream in delta whatever the machine's load."""

    def after_twin_sample(self, state, seconds):
        super().after_twin_sample(state, 1e3)


def test_the_clock_starts_again_at_a_new_resolution(cpu_op_library, rng):
    """The fallback's clock (docs/design.md#the-clock): after 30 delta runs the twin is timed; a change of resolution
    forgets both times (the next run, from empty state, is not timed), the second run at the new size is. The twin's
    time is fixed slow: on a loaded machine a stream may otherwise leave delta for the twin, whose runs time it."""
    exact_session = type("SlowTwinSession", (DeltaSession,), {"POLICY": _SlowTwin})(converted_model(0.0, 0.0))
    frame = random_frame(rng)
    for step in range(34):
        frame = frame_with_patch(frame, rng, step % 12, step % 20)
        exact_session.run(None, {"image": frame})
    stats = exact_session.stats()
    assert stats["twin_samples"] == 2 and stats["twin_ms_smoothed"] > 0 and stats["delta_ms_smoothed"] > 0
    small = random_frame(rng, h=16, w=24)
    exact_session.run(None, {"image": small})
    stats = exact_session.stats()
    assert stats["twin_ms_smoothed"] is None and stats["delta_ms_smoothed"] is None
    exact_session.run(None, {"image": frame_with_patch(small, rng, 2, 2)})
    assert exact_session.stats()["delta_ms_smoothed"] > 0


# ----------------------------------------------------------------------------------------------- stats, maps

def test_stats_and_change_maps_follow_the_change(exact_session, dense_session, rng):
    frame = random_frame(rng, h=64, w=64)
    exact_session.run(None, {"image": frame})
    first_maps = exact_session.change_maps()
    kept_first = {n: m.copy() for n, m in first_maps.items()}
    changed = frame.copy()
    changed[0, :, 30:32, 40:42] += 0.5
    exact_session.run(None, {"image": changed})
    maps = exact_session.change_maps()
    stats = exact_session.stats()

    assert set(maps) == {"DeltaConv_0", "DeltaPool_0", "DeltaConv_1"}
    assert maps["DeltaConv_0"].shape == (1, 1, 64, 64) and maps["DeltaConv_0"].dtype == np.uint8
    assert maps["DeltaPool_0"].shape == (1, 1, 32, 32)
    assert maps["DeltaConv_1"].shape == (1, 1, 32, 32)
    for name, change_map in maps.items():
        node = stats["nodes"][name]
        assert node["fraction"] == pytest.approx(np.count_nonzero(change_map) / change_map.size)
        assert 0.0 < node["fraction"] < 0.5, (name, node)  # a 2x2 change in 64x64 stays local
        assert node["fraction_avg"] == pytest.approx((1.0 + node["fraction"]) / 2)
        assert node["flops_saved"] == pytest.approx(node["flops"] * (1.0 - node["fraction"]))
        assert node["flops_saved_avg"] == pytest.approx(node["flops"] * (1.0 - node["fraction_avg"]))
        assert node["op"] == ("DeltaPool" if "Pool" in name else "DeltaConv")
    assert stats["runs"] == 2 and stats["stream"] == "default"
    assert stats["flops"] == pytest.approx(sum(n["flops"] for n in stats["nodes"].values()))
    assert stats["flops_saved"] == pytest.approx(sum(n["flops_saved"] for n in stats["nodes"].values()))

    # the maps mark at least every output pixel whose value changed (a superset is allowed)
    before, after = dense(dense_session, frame)[0], dense(dense_session, changed)[0]
    really_changed = np.abs(after - before).max(axis=1, keepdims=True) > 0
    assert really_changed.any()
    assert np.all(maps["DeltaConv_1"][really_changed] != 0)
    # conv0's receptive field is 3x3: pixels far from the 2x2 change were not recomputed
    # (up to a recompute tile of 16: the change is at rows 30-31, columns 40-41)
    assert not maps["DeltaConv_0"][0, 0, :12, :].any() and not maps["DeltaConv_0"][0, 0, :, :24].any()
    # maps handed out earlier are not overwritten by later runs
    for name in first_maps:
        np.testing.assert_array_equal(first_maps[name], kept_first[name])


def test_last_run_is_stats_in_brief_and_a_copy(exact_session, rng):
    with pytest.raises(KeyError, match="no runs"):
        exact_session.last_run()
    frame = random_frame(rng, h=64, w=64)
    exact_session.run(None, {"image": frame})
    changed = frame.copy()
    changed[0, :, 30:32, 40:42] += 0.5
    exact_session.run(None, {"image": changed})
    last, stats = exact_session.last_run(), exact_session.stats()
    assert last.nodes == tuple(stats["nodes"])
    assert last.fractions.dtype == np.float64 and last.fractions.shape == (len(last.nodes),)
    np.testing.assert_array_equal(last.fractions, [stats["nodes"][n]["fraction"] for n in last.nodes])
    assert 0.0 < last.fractions.min() and last.fractions.max() < 0.5  # the second run's, not the first's ones
    assert (last.runs, last.mode, last.dense_runs, last.stateless_runs, last.skipped_runs) == (
        stats["runs"], stats["mode"], stats["dense_runs"], stats["stateless_runs"], stats["skipped_runs"])
    kept = last.fractions.copy()
    exact_session.run(None, {"image": changed})  # identical: nothing recomputed
    np.testing.assert_array_equal(last.fractions, kept)  # the record handed out is not the live array
    again = exact_session.last_run()
    assert again.runs == 3 and again.skipped_runs == stats["skipped_runs"] + 1 and not again.fractions.any()


def test_stats_count_the_flops_of_a_dynamic_model_at_the_shapes_of_the_last_run(cpu_op_library, rng):
    """dense_model() has dynamic H and W, as PNet and NudeNet's 320n: the converter cannot record the nodes'
    FLOPs, so stats() counts them at the shapes of the last run, per frame (batch items do not multiply them)."""
    session = DeltaSession(deltaonnx.convert(dense_model(), all_nodes=True), dense_fallback=False)
    assert all(node["flops"] is None for node in session.metadata["nodes"])
    for n, h, w in ((2, 40, 56), (1, 24, 32)):
        session.run(None, {"image": random_frame(rng, n=n, h=h, w=w)})
        stats = session.stats()
        got = {node["op"] + str(index): node["flops"] for index, node in enumerate(stats["nodes"].values())}
        assert got == {"DeltaConv0": _conv_flops(C_IN, C_MID, 3, h, w),
                       "DeltaPool1": C_MID * 2 * 2 * (h // 2) * (w // 2),
                       "DeltaConv2": _conv_flops(C_MID, C_OUT, 3, h // 2, w // 2)}, (n, h, w)
        assert stats["flops"] == sum(got.values())
        assert stats["flops_saved"] == pytest.approx(sum(
            node["flops"] * (1.0 - node["fraction"]) for node in stats["nodes"].values()))


# ----------------------------------------------------------------------------------------------- errors

@pytest.mark.sanitizer
def test_clear_errors(exact_session, rng):
    frame = random_frame(rng)
    with pytest.raises(KeyError, match="no runs"):
        exact_session.stats()
    with pytest.raises(KeyError, match="no runs"):
        exact_session.change_maps("cam1")
    with pytest.raises(ValueError, match="unknown input name.*'img'"):
        exact_session.run(None, {"img": frame})
    with pytest.raises(ValueError, match="missing"):
        exact_session.run(None, {})
    with pytest.raises(ValueError, match="fed by DeltaSession itself"):
        exact_session.run(None, {"image": frame, "deltaonnx.past.DeltaConv_0.y": frame})
    with pytest.raises(ValueError, match="unknown output name"):
        exact_session.run(["deltaonnx.map.DeltaConv_0"], {"image": frame})
    with pytest.raises(TypeError, match="not a string"):
        exact_session.run("features", {"image": frame})
    assert exact_session.streams() == []  # failed calls did not create streams


@pytest.mark.sanitizer
def test_a_failed_run_drops_the_stream_state(exact_session, rng):
    frame = random_frame(rng)
    exact_session.run(None, {"image": frame}, stream="s")
    with pytest.raises(Exception):
        exact_session.run(None, {"image": frame.astype(np.float64)}, stream="s")  # ORT refuses the type
    exact_session.run(None, {"image": frame}, stream="s")
    # state was dropped, so the same frame is recomputed in full instead of skipped
    assert all(n["fraction"] == 1.0 for n in exact_session.stats("s")["nodes"].values())


# ----------------------------------------------------------------------------------------------- converter models

ZOO_MODELS = ("cnn1", "resnet18_like", "mobilenetv2_like", "mobilenetv3_like", "yolov8_like", "unet_like",
              "nhwc_input")


@pytest.mark.sanitizer
@pytest.mark.parametrize("name", ZOO_MODELS)
def test_converted_zoo_models_match_dense_through_the_session(cpu_op_library, name):
    """The converter's output runs through DeltaSession and equals dense ORT at tau = 0 on every frame."""
    if not hasattr(deltaonnx, "convert"):
        pytest.skip("deltaonnx.convert is not available yet")
    pytest.importorskip("torch")
    zoo = pytest.importorskip("zoo")
    synthetic_video = pytest.importorskip("synthetic_video")

    model = zoo.BUILDERS[name]()
    converted = deltaonnx.convert(model, threshold=0.0, inner_threshold=0.0)
    # The delta path itself is under test: no dense fallback and no stateless runs (these tiny maps change
    # everywhere at once; tests/models/test_stateless_runs.py covers those runs).
    session = DeltaSession(converted, dense_fallback=False, stateless_runs=False)
    reference = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [i.name for i in reference.get_inputs()]
    assert [o.name for o in session.get_outputs()] == [o.name for o in reference.get_outputs()]

    (model_input,) = reference.get_inputs()
    layout = "NHWC" if name == "nhwc_input" else "NCHW"
    frames = synthetic_video.sequence(tuple(model_input.shape), 10, seed=3, layout=layout)
    pointers = None
    for index, frame in enumerate(frames):
        if frame.kind == "reset":
            session.reset()
            pointers = None
        got = session.run(None, {model_input.name: frame.data})
        # CHANNEL_BLOCK_KEY is no state buffer but b, made anew by each state() call: its address says nothing
        now = {past: value.data_ptr() for past, value in session.state().items() if past != CHANNEL_BLOCK_KEY}
        assert pointers is None or now == pointers, f"{name}: frame {index}: state not carried in place"
        pointers = now
        expected = reference.run(None, {model_input.name: frame.data})
        for output, g, e in zip(session.get_outputs(), got, expected):
            scale = max(1.0, float(np.abs(e).max()))
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * scale,
                                       err_msg=f"{name}: frame {index} ({frame.kind}), output {output.name}")
        if frame.kind == "static" and session.stats()["nodes"]:
            fractions = {n: s["fraction"] for n, s in session.stats()["nodes"].items()}
            assert all(f == 0.0 for f in fractions.values()), (name, index, fractions)


def test_dense_fallback_takes_streams_that_change_everywhere_and_probes_back():
    """A stream whose frames change everywhere (a moving camera) runs the dense twin (same outputs as dense ORT),
    and returns to delta at a probe once its frames stop changing; another stream is unaffected."""
    import zoo  # models/zoo.py (conftest puts models/ on the path); imported here: it needs torch

    model = zoo.yolov8_like()
    session = DeltaSession(deltaonnx.convert(model), fallback_probe_every=4)
    dense = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = model.graph.input[0].name
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(7)
    still = rng.random(shape).astype(np.float32)
    modes, quiet_modes = [], []
    for step in range(14):
        frame = rng.random(shape).astype(np.float32) if step < 6 else still
        outputs = session.run(None, {name: frame})
        for got, want in zip(outputs, dense.run(None, {name: frame})):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        modes.append(session.stats()["mode"])
        session.run(None, {name: still}, stream="quiet")
        quiet_modes.append(session.stats("quiet")["mode"])
    assert "dense" in modes[:6] and session.stats()["dense_runs"] >= 3
    assert modes[-1] == "delta" and session.stats()["work_smoothed"] == 0.0
    assert set(quiet_modes) == {"delta"}
    off = DeltaSession(deltaonnx.convert(model), dense_fallback=False, stateless_runs=False)
    for _ in range(6):
        off.run(None, {name: rng.random(shape).astype(np.float32)})
    assert off.stats()["mode"] == "delta" and off.stats()["dense_runs"] == 0


def test_failed_probes_back_off_and_a_successful_one_resets_the_wait():
    """Each failed probe doubles the dense frames before the next (up to 4x fallback_probe_every); a probe that
    finds the camera still keeps delta, and the next fall back waits fallback_probe_every again. A probe is two
    delta frames: the one without state, and the first with state, which decides."""
    import zoo  # models/zoo.py (conftest puts models/ on the path); imported here: it needs torch

    model = zoo.yolov8_like()
    # the share rule alone: on this small model a delta run at full change is slower than the twin (the clock would
    # fall back on the first moving frame; tests/models/test_fallback_clock.py)
    session = DeltaSession(deltaonnx.convert(model), fallback_probe_every=2, fallback_clock=False)
    session._policy.check = None  # the probes themselves (the check before them: the test below)
    name = model.graph.input[0].name
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(3)

    def run(frames) -> str:  # the mode after each run: d delta, D dense (a probe's switch shows as d)
        modes = ""
        for frame in frames:
            session.run(None, {name: frame})
            modes += "d" if session.stats()["mode"] == "delta" else "D"
        return modes

    moving = lambda count: [rng.random(shape).astype(np.float32) for _ in range(count)]  # noqa: E731
    # falls back at its 2nd frame; probes after 2 dense frames, then 4, then 8 (the cap: 4 x 2), then 8
    assert run(moving(22)) == "dD" + "Dd" + "dD" + "DDDd" + "dD" + "DDDDDDDd" + "dD"
    still = rng.random(shape).astype(np.float32)
    assert run([still] * 10) == "DDDDDDDd" + "dd"  # the probe after 8 finds the camera still: delta stays
    # moving again: the smoothed share (0.5, 0.75, 0.875, 0.94) passes FallbackPolicy.FALLBACK_ENTER 0.9 at the 4th frame; the
    # next probe comes after 2, not 8
    assert run(moving(8)) == "dddD" + "Dd" + "dD"


@pytest.mark.parametrize("fallback", ["dense", "stateless"])
def test_a_camera_still_moving_is_seen_in_the_frame_not_probed(fallback):
    """Before a probe the frame is compared with the one before it in bands of rows: while the camera keeps moving
    no probe is made (nor does the wait grow); once it stops, two quiet pairs of frames let the probe through."""
    import zoo  # models/zoo.py (conftest puts models/ on the path); imported here: it needs torch

    model = zoo.yolov8_like()
    session = DeltaSession(deltaonnx.convert(model), fallback_probe_every=2, dense_fallback=fallback == "dense")
    assert session._policy.check is not None
    name = model.graph.input[0].name
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    dense = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    fell_back = "D" if fallback == "dense" else "S"

    def run(frames) -> str:  # the mode after each run: d delta, D dense twin, S stateless
        modes = ""
        for frame in frames:
            got = session.run(None, {name: frame})
            np.testing.assert_allclose(got[0], dense.run(None, {name: frame})[0], rtol=1e-3, atol=1e-3)
            modes += {"delta": "d", "dense": "D", "stateless": "S"}[session.stats()["mode"]]
        return modes

    assert run([rng.random(shape).astype(np.float32) for _ in range(12)]) == "d" + fell_back * 11
    assert session.stats()["probes_skipped"] == 5  # one every second frame: the wait stays 2
    still = rng.random(shape).astype(np.float32)
    # the still frame kept, then two checks find the frames quiet (FallbackPolicy.QUIET_CHECKS): the probe keeps delta
    assert run([still] * 5) == fell_back * 2 + "ddd"
    assert session.stats()["probes_skipped"] == 5


def test_the_frame_is_checked_before_probes_only_where_it_bounds_the_work():
    """The check: the gate's tau and kernel reach (exact ops behind it), or the block rule's gate_hard and block;
    none where inner thresholds let changes die out inside, or without a fallback."""
    import zoo  # models/zoo.py (conftest puts models/ on the path); imported here: it needs torch

    model = zoo.cnn1()  # 3x3 conv, 2x2 pool, 3x3 conv, 2x2 pool: each the one reader of the last
    check = lambda **kw: DeltaSession(deltaonnx.convert(model, **kw), dense_fallback=False)._policy.check  # noqa: E731
    exact = check(threshold=0.0)
    assert (exact.bound, exact.reaches, exact.block) == (0.0, ((1, 1), (1, 1), (3, 3), (3, 3)), 0)
    assert sum(exact.weights) == pytest.approx(1.0) and exact.weights[2] > 0.5  # the second conv: most of the work
    assert check(threshold=0.05, gate="pixel").bound == pytest.approx(0.05)
    assert check(threshold=0.05) == ProbeCheck(pytest.approx(0.2), ((0, 0),), (1.0,), 8)  # block gate: 4 x threshold
    assert check(threshold=0.05, inner_threshold=0.1) is None
    nhwc = DeltaSession(deltaonnx.convert(zoo.BUILDERS["nhwc_input"](), threshold=0.0), dense_fallback=False)
    assert nhwc._policy.check.axes == (1, 2)  # its frame's rows and columns, read through the Transpose
    keeping_state = DeltaSession(deltaonnx.convert(model), dense_fallback=False, stateless_runs=False)
    assert keeping_state._policy.check is None


def _squeeze_excite_model(reduce_axes=(2, 3), stem=4, width=48, hw=32) -> onnx.ModelProto:
    """A small stem conv, a squeeze-excite gate (ReduceMean over `reduce_axes`, a 1x1 conv, Sigmoid, Mul) and two
    wide 3x3 convs behind it: most of the conv work reads the pooled gate."""
    rng = np.random.default_rng(5)

    def conv(name, m, c, k):
        w = (rng.standard_normal((m, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
        return [numpy_helper.from_array(w, f"{name}.w"), numpy_helper.from_array(np.zeros(m, np.float32), f"{name}.b")]

    inits = conv("stem", stem, 3, 3) + conv("se", stem, stem, 1) + conv("c1", width, stem, 3) + conv("c2", width, width, 3)
    inits.append(numpy_helper.from_array(np.array(reduce_axes, np.int64), "axes"))
    nodes = [
        helper.make_node("Conv", ["x", "stem.w", "stem.b"], ["s"], pads=[1] * 4),
        helper.make_node("Relu", ["s"], ["sr"]),
        helper.make_node("ReduceMean", ["sr", "axes"], ["pooled"], keepdims=1),
        helper.make_node("Conv", ["pooled", "se.w", "se.b"], ["g"]),
        helper.make_node("Sigmoid", ["g"], ["gs"]),
        helper.make_node("Mul", ["sr", "gs"], ["excited"]),
        helper.make_node("Conv", ["excited", "c1.w", "c1.b"], ["c1"], pads=[1] * 4),
        helper.make_node("Relu", ["c1"], ["c1r"]),
        helper.make_node("Conv", ["c1r", "c2.w", "c2.b"], ["y"], pads=[1] * 4),
    ]
    graph = helper.make_graph(nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


def test_the_check_counts_the_work_behind_a_global_reduction_as_redone_everywhere():
    """A squeeze-excite block pools every pixel: whenever the gate marks anything, the convs behind the pool redo
    everything, so their share of the work is in the floor whole; a mean over channels pools nothing spatial."""
    import zoo  # models/zoo.py (conftest puts models/ on the path); imported here: it needs torch

    def check(model, **kw):
        return DeltaSession(deltaonnx.convert(model, threshold=0.0, **kw), dense_fallback=False)._policy.check

    pooled = check(_squeeze_excite_model())
    assert 0.95 < pooled.everywhere < 1.0  # the two wide convs behind the pool
    assert sum(pooled.weights) + pooled.everywhere == pytest.approx(1.0)
    assert check(_squeeze_excite_model(reduce_axes=(1,))).everywhere == 0.0  # per pixel: the chain's floor
    blocks = DeltaSession(deltaonnx.convert(_squeeze_excite_model(), threshold=0.05), dense_fallback=False)._policy.check
    assert blocks.block and blocks.everywhere == pytest.approx(pooled.everywhere)  # the block rule's check too
    mobilenet = check(zoo.BUILDERS["mobilenetv3_like"]((96, 96)))  # three squeeze-excite blocks after its stem
    assert 0.5 < mobilenet.everywhere < 0.7
    assert check(zoo.BUILDERS["mobilenetv2_like"]((96, 96))).everywhere == 0.0  # its pool feeds no converted conv


def test_a_small_change_before_a_squeeze_excite_block_is_not_probed():
    """The floor behind the pool: a stream running stateless whose frames change in a corner only is not probed,
    as the probe would redo ~99% of the work (the convs behind the pool) and fail."""
    model = _squeeze_excite_model()
    session = DeltaSession(deltaonnx.convert(model, threshold=0.0), fallback_probe_every=2, dense_fallback=False)
    rng = np.random.default_rng(11)
    frames = [rng.random((1, 3, 32, 32)).astype(np.float32) for _ in range(4)]  # everything changes: stateless
    base = frames[-1]
    for step in range(8):
        corner = base.copy()
        corner[0, :, 0, step] += 1.0  # a pixel on the sampled row 0
        frames.append(corner)
    dense = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    modes = ""
    for frame in frames:
        np.testing.assert_allclose(session.run(None, {"x": frame})[0], dense.run(None, {"x": frame})[0],
                                   rtol=1e-4, atol=1e-5)
        modes += {"delta": "d", "stateless": "S"}[session.stats()["mode"]]
    assert modes == "dSSSSSSSSSSS"
    assert session.stats()["probes_skipped"] >= 4


def test_the_dense_twin_is_built_beside_the_first_frames():
    """The twin (a few frames' time to build) is built in its own thread when the session is created, so the
    first run that falls back finds it ready; without the fallback none is built."""
    import zoo  # models/zoo.py (conftest puts models/ on the path); imported here: it needs torch

    converted = deltaonnx.convert(zoo.yolov8_like())
    session = DeltaSession(converted)
    for thread in threading.enumerate():
        if thread.name == "deltaonnx-dense-twin":
            thread.join(timeout=60)
    assert session._twin.session is not None
    assert DeltaSession(converted, dense_fallback=False)._twin.session is None

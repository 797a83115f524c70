"""The fallback's clock (session/fallback_policy.py, docs/design.md#the-clock): delta runs timed against the dense
twin's, the twin timed on a sampled frame; a stream slower in delta than its twin falls back whatever its share."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import deltaonnx
from deltaonnx import DeltaSession
from deltaonnx.session import steady_run
from deltaonnx.session.fallback_policy import FallbackPolicy
from deltaonnx.session.stream_state import StreamState

P = FallbackPolicy


def _delta_runs(policy, state, seconds, count):
    """`count` delta runs of `seconds` each through the policy; the modes after each ("d" delta, "D" dense, "s" a
    twin sample due)."""
    modes = ""
    for _ in range(count):
        state.last_seconds = seconds
        policy.after_delta_run(state)
        modes += "D" if state.mode == "dense" else "s" if state.twin_sample else "d"
        if state.twin_sample:  # DeltaSession runs the twin next (TWIN_SAMPLE_RUNS runs), the fastest at 1 ms here
            assert state.twin_sample == P.TWIN_SAMPLE_RUNS
            state.twin_samples += state.twin_sample
            state.dense_runs_total += state.twin_sample
            state.twin_sample = 0
            policy.after_twin_sample(state, 1e-3)
    return modes


def test_the_twin_is_timed_after_a_stream_settles_then_every_few_hundred_runs():
    policy, state = P("dense", 30), StreamState(0)
    modes = _delta_runs(policy, state, 0.5e-3, P.TWIN_SAMPLE_AT + 2 * P.TWIN_SAMPLE_EVERY)
    assert [i + 1 for i, m in enumerate(modes) if m == "s"] == [P.TWIN_SAMPLE_AT, P.TWIN_SAMPLE_AT + P.TWIN_SAMPLE_EVERY,
                                                               P.TWIN_SAMPLE_AT + 2 * P.TWIN_SAMPLE_EVERY]
    assert state.mode == "delta" and state.twin_seconds == pytest.approx(1e-3)
    assert state.delta_seconds == pytest.approx(0.5e-3)


def test_a_twin_timed_long_ago_is_timed_again_before_the_stream_leaves():
    """Delta runs turning slow 20 runs after the sample (load that came after it) have the twin timed again; the
    stream leaves on the next run if they are still slower than that time. Within 10 runs of a sample it leaves at
    once."""
    policy, state = P("dense", 30), StreamState(0)
    modes = _delta_runs(policy, state, 0.5e-3, P.TWIN_SAMPLE_AT + 20) + _delta_runs(policy, state, 2e-3, 3)
    assert modes == "d" * (P.TWIN_SAMPLE_AT - 1) + "s" + "d" * 20 + "d" + "s" + "D"  # smoothed: 0.875, 1.16 ms
    policy, state = P("dense", 30), StreamState(0)
    modes = _delta_runs(policy, state, 0.5e-3, P.TWIN_SAMPLE_AT + 5) + _delta_runs(policy, state, 2e-3, 2)
    assert modes == "d" * (P.TWIN_SAMPLE_AT - 1) + "s" + "d" * 5 + "d" + "D"


@pytest.mark.parametrize("seconds, stays", [(1.05e-3, True), (1.15e-3, False)])
def test_a_settled_stream_slower_than_its_twin_past_the_bound_falls_back(seconds, stays):
    policy, state = P("dense", 30), StreamState(0)
    modes = _delta_runs(policy, state, seconds, P.TWIN_SAMPLE_AT + 1)
    assert modes == "d" * (P.TWIN_SAMPLE_AT - 1) + "s" + ("d" if stays else "D")
    if not stays:  # as the share rule leaves: the wait before the first probe is probe_every
        assert state.probe_interval == 30 and state.binding is None


def test_a_probe_stays_only_as_fast_as_the_twin():
    for seconds, outcome in ((0.95e-3, "delta"), (1.02e-3, "dense")):
        policy, state = P("dense", 30), StreamState(0)
        state.dense_runs_total, state.probe_interval = 30, 30  # a stream in the fallback, its twin timed
        policy.after_twin_sample(state, 1e-3)
        state.mode_runs = 0  # the probe: its first run (from empty state) is not timed, the second decides
        _delta_runs(policy, state, 5e-3, 1)
        _delta_runs(policy, state, seconds, 1)
        assert state.mode == outcome, seconds
        if outcome == "dense":
            assert state.probe_interval == 60  # a failed probe doubles the wait


def test_without_the_clock_time_decides_nothing():
    for policy in (P("dense", 30, clock=False), P("stateless", 30), P(None, 30)):
        state = StreamState(0)
        assert _delta_runs(policy, state, 1.0, 400) == "d" * 400
        assert state.twin_samples == 0


class _FixedTwin(FallbackPolicy):
    """The twin's time fixed (`TWIN`): the clock's decisions depend on the frames only."""
    TWIN = 0.0

    def after_twin_sample(self, state, seconds):
        super().after_twin_sample(state, self.TWIN)


@pytest.mark.parametrize("twin, faster_at, modes", [(1e3, None, "d" * 340), (1e-9, None, "d" * 32 + "D" * 8),
                                                    (1e3, 50, "d" * 53 + "D" * 7)],
                         ids=["twin slower: delta stays", "twin faster: falls back", "twin faster later"])
def test_the_prepared_run_keeps_the_clock_as_the_general_path_does(cpu_op_library, twin, faster_at, modes):
    """A stream whose runs take the compiled prepared run (steady_frame_run.cc) and one whose runs take the general
    path (outputs asked by name) make the same decisions: the twin's runs (31 and 32) after 30 delta runs, then
    delta kept against a slow twin (the next sample 300 delta runs later), or the fall back on the next delta run
    against a fast one; a twin found faster while the stream runs prepared (`faster_at`) has the compiled run hand
    over: the twin timed again (runs 51 and 52, its time then older than 10 delta runs), the fall back after."""
    zoo = pytest.importorskip("zoo")
    model = zoo.BUILDERS["cnn1"]()
    name = model.graph.input[0].name
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    outputs = [o.name for o in model.graph.output]
    policy = type("Fixed", (_FixedTwin,), {"TWIN": twin})
    session_type = type("ClockedSession", (DeltaSession,), {"POLICY": policy})
    converted = deltaonnx.convert(model, threshold=0.0)
    prepared, general = session_type(converted), session_type(converted)
    dense = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(2)
    still = rng.random(shape).astype(np.float32)
    seen, compiled, smoothed = "", 0, None
    for index in range(len(modes)):
        stream = prepared._streams.get("default")
        compiled += stream is not None and type(stream.steady).__name__ == "SteadyFrameRun"
        runs_before = stream.runs if stream is not None else 0
        frame = still.copy()
        frame[..., 10 + index % 20, 5:9] = rng.random(4)  # a row of a few pixels moves: delta redoes a little
        if index == faster_at:
            policy.TWIN = 1e-9
            for session in (prepared, general):
                session._streams["default"].twin_seconds = 1e-9
        got = prepared.run(None, {name: frame})
        want = general.run(outputs, {name: frame})
        for g, w, d in zip(got, want, dense.run(None, {name: frame})):
            np.testing.assert_array_equal(g, w, err_msg=f"frame {index}")
            np.testing.assert_allclose(g, d, rtol=1e-4, atol=1e-5, err_msg=f"frame {index}")
        a, b = prepared.stats(), general.stats()
        for key in ("mode", "runs", "dense_runs", "twin_samples", "work_smoothed", "twin_ms_smoothed"):
            assert a[key] == b[key], (index, key, a[key], b[key])
        seen += "D" if a["mode"] == "dense" else "d"
        stream = prepared._streams["default"]
        if stream.mode == "delta" and stream.runs > runs_before and stream.mode_runs >= 2:  # a delta run's time
            last, k = stream.last_seconds, P.CLOCK_SMOOTHING
            smoothed = last if stream.mode_runs <= P.SETTLE else (1.0 - k) * smoothed + k * last
            assert stream.delta_seconds == smoothed, index  # smoothed alike in C++ and Python
    assert seen == modes
    # the sample, and the twin's runs after the delta run that fell back
    samples = P.TWIN_SAMPLE_RUNS * (1 if faster_at is None and "D" in modes else 2)
    assert prepared.stats()["twin_samples"] == samples
    assert prepared.stats()["dense_runs"] == samples + max(0, modes.count("D") - 1)
    if steady_run._SteadyFrameRun is not None:
        assert compiled >= 25, compiled  # the delta runs before the sample went through the compiled run

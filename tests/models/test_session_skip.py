"""DeltaSession's identical-frame shortcut (skip_identical_frames): a run that provably changes nothing returns the
previous outputs without running ORT. The oracle is the same session with the shortcut off: outputs, statistics,
change maps and state must be identical after every run, bit for bit, while the shortcut really skips.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import deltaonnx
from deltaonnx import DeltaSession
from deltaonnx.calibrate import PeriodicRefresh

from test_session import converted_model, frame_with_patch, random_frame

GATE = 0.05


# ----------------------------------------------------------------------------------------------- models

def dense_model(front: str) -> onnx.ModelProto:
    """Conv+Relu -> MaxPool -> Conv -> Softmax behind a `front` op on the image: "transpose" (NHWC input, as
    the converter leaves PNet), "identity", "sigmoid" (preprocessing: the gate no longer reads the input).
    Outputs: probs, and the last conv's output c1 (also that Delta op's y state)."""
    rng = np.random.default_rng(5)
    weights = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.4).astype(np.float32), "W0"),
               numpy_helper.from_array((rng.standard_normal((6, 8, 3, 3)) * 0.3).astype(np.float32), "W1")]
    if front == "transpose":
        image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", "H", "W", 3])
        nodes = [helper.make_node("Transpose", ["image"], ["x"], perm=[0, 3, 1, 2])]
    else:
        image = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])
        nodes = [helper.make_node({"identity": "Identity", "sigmoid": "Sigmoid"}[front], ["image"], ["x"])]
    nodes += [helper.make_node("Conv", ["x", "W0"], ["c0"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
              helper.make_node("Relu", ["c0"], ["r0"]),
              helper.make_node("MaxPool", ["r0"], ["p0"], kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("Conv", ["p0", "W1"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
              helper.make_node("Softmax", ["c1"], ["probs"], axis=1)]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("probs", "c1")]
    graph = helper.make_graph(nodes, front, [image], outputs, weights)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def converted(front: str, threshold: float = GATE, gate: str = "block") -> onnx.ModelProto:
    return deltaonnx.convert(dense_model(front), threshold=threshold, all_nodes=True, gate=gate)


def frame_like(rng, front: str, h=32, w=40) -> np.ndarray:
    return rng.random((1, h, w, 3) if front == "transpose" else (1, 3, h, w), dtype=np.float32)


def small_noise(frame, rng, scale):
    return (frame + rng.uniform(-scale, scale, frame.shape)).astype(np.float32)


# ----------------------------------------------------------------------------------------------- the oracle

class Twins:
    """The same model in two sessions, shortcut on and off, driven alike and compared after every run."""

    def __init__(self, model, **options):
        # frames are skipped in delta mode: stay in it; the clock off, as a skipped run takes no time
        options = {"stateless_runs": False, "fallback_clock": False, **options}
        self.on = DeltaSession(model, skip_identical_frames=True, **options)
        self.off = DeltaSession(model, skip_identical_frames=False, **options)
        self.runs = 0

    def run(self, feed, output_names=None, stream="default", on=None):
        got = (on or self.on).run(output_names, feed, stream=stream)
        want = self.off.run(output_names, feed, stream=stream)
        self.runs += 1
        label = f"run {self.runs}"
        assert len(got) == len(want), label
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w, err_msg=label)
        self.assert_same(stream, label)
        return got

    def reset(self, stream=None):
        self.on.reset(stream)
        self.off.reset(stream)

    def assert_same(self, stream, label):
        a, b = self.on.stats(stream), self.off.stats(stream)
        for key in ("runs", "mode", "work_smoothed", "dense_runs", "flops_saved", "flops_saved_avg"):
            assert a[key] == b[key], (label, key, a[key], b[key])
        assert a["nodes"] == b["nodes"], label
        maps_a, maps_b = self.on.change_maps(stream), self.off.change_maps(stream)
        assert maps_a.keys() == maps_b.keys(), label
        for node in maps_a:
            np.testing.assert_array_equal(maps_a[node], maps_b[node], err_msg=f"{label}: map of {node}")
        state_a, state_b = self.on.state(stream), self.off.state(stream)
        assert state_a.keys() == state_b.keys(), label
        for past in state_a:
            np.testing.assert_array_equal(state_a[past].numpy(), state_b[past].numpy(), err_msg=f"{label}: {past}")

    def skipped(self, stream="default") -> int:
        return self.on.stats(stream)["skipped_runs"]


# ----------------------------------------------------------------------------------------------- which test applies

@pytest.mark.parametrize("gate, gate_node", [("block", "DeltaGate_0"), ("pixel", "DeltaConv_0")])
@pytest.mark.parametrize("front, mode", [("transpose", "tau"), ("identity", "tau"), ("sigmoid", "bitwise")])
def test_the_check_follows_what_reads_the_model_input(cpu_op_library, front, mode, gate, gate_node):
    check = DeltaSession(converted(front, gate=gate)).identical_frame_check
    assert check["mode"] == mode, check
    assert check["gates"] == ([gate_node] if mode == "tau" else [])
    assert DeltaSession(converted(front), skip_identical_frames=False).identical_frame_check["mode"] is None


def test_a_random_op_disables_the_shortcut(cpu_op_library):
    model = converted("identity")
    model.graph.node.append(helper.make_node("RandomUniformLike", ["probs"], ["noise"]))
    model.graph.output.append(helper.make_tensor_value_info("noise", TensorProto.FLOAT, None))
    session = DeltaSession(model)
    assert session.identical_frame_check["mode"] is None
    assert "RandomUniformLike" in session.identical_frame_check["reason"]
    frame = random_frame(np.random.default_rng(1))
    session.run(None, {"image": frame})
    session.run(None, {"image": frame})
    assert session.stats()["skipped_runs"] == 0


def test_a_model_output_that_is_the_input_itself_is_never_skipped_by_tau(cpu_op_library):
    """An identity path from input to output would return the old frame: the tau test must not apply."""
    model = converted("identity")
    model.graph.output.append(helper.make_tensor_value_info("x", TensorProto.FLOAT, None))
    assert DeltaSession(model).identical_frame_check["mode"] == "bitwise"


# ----------------------------------------------------------------------------------------------- exactness

@pytest.mark.parametrize("front", ["transpose", "identity", "sigmoid"])
def test_repeated_frames_give_what_the_model_gives(cpu_op_library, front, rng):
    twins = Twins(converted(front), dense_fallback=False)
    a = frame_like(rng, front)
    b = a + np.float32(0.2)  # every pixel moves past the gate: the gate's reference becomes b exactly
    sequence = [a, a, a, b, b, small_noise(b, rng, GATE / 4), b, a, a]
    for frame in sequence:
        twins.run({"image": frame})
    # bitwise: the repeats of a (2), of b (1) and of the last a (1); tau: also the frame within the gate of
    # b (its reference) and b after it
    assert twins.skipped() == {"transpose": 6, "identity": 6, "sigmoid": 4}[front]
    assert all(n["fraction"] == 0.0 for n in twins.on.stats()["nodes"].values())


def test_hand_written_model_with_a_state_output_and_inner_thresholds(cpu_op_library, rng):
    """features is both a model output and a y state: served from the live state on a skipped run."""
    twins = Twins(converted_model(threshold=GATE, inner_threshold=0.02), dense_fallback=False)
    assert twins.on.identical_frame_check["mode"] == "tau"
    frame = random_frame(rng, h=48, w=48)
    for step in range(12):
        if step % 3 == 0:
            frame = frame_with_patch(frame, rng, (5 * step) % 40, (7 * step) % 40, size=5)
        else:
            frame = small_noise(frame, rng, GATE / 10)  # stays within the gate of the reference
        twins.run({"image": frame})
    assert twins.skipped() == 8


def test_gate_boundary_is_rule_2_exactly(cpu_op_library):
    """|x - x_ref| == tau is no change (skipped); the next float above is a change (run). Binary fractions keep
    the float32 arithmetic exact, so this pins the comparison the kernels make."""
    tau = 0.25
    twins = Twins(converted("identity", threshold=tau, gate="pixel"), dense_fallback=False)
    base = np.full((1, 3, 16, 16), 0.5, np.float32)
    twins.run({"image": base})
    at_tau = base.copy()
    at_tau[0, 1, 7, 9] = 0.75
    twins.run({"image": at_tau})
    assert twins.skipped() == 1
    above = base.copy()
    above[0, 1, 7, 9] = np.nextafter(np.float32(0.75), np.float32(1.0))
    twins.run({"image": above})
    assert twins.skipped() == 1
    assert twins.on.stats()["nodes"]["DeltaConv_0"]["fraction"] > 0


@pytest.mark.parametrize("front", ["identity", "sigmoid"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_a_repeated_non_finite_frame_is_skipped_only_if_no_delta_op_sees_it(cpu_op_library, rng, front, bad):
    """A NaN/Inf pixel counts as changed on every run (rule 2), so a repeat recomputes it: no shortcut. Behind a
    Sigmoid an Inf becomes 1.0 and no Delta op sees a non-finite value: the repeat is skipped, exactly."""
    twins = Twins(converted(front), dense_fallback=False)
    frame = frame_like(rng, front)
    frame[0, 2, 5, 6] = bad
    for _ in range(3):
        twins.run({"image": frame})
    reaches_a_delta_op = not (front == "sigmoid" and bad == np.inf)
    assert twins.skipped() == (0 if reaches_a_delta_op else 2)
    assert (twins.on.stats()["nodes"]["DeltaConv_0"]["fraction"] > 0) == reaches_a_delta_op
    clean = frame_like(rng, front)
    twins.run({"image": clean})
    twins.run({"image": clean})
    assert twins.skipped() == (1 if reaches_a_delta_op else 3)


def test_reset_and_refresh_are_never_skipped(cpu_op_library, rng):
    twins = Twins(converted("identity"), dense_fallback=False)
    frame = frame_like(rng, "identity")
    twins.run({"image": frame})
    twins.run({"image": frame})
    twins.reset()
    twins.run({"image": frame})
    assert twins.on.stats()["runs"] == 1 and twins.on.stats()["skipped_runs"] == 0
    assert all(n["fraction"] == 1.0 for n in twins.on.stats()["nodes"].values())

    refreshed_on, refreshed_off = PeriodicRefresh(twins.on, 3), PeriodicRefresh(twins.off, 3)
    twins.reset()
    fractions, skipped = [], []
    for index in range(7):
        got = refreshed_on.run(None, {"image": frame})
        want = refreshed_off.run(None, {"image": frame})
        np.testing.assert_array_equal(got[0], want[0])
        twins.assert_same("default", f"refresh run {index}")
        fractions.append(twins.on.stats()["nodes"]["DeltaConv_0"]["fraction"])
        skipped.append(twins.skipped())
    assert fractions == [1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0]  # the refreshes (runs 3 and 6) run in full
    assert skipped == [0, 1, 2, 0, 1, 2, 0]  # a refresh is a reset: statistics start again


def test_shape_change_is_not_skipped(cpu_op_library, rng):
    twins = Twins(converted("identity"), dense_fallback=False)
    frame = frame_like(rng, "identity", 32, 32)
    twins.run({"image": frame})
    twins.run({"image": frame[:, :, :16, :].copy()})  # same pixels where it overlaps, another shape
    assert twins.skipped() == 0
    assert all(n["fraction"] == 1.0 for n in twins.on.stats()["nodes"].values())


# ----------------------------------------------------------------------------------------------- ownership

def test_writing_into_returned_outputs_does_not_change_a_skipped_run(cpu_op_library, rng):
    twins = Twins(converted_model(threshold=GATE), dense_fallback=False)
    frame = random_frame(rng)
    features, pooled = twins.run({"image": frame})
    features[...] = -1.0
    pooled[...] = -1.0
    again = twins.run({"image": frame})
    assert twins.skipped() == 1
    assert not np.shares_memory(again[1], pooled)
    again[1][...] = 7.0  # nor does writing into what a skipped run returned
    twins.run({"image": frame})
    assert twins.skipped() == 2


def test_a_frame_buffer_reused_by_the_caller_is_compared_by_value(cpu_op_library, rng):
    """Bitwise mode keeps its own copy of the last frame: refilling the caller's array is a new frame."""
    twins = Twins(converted("sigmoid"), dense_fallback=False)
    buffer = frame_like(rng, "sigmoid")
    twins.run({"image": buffer})
    buffer[0, 0, 3, 3] += 0.5
    twins.run({"image": buffer})
    assert twins.skipped() == 0
    twins.run({"image": buffer})
    assert twins.skipped() == 1


def test_output_subsets_and_order(cpu_op_library, rng):
    twins = Twins(converted_model(threshold=GATE), dense_fallback=False)
    f1 = random_frame(rng)
    f2 = frame_with_patch(f1, rng, 3, 3)
    f3 = frame_with_patch(f2, rng, 20, 20)
    (held,) = twins.run({"image": f1}, ["pooled"])
    held_values = held.copy()
    twins.run({"image": f1}, ["features", "pooled"])  # features is state: skipped all the same
    assert twins.skipped() == 1
    twins.run({"image": f2}, ["features"])  # pooled was bound and is not asked for: the binding is redone
    twins.run({"image": f2}, ["pooled"])  # not kept by the last run: ORT runs (and recomputes nothing)
    assert twins.skipped() == 1
    twins.run({"image": f2}, ["pooled", "features", "pooled"])
    assert twins.skipped() == 2
    twins.run({"image": f3}, None)
    twins.run({"image": f3}, None)
    assert twins.skipped() == 3
    np.testing.assert_array_equal(held, held_values)  # no later run wrote into an array handed out


def test_streams_skip_independently(cpu_op_library, rng):
    twins = Twins(converted("transpose"), dense_fallback=False)
    a, b = frame_like(rng, "transpose"), frame_like(rng, "transpose")
    twins.run({"image": a}, stream="a")
    twins.run({"image": b}, stream="b")
    twins.run({"image": a}, stream="b")  # b's state has seen b: a is a change there
    twins.run({"image": a}, stream="a")
    assert twins.skipped("a") == 1 and twins.skipped("b") == 0


# ----------------------------------------------------------------------------------------------- spacing

def test_a_stream_that_stops_repeating_is_tested_less_often_and_still_caught(cpu_op_library, rng):
    twins = Twins(converted("identity"), dense_fallback=False)
    spacing = DeltaSession.CHECK_SPACING
    frame = frame_like(rng, "identity")
    for _ in range(DeltaSession.CHECK_MISSES_BEFORE_SPACING + 3):  # every frame changes: tests fail
        frame = frame_with_patch(frame, rng, int(rng.integers(0, 28)), int(rng.integers(0, 36)))
        twins.run({"image": frame})
    assert twins.skipped() == 0
    for _ in range(spacing + 3):  # frozen: caught within one spacing, then every frame is skipped
        twins.run({"image": frame})
    assert 3 <= twins.skipped() < spacing + 3  # caught, but not on the first repeat: tests were spaced out


def test_dense_fallback_decisions_are_unchanged(cpu_op_library, rng):
    """Skipped runs feed the fallback the zero work a real run would report: same modes, same outputs. (A probe
    waits for two quiet pairs of frames in a row: the still stretches run 7 frames.)"""
    twins = Twins(converted("identity"), fallback_probe_every=3)
    still = frame_like(rng, "identity")
    for step in range(24):
        frame = frame_like(rng, "identity") if step < 6 or step % 8 == 0 else still
        twins.run({"image": frame})
    assert twins.off.stats()["dense_runs"] > 0
    assert twins.skipped() > 0


@pytest.mark.parametrize("front", ["transpose", "identity", "sigmoid"])
def test_long_mixed_sequences_match_the_model(cpu_op_library, front):
    """Repeats, noise below and above the gate, new frames, output subsets (c1 is state), resets and two
    streams in random order: the shortcut never changes anything, whatever the test spacing does."""
    rng = np.random.default_rng(11)
    twins = Twins(converted(front), dense_fallback=False)
    pool = [frame_like(rng, front) for _ in range(3)]
    last = {"s0": pool[0], "s1": pool[1]}
    choices = [None, ["probs"], ["c1"], ["c1", "probs"], ["probs", "probs"]]
    for step in range(80):
        stream = "s0" if rng.random() < 0.7 else "s1"
        kind = rng.choice(["repeat", "repeat", "noise", "pool", "patch", "reset"], p=[0.3, 0.2, 0.2, 0.1, 0.15, 0.05])
        frame = last[stream]
        if kind == "noise":
            frame = small_noise(frame, rng, GATE / 3 if rng.random() < 0.7 else 3 * GATE)
        elif kind == "pool":
            frame = pool[int(rng.integers(0, 3))]
        elif kind == "patch":
            frame = frame.copy()
            frame.reshape(-1)[int(rng.integers(0, frame.size))] += 0.5
        elif kind == "reset":
            twins.reset(stream)
        last[stream] = frame
        twins.run({"image": frame}, choices[int(rng.integers(0, len(choices)))], stream=stream)
    assert twins.skipped("s0") + twins.skipped("s1") > 0

"""`deltaonnx.calibrate` / `python -m deltaonnx calibrate`: the budget holds on the calibration frames, the
thresholds it writes are what `convert --thresholds` reproduces, larger thresholds remove more work, the
refresh restores exactness, the time limit stops the search, and user errors are one line."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import synthetic_video
import zoo
from deltaonnx import DeltaSession
from deltaonnx.calibrate import (CALIBRATION_METADATA_KEY, GATE_LEVELS, INNER_LEVELS, AgreementSummary, Budget,
                                 CalibrationOptions, DetectionOptions, PeriodicRefresh, calibrate,
                                 prepare_search, save_calibration, side_files)
from deltaonnx.calibrate.preparation import search_plan, search_segments
from deltaonnx.calibrate.search import Search, f1_out_of_reach
from deltaonnx.calibrate.verify import drifted
from deltaonnx.cli import main
from deltaonnx.convert import convert

pytestmark = pytest.mark.usefixtures("cpu_op_library")

QUICK = dict(search_frames=12, progress=False, profile_frames=0)


def clip(n_frames: int, hw=(64, 64), seed: int = 3) -> np.ndarray:
    """Synthetic frames (moving disc, noise, gain changes, a scene cut) as uint8 BGR [T,H,W,3]."""
    frames = synthetic_video.sequence((1, 3, *hw), n_frames, seed)
    return np.stack([(f.data[0].transpose(1, 2, 0)[:, :, ::-1] * 255).round().astype(np.uint8) for f in frames])


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    return clip(36)


@pytest.fixture(scope="module")
def resnet() -> onnx.ModelProto:
    return zoo.resnet18_like()


def delta_thresholds(model: onnx.ModelProto) -> dict[str, float]:
    values = {}
    for node in model.graph.node:
        if node.op_type in ("DeltaConv", "DeltaPool"):
            values[node.name] = next(a.f for a in node.attribute if a.name == "threshold")
    return values


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --------------------------------------------------------------------------------------------------------
# the search and its guarantees
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_error", [2e-3, 2e-2])
def test_budget_holds_on_the_calibration_frames_and_work_is_removed(resnet, frames, max_error):
    result = calibrate(resnet, frames, frames=(0, 24), heldout=(24, 36),
                       options=CalibrationOptions(budget=Budget(max_error=max_error), **QUICK))
    assert result.calibration.within_budget
    assert result.calibration.agreement.error <= max_error
    assert result.calibration.frames == 24 and result.heldout.frames == 12
    assert result.heldout.start == 24
    # the thresholds found remove work (the search measures all thresholds 0 only when it needs them)
    setup = prepare_search(resnet, frames, frames=(0, 24), options=CalibrationOptions(budget=Budget(max_error=max_error),
                                                                                      **QUICK))
    assert result.calibration.work < setup.evaluate(setup.uniform_levels(inner=0)).work
    assert any(tau > 0 for tau in result.thresholds.values())
    sources = {n.name for n in resnet.graph.node if n.op_type in ("Conv", "MaxPool")}
    assert set(result.thresholds) <= sources
    assert set(result.thresholds) == {n.source for n in result.nodes}
    for node in result.nodes:  # tau = factor x scale, the factor taken from the node's ladder
        assert node.tau == pytest.approx(node.factor * node.scale)
        assert node.scale > 0


def test_a_looser_budget_removes_at_least_as_much_work(resnet, frames):
    works = []
    for max_error in (1e-3, 3e-2):
        setup = prepare_search(resnet, frames, frames=(0, 24),
                               options=CalibrationOptions(budget=Budget(max_error=max_error), **QUICK))

        levels, best = Search(setup, lambda: False, lambda message: None).run()
        assert best.within_budget and best.agreement.error <= max_error
        works.append(best.work)
    assert works[1] <= works[0]


def test_larger_thresholds_remove_more_work_and_add_error(resnet, frames):
    setup = prepare_search(resnet, frames, frames=(0, 24), options=CalibrationOptions(**QUICK))
    levels = [0, 4, 8, 12, len(INNER_LEVELS) - 1]
    evaluations = [setup.evaluate(setup.uniform_levels(inner=level, gate=min(level, 3))) for level in levels]
    works = [e.work for e in evaluations]
    assert all(later <= earlier + 1e-12 for earlier, later in zip(works, works[1:])), works
    assert works[-1] < works[0]
    assert evaluations[0].agreement.error < 1e-5  # thresholds 0: equal to dense up to summation order
    assert evaluations[-1].agreement.error > 100 * max(evaluations[0].agreement.error, 1e-9)


def test_detections_budget_on_a_yolo_head(frames):
    model = zoo.yolov8_like()
    detections = DetectionOptions(conf_threshold=0.02, match_iou=0.5)
    result = calibrate(model, frames, frames=(0, 24), heldout=(24, 36),
                       options=CalibrationOptions(detections=detections, budget=Budget(min_f1=0.9, min_iou=0.9),
                                                  **QUICK))
    summary = result.calibration.agreement
    assert summary.reference_boxes > 0  # the check is not vacuous
    assert summary.f1 >= 0.9 and summary.mean_iou >= 0.9
    assert result.calibration.within_budget
    assert result.heldout.agreement.f1 is not None


def test_search_frames_grow_until_they_hold_the_box_minimum():
    def scored(counts, length, offsets):  # boxes on the frames scored: all but each segment's first
        return sum(sum(counts[o + 1:o + length]) for o in offsets)

    steady = [10] * 200
    length, offsets, boxes = search_plan(steady, 40, 2, 1000)
    assert (length, offsets) == (51, [0, 149]) and boxes == scored(steady, length, offsets) == 1000
    assert scored(steady, length - 1, offsets) < 1000  # the fewest frames that hold them
    late = [0] * 120 + [25] * 80  # the boxes arrive late: the segments grow until the last one holds them
    length, offsets, boxes = search_plan(late, 40, 2, 1000)
    shorter = search_segments(0, 200, 2 * (length - 1), 2)[1]
    assert boxes == scored(late, length, offsets) >= 1000 > scored(late, length - 1, shorter)
    assert search_plan(steady, 40, 2, 0) == (20, [0, 180], 380)  # no minimum: --search-frames
    assert search_plan([5] * 200, 40, 2, 1000) == (200, [0], 995)  # too few boxes: the whole range


def test_f1_out_of_reach_is_exact():
    # 90 found, 10 missed: F1 180/190 < 0.99 even if nothing else is left; 1000 boxes to come could lift it
    assert f1_out_of_reach(90, 0, 10, 0, 0.99)
    assert not f1_out_of_reach(90, 0, 10, 1000, 0.99)
    assert f1_out_of_reach(90, 0, 10, 404, 0.99) and not f1_out_of_reach(90, 0, 10, 405, 0.99)  # 990/1000
    assert not f1_out_of_reach(0, 50, 50, 0, None)  # no F1 budget: never


def test_detector_search_holds_the_box_minimum_and_drops_hopeless_candidates(frames):
    model = zoo.with_plausible_boxes(zoo.yolov8_like())
    detections = DetectionOptions(conf_threshold=0.25, match_iou=0.5)
    options = CalibrationOptions(detections=detections, budget=Budget(min_f1=0.99), search_frames=4,
                                 search_segments=2, min_boxes=60, progress=False, profile_frames=0)
    setup = prepare_search(model, frames, frames=(0, 36), options=options)
    assert setup.range_boxes > 60  # the clip has enough: the search frames hold the minimum, not more
    assert setup.search_boxes == setup.runner.scored_boxes() >= 60
    assert setup.segment_length * len(setup.segment_starts) < 36
    exact = setup.evaluate(setup.uniform_levels(inner=0))
    assert exact.within_budget and not exact.stopped_early and exact.agreement.f1 == 1.0
    assert exact.agreement.reference_boxes == setup.search_boxes
    # a candidate that finds no box (the random-weight zoo model's boxes hardly depend on the input, so no
    # threshold breaks them: the scorer stands in for a bad candidate)
    real_score = setup.scorer.score

    def finds_nothing(reference, outputs):
        score = real_score(reference, outputs)
        score.false_negatives += score.true_positives
        score.true_positives = 0
        return score

    setup.scorer.score = finds_nothing
    hopeless = setup.evaluate(setup.uniform_levels(inner=1))
    assert hopeless.stopped_early and not hopeless.within_budget
    assert setup.runner.frames_skipped > 0
    assert 0 < hopeless.agreement.reference_boxes < setup.search_boxes  # it stopped before the last frame
    assert hopeless.agreement.frames <= 2  # out of reach after the first scored frames

    too_many = prepare_search(model, frames, frames=(0, 36), options=CalibrationOptions(
        detections=detections, budget=Budget(min_f1=0.99), search_frames=4, min_boxes=10**6, progress=False))
    assert (too_many.segment_length, too_many.segment_starts) == (36, [0])  # the whole range, and it says so
    assert too_many.search_boxes < 10**6


def test_searched_thresholds_are_verified_on_the_whole_range(resnet, frames, monkeypatch):
    """Thresholds the search passed (here: forced, the largest) that break the budget on the calibration
    frames are backed off until the whole range keeps it."""
    from deltaonnx import calibrate as module

    def passes_anything(search):
        levels = {n.name: (len(module.GATE_LEVELS) if n.gate else len(INNER_LEVELS)) - 1 for n in search.nodes}
        return levels, search.evaluate(levels, "forced", "largest levels", force=True)

    monkeypatch.setattr(Search, "run", passes_anything)
    result = calibrate(resnet, frames, frames=(0, 24), heldout=None,
                       options=CalibrationOptions(budget=Budget(max_error=2e-3), **QUICK))
    assert result.search["backoffs"] >= 1
    assert not result.search["verification"][0]["within_budget"]  # the searched levels failed on all frames
    assert result.calibration.frames == 24 and result.calibration.within_budget
    assert result.calibration.agreement.error <= 2e-3


def cell_detector(side: int = 32, cell: int = 8) -> onnx.ModelProto:
    """A YOLOv8-style head whose boxes are the cells of a grid, each scoring its mean grey level (a 1x1 Conv,
    then an average pool per cell): boxes come and go exactly as the clip says."""
    from onnx import TensorProto, helper, numpy_helper

    cells = side // cell
    centres = (np.arange(cells) + 0.5) * cell
    cy, cx = np.meshgrid(centres, centres, indexing="ij")
    boxes = np.stack([cx.ravel(), cy.ravel(), np.full(cells * cells, cell), np.full(cells * cells, cell)])
    initializers = [numpy_helper.from_array(np.full((1, 3, 1, 1), 1 / 3, np.float32), "grey"),
                    numpy_helper.from_array(boxes[None].astype(np.float32), "boxes"),
                    numpy_helper.from_array(np.array([1, 1, cells * cells], np.int64), "flat")]
    nodes = [helper.make_node("Conv", ["images", "grey"], ["level"], name="grey_conv"),
             helper.make_node("AveragePool", ["level"], ["cells"], kernel_shape=[cell, cell], strides=[cell, cell]),
             helper.make_node("Reshape", ["cells", "flat"], ["scores"]),
             helper.make_node("Concat", ["boxes", "scores"], ["output0"], axis=1)]
    graph = helper.make_graph(nodes, "cells", [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                                                             [1, 3, side, side])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 5, cells * cells])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def cell_clip(n_frames: int, side: int = 32, cell: int = 8, seed: int = 0) -> np.ndarray:
    """Grey levels per cell (0.3, 0.45, 0.55, 0.7 of white), a third of the cells changing each frame."""
    rng = np.random.default_rng(seed)
    cells = side // cell
    levels = rng.choice([0.3, 0.45, 0.55, 0.7], size=(cells, cells))
    frames = []
    for _ in range(n_frames):
        changing = rng.random((cells, cells)) < 1 / 3
        levels = np.where(changing, rng.choice([0.3, 0.45, 0.55, 0.7], size=(cells, cells)), levels)
        image = np.kron(levels, np.ones((cell, cell)))
        frames.append(np.repeat((255 * image).round().astype(np.uint8)[:, :, None], 3, axis=2))
    return np.stack(frames)


def test_detector_report_has_strict_and_margin_f1_and_dense_flicker():
    model, clip_frames = cell_detector(), cell_clip(16)
    detections = DetectionOptions(conf_threshold=0.5, match_iou=0.5)  # margin 0.1: cells of 0.45 and 0.55
    result = calibrate(model, clip_frames, frames=(0, 16), heldout=None,
                       options=CalibrationOptions(detections=detections, budget=Budget(min_f1=0.9),
                                                  min_boxes=50, **QUICK))
    summary = result.calibration.agreement
    assert summary.margin_f1 is not None and summary.margin_f1 >= summary.f1 - 1e-12
    # dense ORT's own flicker, counted here from the clip: a box per cell above 0.5, the same cells matching
    shown = [set(zip(*np.nonzero(frame[::8, ::8, 0] > 0.5 * 255))) for frame in clip_frames]
    kept = sum(len(a & b) for a, b in zip(shown, shown[1:]))
    changed = sum(len(a ^ b) for a, b in zip(shown, shown[1:]))
    assert changed > 0
    assert result.calibration.dense_flicker == pytest.approx(1 - 2 * kept / (2 * kept + changed))
    report = result.report()
    assert "margin F1" in report and "dense flicker" in report and "noise floor" in report
    # a gate of 0.12 (grey levels) misses the cells moving between 0.45 and 0.55: strictly wrong boxes, each
    # within the margin of 0.5, so the margin F1 forgives all of them
    setup = prepare_search(model, clip_frames, frames=(0, 16), options=CalibrationOptions(
        detections=detections, budget=Budget(min_f1=0.0), min_boxes=50, **QUICK))
    assert [n.gate for n in setup.nodes] == [True]
    stale = setup.runner.evaluate({setup.nodes[0].name: 0.12}).agreement
    assert stale.f1 < 0.95 and stale.margin_f1 == 1.0


def test_the_gate_leaves_the_inner_nodes_half_the_budget():
    """A model where the gate removes little work per unit of error and the inner nodes much: a gate climbing
    until the budget breaks would leave the inner nodes nothing (work 0.90); with half the slack it stops at
    error 0.02 and the inner level takes the rest."""
    from types import SimpleNamespace

    from deltaonnx.calibrate import Evaluation, NodeCalibration, SearchSetup

    nodes = [NodeCalibration("gate", "g", "DeltaConv", True, 1.0, 1.0),
             NodeCalibration("inner", "i", "DeltaConv", False, 1.0, 1.0)]

    def evaluate(levels, **_):
        error = 0.01 * levels["gate"] + 0.005 * levels["inner"]
        work = 1.0 - 0.02 * levels["gate"] - 0.05 * levels["inner"]
        budget = Budget(max_error=0.05)
        agreement = AgreementSummary(10, error, {"y": error})
        return Evaluation(work, agreement, budget.holds(agreement), {}, 0.0)

    setup = SimpleNamespace(nodes=nodes, runner=SimpleNamespace(total_flops=2.0), budget=Budget(max_error=0.05),
                            evaluate=evaluate, gate_levels=GATE_LEVELS, dense_fraction=0.5,
                            taus=lambda levels: SearchSetup.taus(setup, levels),
                            ladder=lambda node: SearchSetup.ladder(setup, node))
    levels, best = Search(setup, lambda: False, lambda message: None).run()
    assert levels["gate"] == 2 and best.agreement.error <= 0.05
    assert best.work < 0.7 and levels["inner"] >= 6
    assert Budget(0.99, 0.95, 0.1).share(0.5) == Budget(pytest.approx(0.995), pytest.approx(0.975), 0.05)


def test_time_limit_stops_the_search_at_the_exact_baseline(resnet, frames):
    result = calibrate(resnet, frames, frames=(0, 24), heldout=None,
                       options=CalibrationOptions(time_limit=1e-3, **QUICK))
    assert result.search["stopped_by_time"]
    assert result.search["evaluations"] == 1  # only the baseline, all thresholds 0
    assert all(tau == 0 for tau in result.thresholds.values())
    assert result.heldout is None


def test_search_segments_spread_over_the_range():
    assert search_segments(0, 200, 40, 2) == (20, [0, 180])
    assert search_segments(100, 300, 40, 4) == (10, [100, 163, 227, 290])
    assert search_segments(0, 10, 40, 2) == (10, [0])  # short range: all of it, one segment


def test_drift_is_the_late_half_breaking_what_the_early_half_keeps():
    budget = Budget(max_error=0.01)
    early = AgreementSummary(10, 0.004, {"y": 0.004})
    assert drifted(early, AgreementSummary(10, 0.02, {"y": 0.02}), budget)
    assert not drifted(early, AgreementSummary(10, 0.005, {"y": 0.005}), budget)
    boxes = Budget(min_f1=0.95)
    assert drifted(AgreementSummary(10, 0.0, {}, f1=1.0, mean_iou=1.0, reference_boxes=20),
                    AgreementSummary(10, 0.0, {}, f1=0.8, mean_iou=1.0, reference_boxes=20), boxes)
    # one missed box out of one says nothing about drift
    assert not drifted(AgreementSummary(10, 0.0, {}, f1=1.0, mean_iou=1.0, reference_boxes=20),
                        AgreementSummary(10, 0.0, {}, f1=0.0, mean_iou=0.0, reference_boxes=1), boxes)


# --------------------------------------------------------------------------------------------------------
# files: the thresholds round-trip through convert; refresh
# --------------------------------------------------------------------------------------------------------


def test_saved_thresholds_round_trip_through_convert(resnet, frames, tmp_path, capsys):
    result = calibrate(resnet, frames, frames=(0, 24), heldout=(24, 36),
                       options=CalibrationOptions(budget=Budget(max_error=2e-2), **QUICK))
    written = save_calibration(result, tmp_path / "resnet.calibrated.onnx")
    thresholds_path, record_path = side_files(tmp_path / "resnet.calibrated.onnx")
    assert written == [tmp_path / "resnet.calibrated.onnx", thresholds_path, record_path]
    saved = onnx.load(str(written[0]))
    calibrated = delta_thresholds(saved)
    assert any(tau > 0 for tau in calibrated.values())

    assert json.loads(thresholds_path.read_text()) == pytest.approx(result.thresholds)
    record = json.loads(record_path.read_text())
    assert record["thresholds"] == pytest.approx(result.thresholds)
    assert record["calibration"]["within_budget"] is True
    stamp = {p.key: p.value for p in saved.metadata_props}[CALIBRATION_METADATA_KEY]
    assert json.loads(stamp)["refresh"] == result.refresh

    dense_path = tmp_path / "resnet.onnx"
    onnx.save(resnet, str(dense_path))
    code, _, err = run_cli(capsys, "convert", dense_path, "--thresholds", thresholds_path,
                           "-o", tmp_path / "again.onnx")
    assert code == 0, err
    again = delta_thresholds(onnx.load(str(tmp_path / "again.onnx")))
    assert again == pytest.approx(calibrated)
    assert delta_thresholds(convert(resnet, thresholds=json.loads(thresholds_path.read_text()))) == \
        pytest.approx(calibrated)


def test_refresh_recomputes_exactly_every_k_frames(resnet, frames):
    from deltaonnx.bench import session_options
    import onnxruntime as ort

    converted = convert(resnet, threshold=0.2, inner_threshold=2.0)  # coarse: far from dense between refreshes
    runner = PeriodicRefresh(DeltaSession(converted, session_options(1), dense_fallback=False), every=4)
    dense = ort.InferenceSession(resnet.SerializeToString(), providers=["CPUExecutionProvider"])
    differences = []
    for frame in frames[:12]:
        feed = {"input": (frame[:, :, ::-1].transpose(2, 0, 1)[None] / np.float32(255)).astype(np.float32)}
        name = dense.get_inputs()[0].name
        feed = {name: feed["input"]}
        differences.append(float(np.abs(runner.run(None, feed)[0] - dense.run(None, feed)[0]).max()))
    refreshed = [differences[k] for k in (0, 4, 8)]
    others = [d for k, d in enumerate(differences) if k % 4]
    assert max(refreshed) < 1e-4
    assert max(others) > 1e-3  # without the refresh these frames do differ: the test can fail


def test_forced_refresh_is_recorded_and_read_back(resnet, frames, tmp_path):
    result = calibrate(resnet, frames, frames=(0, 24), heldout=(24, 36),
                       options=CalibrationOptions(refresh=6, budget=Budget(max_error=2e-2), **QUICK))
    assert result.refresh == 6 and result.calibration.refresh == 6 and result.heldout.refresh == 6
    path = save_calibration(result, tmp_path / "m.onnx")[0]
    runner = PeriodicRefresh.from_model(DeltaSession(str(path)))
    assert runner.every == 6


def test_inspect_shows_the_calibration(resnet, frames, tmp_path, capsys):
    result = calibrate(resnet, frames, frames=(0, 24), heldout=(24, 36),
                       options=CalibrationOptions(refresh=6, budget=Budget(max_error=2e-2), **QUICK))
    path = save_calibration(result, tmp_path / "m.onnx")[0]
    code, out, err = run_cli(capsys, "inspect", path)
    assert code == 0, err
    assert "refresh: full recompute every 6 frames per stream" in out and "max_error 0.02" in out


# --------------------------------------------------------------------------------------------------------
# the input gate's rule: the search runs the model the calibration writes
# --------------------------------------------------------------------------------------------------------


def scored_fractions(model: bytes, segments: list) -> dict[str, float]:
    """Mean recomputed fraction per Delta node on the search segments' scored frames (all but each first)."""
    from deltaonnx.bench import session_options

    session = DeltaSession(model, session_options(1), dense_fallback=False)
    sums, scored = {}, 0
    for index, segment in enumerate(segments):
        for position, (feed, _) in enumerate(segment):
            session.run(None, feed, stream=f"segment-{index}")
            if position:
                scored += 1
                for name, entry in session.stats(f"segment-{index}")["nodes"].items():
                    sums[name] = sums.get(name, 0.0) + entry["fraction"]
    return {name: total / scored for name, total in sums.items()}


@pytest.mark.parametrize("rule", ["block", "pixel"])
def test_the_search_runs_the_gate_rule_the_model_is_written_with(resnet, frames, rule):
    setup = prepare_search(resnet, frames, frames=(0, 24), options=CalibrationOptions(gate=rule, **QUICK))
    levels = setup.uniform_levels(inner=INNER_LEVELS.index(0.1), gate=GATE_LEVELS.index(0.03))
    searched = setup.evaluate(levels)
    taus = setup.taus(levels)
    gate_tau = next(taus[n.name] for n in setup.nodes if n.gate)
    thresholds = {n.source: taus[n.name] for n in setup.nodes}
    written = {r: convert(resnet, threshold=gate_tau, thresholds=thresholds, gate=r) for r in ("block", "pixel")}
    assert [n.op_type for n in written["block"].graph.node].count("DeltaGate") == 1
    measured = {r: scored_fractions(m.SerializeToString(), setup.runner.segments) for r, m in written.items()}
    assert searched.fractions == pytest.approx(measured[rule], abs=1e-9)
    assert setup.runner.models.rules_run == {rule}
    # the other rule's model redoes other work on these frames: a search under it would be seen
    other = measured["pixel" if rule == "block" else "block"]
    assert max(abs(other[name] - value) for name, value in measured[rule].items() if name in other) > 0.01


@pytest.mark.parametrize("arguments, rule", [((), "block"), (("--gate", "pixel"), "pixel")])
def test_cli_gate_rule_is_searched_written_and_recorded(capsys, model_path, clip_folder, tmp_path, arguments, rule):
    """convert's default rule, or the user's --gate pixel: searched, written and recorded (a loose budget so
    that the gate's threshold rises above 0)."""
    from deltaonnx.calibrate import CalibrationStamp

    code, out, err = run_cli(capsys, "calibrate", model_path, "--video", clip_folder, "--frames", "0:20",
                             "--heldout", "none", "--max-error", "0.5", "--search-frames", "10", "--quiet",
                             *arguments)
    assert code == 0, err
    output = tmp_path / "resnet.calibrated.onnx"
    saved = onnx.load(str(output))
    stamp = CalibrationStamp.of(saved)
    assert stamp.gate["rule"] == rule and stamp.gate["threshold"] > 0
    gates = [n for n in saved.graph.node if n.op_type == "DeltaGate"]
    readers = [n for n in saved.graph.node if n.op_type == "DeltaConv" and n.input[0] == "input"]
    if rule == "block":
        assert len(gates) == 1 and stamp.gate["inserted"] and stamp.gate["gate_block"] == 8
        assert next(a.f for a in gates[0].attribute if a.name == "threshold") == pytest.approx(stamp.gate["threshold"])
        assert stamp.gate["gate_hard"] == pytest.approx(4 * stamp.gate["threshold"])
    else:
        assert gates == [] and len(readers) == 1
        assert next(a.f for a in readers[0].attribute if a.name == "threshold") == pytest.approx(stamp.gate["threshold"])
    record = json.loads(side_files(output)[1].read_text())
    assert record["search"]["gate_rules_searched"] == [rule]
    assert record["settings"]["gate"] == stamp.gate
    assert f"input gate: {rule} rule" in out and f"the search ran the {rule} rule" in out


def test_a_fixed_gate_hard_bounds_the_gate_ladder(resnet, frames):
    from deltaonnx.calibrate.candidates import usable_gate_levels

    setup = prepare_search(resnet, frames, frames=(0, 24), options=CalibrationOptions(gate_hard=0.02, **QUICK))
    scale = next(n.scale for n in setup.nodes if n.gate)
    assert setup.gate_levels == tuple(level for level in GATE_LEVELS if level * scale <= 0.02)
    assert 1 < len(setup.gate_levels) < len(GATE_LEVELS)
    top = setup.uniform_levels(inner=0, gate=len(setup.gate_levels) - 1)
    assert setup.evaluate(top).work < 1.0  # the highest level allowed converts (above it convert refuses)
    assert usable_gate_levels(CalibrationOptions(gate="pixel", gate_hard=0.02), setup.nodes) == GATE_LEVELS


# --------------------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory, frames):
    import cv2

    folder = tmp_path_factory.mktemp("clip")
    for index, frame in enumerate(frames):
        assert cv2.imwrite(str(folder / f"frame{index}.png"), frame)
    return folder


@pytest.fixture
def model_path(tmp_path, resnet):
    path = tmp_path / "resnet.onnx"
    onnx.save(resnet, str(path))
    return path


def test_cli_writes_model_and_json_and_prints_both_tables(capsys, model_path, clip_folder, tmp_path):
    code, out, err = run_cli(capsys, "calibrate", model_path, "--video", clip_folder, "--frames", "0:20",
                             "--max-error", "0.02", "--search-frames", "10", "--quiet")
    assert code == 0, err
    assert err == ""  # --quiet: no progress
    output = tmp_path / "resnet.calibrated.onnx"
    thresholds_path, record_path = side_files(output)
    assert output.is_file() and thresholds_path.is_file() and record_path.is_file()
    assert "calibration" in out and "held-out" in out and "20-35" in out  # default held-out: the next frames
    assert f"wrote {thresholds_path}" in out
    record = json.loads(record_path.read_text())
    assert record["settings"]["frames"] == [0, 20] and record["heldout"]["frames"] == 16


def assert_user_error(code, err, message_part):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("deltaonnx: error: "), err
    assert message_part in lines[0], err


def test_cli_box_budget_with_detections_is_used(capsys, clip_folder, tmp_path):
    """--min-f1/--min-iou with --detections set the budget (they were refused as if --detections were absent)."""
    path = tmp_path / "yolo.onnx"
    onnx.save(zoo.yolov8_like(), str(path))
    code, _, err = run_cli(capsys, "calibrate", path, "--video", clip_folder, "--frames", "0:20", "--heldout", "none",
                           "--detections", "yolo", "--conf", "0.02", "--min-f1", "0.9", "--min-iou", "0.85",
                           "--min-boxes", "0", "--search-frames", "10", "--time-limit", "1", "--quiet")
    assert code == 0, err
    record = json.loads(side_files(tmp_path / "yolo.calibrated.onnx")[1].read_text())
    assert record["budget"]["min_f1"] == 0.9 and record["budget"]["min_iou"] == 0.85


@pytest.mark.parametrize("arguments, message", [
    (["--frames", "5:2"], "expected 0 <= A < B"),
    (["--frames", "abc"], "expected A:B"),
    (["--frames", "0:20", "--heldout", "10:30"], "overlap"),
    (["--min-f1", "0.9"], "add --detections yolo"),
    (["--refresh", "-1"], "must be >= 0"),
    (["--frames", "500:600"], "the clip has 36 frames"),
    (["-o", "out.txt"], "must be an .onnx file"),
])
def test_cli_user_errors(capsys, model_path, clip_folder, tmp_path, arguments, message):
    arguments = [str(tmp_path / a) if a == "out.txt" else a for a in arguments]
    code, _, err = run_cli(capsys, "calibrate", model_path, "--video", clip_folder, "--quiet", *arguments)
    assert_user_error(code, err, message)


def test_cli_missing_video_and_converted_model(capsys, model_path, clip_folder, tmp_path):
    code, _, err = run_cli(capsys, "calibrate", model_path, "--video", tmp_path / "nope.avi")
    assert_user_error(code, err, "no such video")
    converted = tmp_path / "converted.onnx"
    onnx.save(convert(str(model_path)), str(converted))
    code, _, err = run_cli(capsys, "calibrate", converted, "--video", clip_folder, "--quiet")
    assert_user_error(code, err, "already converted")


def ramp_clip(n_frames: int = 48, hw=(64, 64)) -> np.ndarray:
    """A still scene brightening by a third of a grey level per frame: each frame's change stays below a gate
    that the accumulated change exceeds later, so the error of stale pixels grows along the clip (drift)."""
    yy, xx = np.mgrid[0:hw[0], 0:hw[1]]
    base = 60 + 100 * (yy / hw[0]) + 50 * np.sin(xx / 7.0)
    frames = []
    for t in range(n_frames):
        plane = np.clip(np.round(base + 0.35 * t), 0, 255).astype(np.uint8)
        frames.append(np.stack([plane, np.roll(plane, 5, 1), np.roll(plane, 9, 0)], axis=2))
    return np.stack(frames)


def test_auto_refresh_is_chosen_when_the_late_frames_drift(resnet):
    frames = ramp_clip()
    options = dict(budget=Budget(max_error=2e-3), search_frames=8, progress=False, profile_frames=0)
    with_refresh = calibrate(resnet, frames, frames=(0, 32), heldout=(32, 48),
                             options=CalibrationOptions(refresh="auto", **options))
    without = calibrate(resnet, frames, frames=(0, 32), heldout=(32, 48),
                        options=CalibrationOptions(refresh=0, **options))
    first_pass = with_refresh.search["verification"][0]
    assert not first_pass["within_budget"] and first_pass["drift"]  # the searched thresholds drift ...
    assert with_refresh.refresh > 0  # ... so a refresh period is chosen
    assert with_refresh.calibration.within_budget and with_refresh.calibration.refresh == with_refresh.refresh
    assert with_refresh.heldout.refresh == with_refresh.refresh
    assert without.refresh == 0 and without.calibration.within_budget  # without it: backed off instead
    assert with_refresh.calibration.work < without.calibration.work

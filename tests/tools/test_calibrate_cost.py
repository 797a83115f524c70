"""What calibrate does to spend less CPU per result, and why it decides as it did: a greedy step stops once it
cannot gain (the nodes above and beside the changed one compute exactly what the best candidate computed), the
verification scores cached dense answers, and a refusal undoes the search's last accepted steps first."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

import synthetic_video
import zoo
from deltaonnx.calibrate import INNER_LEVELS, Budget, CalibrationOptions, calibrate, measure_range, prepare_search
from deltaonnx.calibrate import calibration as calibration_module
from deltaonnx.calibrate.calibration import backoff_schedule
from deltaonnx.calibrate.model_nodes import work_redone
from deltaonnx.calibrate import search as search_module
from deltaonnx.calibrate.search import Search, WorkFloor
from deltaonnx.calibrate.verify import DENSE_TIMING_STRIDE

pytestmark = pytest.mark.usefixtures("cpu_op_library")

QUICK = dict(search_frames=12, progress=False, profile_frames=0)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """Synthetic frames (moving disc, noise, gain changes, a scene cut) as uint8 BGR [T,H,W,3]."""
    sequence = synthetic_video.sequence((1, 3, 64, 64), 36, 3)
    return np.stack([(f.data[0].transpose(1, 2, 0)[:, :, ::-1] * 255).round().astype(np.uint8) for f in sequence])


@pytest.fixture(scope="module")
def resnet() -> onnx.ModelProto:
    return zoo.resnet18_like()


@pytest.fixture(scope="module")
def setup(resnet, frames):
    return prepare_search(resnet, frames, frames=(0, 24), options=CalibrationOptions(**QUICK))


def quiet_search(setup) -> Search:
    return Search(setup, lambda: False, lambda message: None)


def test_a_step_alters_only_the_nodes_below_it_so_the_work_floor_is_exact(setup):
    names = [n.name for n in setup.nodes]
    gate = next(n for n in setup.nodes if n.gate)
    assert setup.below[gate.name] == set(names)  # every node reads the frame
    inner = [n for n in setup.nodes if not n.gate and n.flops]
    middle = inner[len(inner) // 2]
    assert middle.name in setup.below[middle.name] and len(setup.below[middle.name]) < len(names)
    levels = setup.uniform_levels(inner=INNER_LEVELS.index(0.05))
    best = setup.evaluate(levels)
    step = dict(levels, **{middle.name: len(INNER_LEVELS) - 1})
    stepped = setup.evaluate(step)
    assert len(best.frame_fractions) == len(stepped.frame_fractions) > 0
    changed = set()
    for before, after in zip(best.frame_fractions, stepped.frame_fractions):
        changed |= {name for name in names if after[name] != before[name]}
        for name in set(names) - setup.below[middle.name]:  # above and beside: bit for bit what best computed
            assert after[name] == before[name], name
    # the step changed its own node and some below it: the equality above is not vacuous
    assert middle.name in changed and changed - {middle.name}
    floor = quiet_search(setup).work_floor(best, [middle])
    for bound, fractions in zip(floor.frame_bounds, stepped.frame_fractions):
        assert bound <= work_redone(fractions, setup.nodes, setup.dense_flops, setup.total_flops) + 1e-12
    assert floor.at_most == pytest.approx(best.work - 0.002)


def test_a_step_that_cannot_gain_stops_early_and_is_not_cached(setup, monkeypatch):
    assert WorkFloor([0.5] * 4, 0.45).out_of_reach([0.5])  # (0.5 + 3 x 0.5) / 4 > 0.45
    assert not WorkFloor([0.5] * 4, 0.45).out_of_reach([0.3])  # (0.3 + 1.5) / 4 = 0.45 is still in reach
    levels = setup.uniform_levels(inner=INNER_LEVELS.index(0.05))
    search = quiet_search(setup)
    best = search.evaluate(levels, "uniform", "base")
    node = next(n for n in setup.nodes if not n.gate and n.flops)
    floor = search.work_floor(best, [node])
    hopeless = WorkFloor(floor.frame_bounds, min(floor.frame_bounds) - 1e-3)  # below any frame's floor
    skipped = setup.runner.frames_skipped
    step = dict(levels, **{node.name: levels[node.name] + 1})
    sessions = []
    real_session = search_module.DeltaSession
    monkeypatch.setattr(search_module, "DeltaSession", lambda *a, **k: sessions.append(1) or real_session(*a, **k))
    result = search.evaluate(step, "sweep", "step", floor=hopeless)
    assert result.no_gain and result.stopped_early and not result.within_budget
    assert setup.runner.frames_skipped - skipped == sum(map(len, setup.runner.segments))
    assert not sessions  # out of reach before the first frame: not even a session is made
    assert search.evaluate(step, "sweep", "step again").no_gain is False  # measured in full once asked without


def test_the_exact_baseline_is_measured_only_when_read():
    """The search's dearest candidate (all thresholds 0, nearly dense cost) is skipped when the gate or a
    uniform level passes, and measured when nothing does."""
    from types import SimpleNamespace

    from deltaonnx.calibrate import GATE_LEVELS, AgreementSummary, Evaluation, NodeCalibration, SearchSetup

    nodes = [NodeCalibration("gate", "g", "DeltaConv", True, 1.0, 1.0),
             NodeCalibration("inner", "i", "DeltaConv", False, 1.0, 1.0)]

    def run(error_per_level: float) -> list:
        seen = []

        def evaluate(levels, **_):
            seen.append(dict(levels))
            error = error_per_level * (levels["gate"] + levels["inner"])
            agreement = AgreementSummary(10, error, {"y": error})
            return Evaluation(1.0 - 0.01 * sum(levels.values()), agreement, error <= 0.05, {}, 0.0)

        setup = SimpleNamespace(nodes=nodes, runner=SimpleNamespace(total_flops=2.0), budget=Budget(max_error=0.05),
                                evaluate=evaluate, gate_levels=GATE_LEVELS, dense_fraction=0.5, below=None,
                                taus=lambda levels: SearchSetup.taus(setup, levels),
                                ladder=lambda node: SearchSetup.ladder(setup, node))
        quiet_search(setup).run()
        return seen

    assert {"gate": 0, "inner": 0} not in run(0.001)
    assert run(1.0).count({"gate": 0, "inner": 0}) == 1  # nothing passes: the baseline is the result


def test_the_verification_scores_cached_dense_answers_as_dense_ort_gives_them(resnet, frames, setup):
    """The verification reuses dense ORT's answers from the preparation and runs dense ORT on every
    DENSE_TIMING_STRIDE-th of those frames only, to time it: the agreement is the one of running it always."""
    assert len(setup.references) == setup.segment_length * len(setup.segment_starts)  # the search frames'
    converted = calibration_module.convert_thresholds(
        resnet, {n.source: 0.3 * n.scale for n in setup.nodes if not n.gate}, 0.0, CalibrationOptions())
    first = setup.segment_starts[0]
    start, stop = first, first + setup.segment_length
    runs = []
    for references in (None, setup.references):
        runs.append(measure_range(setup.dense_bytes, converted, frames, start, stop, setup.preprocess,
                                  setup.input_name, setup.scorer, setup.budget, setup.nodes, setup.dense_flops,
                                  setup.total_flops, warmup=0, references=references))
    fresh, cached = runs
    assert cached.agreement == fresh.agreement and cached.agreement.error > 0
    assert cached.dense_jitter == fresh.dense_jitter and cached.work == fresh.work
    assert np.isfinite(cached.speedup) and cached.dense_ms > 0 and stop - start > 2  # frames dense ORT skipped


def test_backoff_undoes_the_last_accepted_steps_first():
    exact, uniform = {"a": 0, "b": 0}, {"a": 3, "b": 3}
    one, two = {"a": 4, "b": 3}, {"a": 4, "b": 5}
    accepted = [("all thresholds 0", exact), ("inner", uniform), ("a", one), ("b", two)]
    labels, entries = zip(*backoff_schedule(accepted, two))
    assert entries == (two, one, uniform, {"a": 3, "b": 4}, {"a": 2, "b": 2}, exact)
    assert labels[1].startswith("the last 1 accepted step") and labels[-1] == "all thresholds 0"
    # refused by more than the slack, or levels the search did not reach: the uniform cuts only
    assert [e for _, e in backoff_schedule(accepted, two, undo_steps=False)] == [two, {"a": 3, "b": 4},
                                                                               {"a": 2, "b": 2}, exact]
    assert [e for _, e in backoff_schedule([], two)][1] == {"a": 3, "b": 4}


def test_a_refusal_by_the_last_step_undoes_only_that_step(resnet, frames, monkeypatch):
    """The searched levels are refused on the whole range (here: forced, for its last step) while the ones
    before pass: the verification's second try is the search's previous accepted set, not every level a step
    down."""
    base = INNER_LEVELS.index(0.05)
    forced = {}

    def searched(search):
        target = [n for n in search.nodes if not n.gate and n.flops][-1]
        exact = {n.name: 0 for n in search.nodes}
        uniform = {n.name: 0 if n.gate else base for n in search.nodes}
        last = dict(uniform, **{target.name: base + 2})
        forced.update(target=target, uniform=uniform, last=last)
        search.accepted = [("all thresholds 0", exact), ("inner 0.05", uniform), (f"{target.name} -> 0.1", last)]
        return last, search.evaluate(last, "forced", "the last step", force=True)

    real_measure = calibration_module._measure

    def refuses_the_last_step(*args, **kwargs):
        result = real_measure(*args, **kwargs)
        converted, target = args[1], forced["target"]
        tau = next(a.f for node in converted.graph.node if node.name == target.name
                   for a in node.attribute if a.name == "threshold")
        if tau > INNER_LEVELS[base] * target.scale * 1.01:
            result.within_budget, result.violations = False, ["refused by the test"]
        return result

    monkeypatch.setattr(Search, "run", searched)
    monkeypatch.setattr(calibration_module, "_measure", refuses_the_last_step)
    result = calibrate(resnet, frames, frames=(0, 24), heldout=None,
                       options=CalibrationOptions(budget=Budget(max_error=2e-2), refresh=0, **QUICK))
    tried = [entry["levels"] for entry in result.search["verification"]]
    assert tried == [forced["last"], forced["uniform"]]
    assert result.search["backoffs"] == 1 and result.calibration.within_budget
    assert result.thresholds[forced["target"].source] == pytest.approx(INNER_LEVELS[base] * forced["target"].scale)


def test_a_step_whose_paired_gain_stays_below_the_bar_stops_after_a_quarter_of_the_frames():
    best = [0.5 + 0.1 * np.sin(k) for k in range(40)]  # frames differ; the step's gain per frame does not
    floor = WorkFloor([0.0] * 40, float(np.mean(best)) - 0.002, best)
    same = [w - 0.0005 for w in best]  # gains 0.05%: short of 0.2% whatever the frames still to come
    assert not floor.gain_unlikely(same[:9]) and floor.gain_unlikely(same[:10])  # a quarter of 40
    assert not floor.out_of_reach(same[:10])  # the exact floor (nothing known below) could not tell yet
    enough = [w - 0.003 for w in best]
    assert not any(floor.gain_unlikely(enough[:n]) for n in range(41))
    noisy = [w - 0.0015 + (0.02 if k % 2 else -0.02) for k, w in enumerate(best)]  # too noisy to judge
    assert not floor.gain_unlikely(noisy[:20])


def test_on_a_long_sample_the_paired_test_judges_after_a_fixed_number_of_frames():
    """Its power depends on the frames judged: 16 of a YOLOv8s's 168 search frames, not a quarter (42)."""
    best = [0.5 + 0.1 * np.sin(k) for k in range(168)]
    floor = WorkFloor([0.0] * 168, float(np.mean(best)) - 0.002, best)
    same = [w - 0.0005 for w in best]
    assert not floor.gain_unlikely(same[:15]) and floor.gain_unlikely(same[:16])
    enough = [w - 0.003 for w in best]
    assert not any(floor.gain_unlikely(enough[:n]) for n in range(169))
    # gains of 0.1% +- 0.35% per frame: after 16 frames 0.1% + one standard error (0.09%) is short of 0.2%
    marginal = [w - 0.001 + (0.0035 if k % 2 else -0.0035) for k, w in enumerate(best)]
    assert not floor.gain_unlikely(marginal[:15]) and floor.gain_unlikely(marginal[:16])


def test_only_a_node_that_runs_densely_climbs_past_a_step_that_gains_nothing():
    """Two nodes whose work drops only some levels up (the dense one at 3, the sparse one at 2): the one above
    its dense fraction (running densely) climbs there in one sweep; the sparse one is tried one level up and
    left."""
    from types import SimpleNamespace

    from deltaonnx.calibrate import GATE_LEVELS, AgreementSummary, Evaluation, NodeCalibration, SearchSetup

    nodes = [NodeCalibration("dense", "d", "DeltaConv", False, 1.0, 1.0),
             NodeCalibration("sparse", "s", "DeltaConv", False, 1.0, 1.0)]
    tried = []

    def evaluate(levels, **_):
        tried.append(dict(levels))
        work = 1.0 - 0.1 * (levels["dense"] >= 3) - 0.1 * (levels["sparse"] >= 2)
        # the budget holds up to level 3, unless both nodes move together (no uniform level passes)
        ok = max(levels.values()) <= 3 and (levels["dense"] != levels["sparse"] or not any(levels.values()))
        return Evaluation(work, AgreementSummary(10, 0.0, {"y": 0.0}), ok, {"dense": 1.0, "sparse": 0.3}, 0.0)

    setup = SimpleNamespace(nodes=nodes, runner=SimpleNamespace(total_flops=2.0), budget=Budget(max_error=0.05),
                            evaluate=evaluate, gate_levels=GATE_LEVELS, dense_fraction=0.5, below=None,
                            taus=lambda levels: SearchSetup.taus(setup, levels),
                            ladder=lambda node: SearchSetup.ladder(setup, node))
    levels, best = quiet_search(setup).run()
    assert levels == {"dense": 3, "sparse": 0} and best.work == pytest.approx(0.9)
    assert {"dense": 3, "sparse": 1} in tried and {"dense": 3, "sparse": 2} not in tried


def test_a_gate_candidate_stops_once_the_gates_share_of_the_slack_is_out_of_reach(frames):
    """The gate phase accepts only candidates within half the budget's slack: a candidate stops as soon as its
    box F1 cannot reach that share, though the whole budget would still hold; it is not cached as over the
    budget (the sweeps judge it by the whole budget)."""
    from deltaonnx.calibrate import DetectionOptions

    model = zoo.with_plausible_boxes(zoo.yolov8_like())
    options = CalibrationOptions(detections=DetectionOptions(conf_threshold=0.25), budget=Budget(min_f1=0.9),
                                 search_frames=4, min_boxes=60, progress=False, profile_frames=0)
    setup = prepare_search(model, frames, frames=(0, 36), options=options)
    real_score = setup.scorer.score
    misses = {"count": 0}

    def misses_one_box_in_eight(reference, outputs):  # F1 ~0.93: within 0.9, not within the gate's 0.95
        score = real_score(reference, outputs)
        for _ in range(score.true_positives):
            misses["count"] += 1
            if misses["count"] % 8 == 0:
                score.true_positives -= 1
                score.false_negatives += 1
        return score

    setup.scorer.score = misses_one_box_in_eight
    levels = setup.uniform_levels(inner=0)
    whole = setup.evaluate(levels)
    assert whole.within_budget and not whole.stopped_early and 0.95 > whole.agreement.f1 > 0.9
    search = quiet_search(setup)
    skipped = setup.runner.frames_skipped
    share = setup.budget.share(0.5)
    assert share.min_f1 == pytest.approx(0.95)
    misses["count"] = 0
    stopped = search.evaluate(levels, "gate", "gate share", stop_budget=share)
    assert stopped.stopped_early and not stopped.within_budget and setup.runner.frames_skipped > skipped
    assert stopped.agreement.frames < whole.agreement.frames
    misses["count"] = 0
    again = search.evaluate(levels, "sweep", "the whole budget")
    assert again.within_budget and again.agreement == whole.agreement


def test_later_sweeps_retry_only_the_groups_the_previous_sweep_moved():
    """Node `a` gains at every level up to 3; `b` and `c` never gain. The first sweep tries every group; the
    next ones only `a`, the one it moved, until a sweep moves nothing."""
    from types import SimpleNamespace

    from deltaonnx.calibrate import GATE_LEVELS, AgreementSummary, Evaluation, NodeCalibration, SearchSetup

    nodes = [NodeCalibration(name, name, "DeltaConv", False, 1.0, 1.0) for name in "abc"]
    tried = []

    def evaluate(levels, **_):
        tried.append(dict(levels))
        work = 1.0 - 0.1 * min(levels["a"], 3)
        # no uniform level passes (all three raised together), nor `a` above 3
        ok = levels["a"] <= 3 and (len(set(levels.values())) > 1 or not any(levels.values()))
        return Evaluation(work, AgreementSummary(10, 0.0, {"y": 0.0}), ok, {n: 0.3 for n in "abc"}, 0.0)

    setup = SimpleNamespace(nodes=nodes, runner=SimpleNamespace(total_flops=3.0), budget=Budget(max_error=0.05),
                            evaluate=evaluate, gate_levels=GATE_LEVELS, dense_fraction=0.5, below=None,
                            taus=lambda levels: SearchSetup.taus(setup, levels),
                            ladder=lambda node: SearchSetup.ladder(setup, node))
    levels, best = quiet_search(setup).run()
    assert levels == {"a": 3, "b": 0, "c": 0} and best.work == pytest.approx(0.7)
    steps_of = {name: [t for t in tried if t[name] == 1 and sum(t.values()) - t["a"] == 1] for name in "bc"}
    assert [len(steps_of[name]) for name in "bc"] == [1, 1]  # the first sweep only
    assert {"a": 4, "b": 0, "c": 0} in tried  # `a` climbed until its step broke the budget


def test_the_record_says_where_the_cpu_went_phase_by_phase(resnet, frames):
    result = calibrate(resnet, frames, frames=(0, 24), heldout=(24, 36),
                       options=CalibrationOptions(budget=Budget(max_error=2e-2), refresh=0, **QUICK))
    timings = result.search["timings"]
    phases = {entry["phase"] for entry in result.search["history"]}
    assert {"preparation", "verify", "held-out", "search, between candidates", "other"} | phases == set(timings)
    assert sum(t["cpu_seconds"] for t in timings.values()) == pytest.approx(result.search["cpu_seconds"], rel=1e-6)
    for phase in phases:  # each candidate counted once, in its own phase
        runs = [e for e in result.search["history"] if e["phase"] == phase]
        assert timings[phase]["runs"] == len(runs)
        assert timings[phase]["cpu_seconds"] == pytest.approx(sum(e["cpu_seconds"] for e in runs))
    assert timings["verify"]["runs"] == len(result.search["verification"]) - 1  # the held-out row is apart
    assert timings["preparation"]["cpu_seconds"] > 0 and timings["held-out"]["cpu_seconds"] > 0
    assert "CPU by phase: preparation " in result.report()


def test_while_searching_the_reserve_counts_the_searched_candidate_at_its_own_cost():
    """200 frames, 200 held-out, dense 0.27 s a frame, the candidates 0.1 s, dense ORT on a quarter of the
    verification's frames: during the search the first verification and the held-out check at the candidates'
    cost, one back-off at dense cost; after it, every pass at dense cost at least (as before)."""
    from deltaonnx.calibrate.calibration import reserve_seconds

    searching = reserve_seconds(200, 200, 0.27, 0.1, 0.25, 2, searched=True)
    assert searching == pytest.approx(1.2 * (200 * (0.1 + 0.0675) + 200 * (0.27 + 0.0675) + 200 * (0.27 + 0.1)))
    assert reserve_seconds(200, 200, 0.27, 0.1, 0.25, 2) == pytest.approx(1.2 * (2 * 200 * 0.3375 + 200 * 0.54))
    assert searching < reserve_seconds(200, 200, 0.27, 0.1, 0.25, 2) - 80
    # nothing measured yet, or candidates dearer than dense: dense cost at least
    assert reserve_seconds(200, 0, 0.27, 0.0, 0.25, 1, searched=True) == pytest.approx(1.2 * 200 * 0.3375)
    assert reserve_seconds(200, 0, 0.27, 0.5, 0.25, 2) == pytest.approx(1.2 * 2 * 200 * (0.5 + 0.0675))


def test_the_gate_phase_leaves_the_level_above_its_passing_one_to_the_first_sweep():
    """The gate's candidates run the inner nodes exact (nearly dense cost): its bisection stops with one level
    above the passing one untried, and the first sweep tries it at the inner nodes' cost."""
    from types import SimpleNamespace

    from deltaonnx.calibrate import GATE_LEVELS, AgreementSummary, Evaluation, NodeCalibration, SearchSetup

    nodes = [NodeCalibration("gate", "g", "DeltaConv", True, 1.0, 1.0),
             NodeCalibration("inner", "i", "DeltaConv", False, 1.0, 1.0)]

    def evaluate(levels, **_):
        error = 0.0075 * levels["gate"] + 0.005 * levels["inner"]  # the gate's share (0.025) holds up to level 3
        agreement = AgreementSummary(10, error, {"y": error})
        work = 1.0 - 0.02 * levels["gate"] - 0.05 * levels["inner"]
        return Evaluation(work, agreement, error <= 0.05, {"gate": 0.3, "inner": 0.3}, 0.0)

    setup = SimpleNamespace(nodes=nodes, runner=SimpleNamespace(total_flops=2.0), budget=Budget(max_error=0.05),
                            evaluate=evaluate, gate_levels=GATE_LEVELS, dense_fraction=0.5, below=None,
                            taus=lambda levels: SearchSetup.taus(setup, levels),
                            ladder=lambda node: SearchSetup.ladder(setup, node))
    search = quiet_search(setup)
    search.run()
    gate_phase = [e["change"] for e in search.history if e["phase"] == "gate"]
    assert gate_phase == [f"gate {GATE_LEVELS[4]:g} x range", f"gate {GATE_LEVELS[2]:g} x range"]  # not level 3
    assert f"gate -> {GATE_LEVELS[3]:g}" in [e["change"] for e in search.history if e["phase"] == "sweep 1"]

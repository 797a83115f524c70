"""The search on the search frames: candidates run through DeltaSession and scored, the gate, one level for all
nodes, then greedy sweeps."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import onnx

from ..bench import session_options
from ..session import DeltaSession
from ..video import Preprocess
from .agreement import AgreementSummary, Budget, Scorer, f1_score, summarize
from .candidates import SearchModels
from .levels import GATE_LEVELS, GATE_SHARE, INNER_LEVELS, MAX_CLIMB, MIN_GAIN, MIN_POTENTIAL, CalibrationError
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

    def ladder(self, node: NodeCalibration) -> tuple:
        """The factors a node's level may take."""
        return self.gate_levels if node.gate else INNER_LEVELS

    def taus(self, levels: dict[str, int]) -> dict[str, float]:
        """Delta node -> tau for a level per node."""
        return {n.name: self.ladder(n)[levels[n.name]] * n.scale for n in self.nodes}

    def uniform_levels(self, inner: int, gate: int = 0) -> dict[str, int]:
        return {n.name: gate if n.gate else inner for n in self.nodes}

    def evaluate(self, levels: dict[str, int]) -> Evaluation:
        """Run the search frames with these levels: work redone and agreement against dense."""
        return self.runner.evaluate(self.taus(levels))


@dataclass
class Evaluation:
    work: float  # FLOP-weighted share of conv work redone (mean over scored frames)
    agreement: AgreementSummary
    within_budget: bool
    fractions: dict[str, float]
    cpu_seconds: float
    stopped_early: bool = False  # the box F1 budget was out of reach before the last search frame


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
        self.frames_skipped = 0  # search frames not run because the candidate had already failed
        self.frame_seconds: list[float] = []

    def model_with(self, taus: dict[str, float]) -> bytes:
        return self.models.serialized(taus)

    def evaluate(self, taus: dict[str, float]) -> Evaluation:
        started = time.process_time()
        session = DeltaSession(self.model_with(taus), session_options(self.threads), dense_fallback=False)
        scores, works = [], []
        fraction_sums: dict[str, float] = {}
        # a failing candidate is dropped as soon as the box F1 budget is out of reach (the search's many
        # rejected steps would otherwise run every search frame)
        remaining = self.scored_boxes()
        tp = fp = fn = 0
        stopped_early = False
        for index, segment in enumerate(self.segments):
            if stopped_early:
                self.frames_skipped += len(segment)
                continue
            stream = f"segment-{index}"
            for position, (feed, reference) in enumerate(segment):
                if f1_out_of_reach(tp, fp, fn, remaining, self.budget.min_f1):
                    stopped_early = True
                    self.frames_skipped += len(segment) - position
                    break
                run_started = time.thread_time()
                outputs = session.run(None, feed, stream=stream)
                self.frame_seconds.append(time.thread_time() - run_started)
                if position == 0:  # empty state: computed densely, exact; says nothing about the thresholds
                    continue
                fractions = {name: entry["fraction"] for name, entry in session.stats(stream)["nodes"].items()}
                for name, value in fractions.items():
                    fraction_sums[name] = fraction_sums.get(name, 0.0) + value
                works.append(work_redone(fractions, self.nodes, self.dense_flops, self.total_flops))
                score = self.scorer.score(reference, outputs)
                scores.append(score)
                tp, fp, fn = tp + score.true_positives, fp + score.false_positives, fn + score.false_negatives
                remaining -= score.reference_boxes
        self.evaluations += 1
        agreement = summarize(scores, self.scorer.output_names, self.scorer.detections is not None)
        count = max(len(works), 1)
        return Evaluation(float(np.mean(works)) if works else 1.0, agreement,
                          not stopped_early and self.budget.holds(agreement),
                          {k: v / count for k, v in fraction_sums.items()}, time.process_time() - started,
                          stopped_early)

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

    def taus(self, levels: dict[str, int]) -> dict[str, float]:
        return self.setup.taus(levels)

    def evaluate(self, levels: dict[str, int], phase: str, change: str, force: bool = False) -> Optional[Evaluation]:
        key = tuple(levels[n.name] for n in self.nodes)
        if key in self.cache:
            return self.cache[key]
        if not force and self.over_time():
            self.stopped_by_time = True
            return None
        evaluation = self.setup.evaluate(levels)
        self.cache[key] = evaluation
        self.history.append({"phase": phase, "change": change, "work": evaluation.work,
                             "within_budget": evaluation.within_budget, "agreement": asdict(evaluation.agreement),
                             "cpu_seconds": evaluation.cpu_seconds, "stopped_early": evaluation.stopped_early})
        verdict = "ok " if evaluation.within_budget else ("out " if evaluation.stopped_early else "over")
        self.log(f"{phase:7s} {change:40s} work {100 * evaluation.work:5.1f}%  {verdict} "
                 f"{evaluation.agreement.describe()}")
        return evaluation

    def run(self) -> tuple[dict[str, int], Evaluation]:
        gates = [n for n in self.nodes if n.gate]
        inner = [n for n in self.nodes if not n.gate]
        levels = {n.name: 0 for n in self.nodes}
        best = self.evaluate(levels, "exact", "all thresholds 0", force=True)  # the baseline, always measured

        def with_levels(base: dict[str, int], group: Sequence[NodeCalibration], level: int) -> dict[str, int]:
            trial = dict(base)
            trial.update({n.name: level for n in group})
            return trial

        # 1. the input gate, alone (inner nodes exact): ascending while it spends at most GATE_SHARE of the
        # budget's slack. Given all of it, the gate can take the whole budget for little work (on a detector
        # whose boxes sit near the threshold, gate 0.05 kept F1 0.991 at 89% of the work, leaving the inner
        # nodes, which hold most of the work, nothing); the sweeps may raise it further with what is left.
        if gates:
            gate_budget = self.setup.budget.share(GATE_SHARE)
            gate_ladder = self.setup.ladder(gates[0])
            for level in range(1, len(gate_ladder)):
                trial = with_levels(levels, gates, level)
                result = self.evaluate(trial, "gate", f"gate {gate_ladder[level]:g} x range")
                if result is None or not result.within_budget or not gate_budget.holds(result.agreement):
                    break
                levels, best = trial, result
        # 2. one level for every inner node: bisection between a passing and an unknown level
        if inner:
            low, high = 0, len(INNER_LEVELS) - 1
            while low < high:
                middle = (low + high + 1) // 2
                trial = with_levels(levels, inner, middle)
                result = self.evaluate(trial, "uniform", f"inner {INNER_LEVELS[middle]:g} x std")
                if result is None:
                    break
                if result.within_budget:
                    low, levels, best = middle, trial, result
                else:
                    high = middle - 1
        # 3. greedy sweeps front to back: one group a level up, kept if the budget holds and work drops
        groups: list[tuple[str, list[NodeCalibration]]] = []
        if gates:
            groups.append(("gate", gates))
        groups += [(n.name, [n]) for n in inner]
        sweep = 0
        while not self.stopped_by_time:
            sweep += 1
            accepted = 0
            for label, group in groups:
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
                # A step may gain nothing yet (an op above its dense fraction stays dense): climb up to
                # MAX_CLIMB levels while the budget holds, keeping the first that pays.
                current = levels[first.name]
                for level in range(current + 1, min(current + 1 + MAX_CLIMB, len(ladder))):
                    trial = with_levels(levels, group, level)
                    result = self.evaluate(trial, f"sweep {sweep}", f"{label} -> {ladder[level]:g}")
                    if result is None or not result.within_budget:
                        break
                    if result.work <= best.work - MIN_GAIN:
                        levels, best = trial, result
                        accepted += 1
                        break
                if self.stopped_by_time:
                    break
            if accepted == 0:
                break
        return levels, best

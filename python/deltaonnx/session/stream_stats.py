"""What DeltaSession.stats() reports of a stream: the share of each Delta node's output recomputed, weighted by the
node's FLOPs per frame."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Mapping, Sequence

import numpy as np

from .stream_state import StreamState


def count_node_flops(state: StreamState, map_nodes: Sequence[str], node_info: Mapping[str, dict]) -> None:
    """Each Delta node's work per frame (batch item), once a state is bound: its FLOPs from the metadata, or, for
    models with dynamic input sizes, its FLOPs per output pixel times the pixels of one item's map ([N, 1, Ho, Wo])
    in this run."""
    flops = []
    for node, view in zip(map_nodes, state.map_buffers.views):
        info = node_info.get(node, {})
        pixels = view.size // view.shape[0] if view.ndim == 4 and view.shape[0] else view.size
        flops.append(info.get("flops") or (info.get("flops_per_output_pixel") or 0) * pixels)
    state.node_flops = np.array(flops, dtype=np.float64)
    state.flops_total = float(state.node_flops.sum())


def stream_stats(state: StreamState, stream: Hashable, map_nodes: Sequence[str], node_info: Mapping[str, dict]) -> dict:
    """DeltaSession.stats() of one stream (its docstring says what each entry means)."""
    with state.lock:
        runs = state.runs
        last = state.last_fraction.tolist()
        sums = state.fraction_sum.tolist()
        mode, work, dense_runs, skipped = state.mode, state.work, state.dense_runs_total, state.skipped_runs
        stateless_runs, probes_skipped = state.stateless_runs_total, state.probes_skipped
        twin_samples, delta_seconds, twin_seconds = state.twin_samples, state.delta_seconds, state.twin_seconds
        run_flops = [0.0] * len(last) if state.node_flops is None else state.node_flops.tolist()
    nodes = {}
    total_flops = total_saved = total_saved_avg = 0.0
    for node, fraction, fraction_sum, at_run_shape in zip(map_nodes, last, sums, run_flops):
        info = node_info.get(node, {})
        flops = info.get("flops")
        if flops is None and at_run_shape > 0:
            flops = int(at_run_shape)
        fraction_avg = fraction_sum / runs
        saved = saved_avg = None
        if flops is not None:
            saved, saved_avg = flops * (1.0 - fraction), flops * (1.0 - fraction_avg)
            total_flops += flops
            total_saved += saved
            total_saved_avg += saved_avg
        nodes[node] = {"op": info.get("op"), "fraction": fraction, "fraction_avg": fraction_avg,
                       "flops": flops, "flops_saved": saved, "flops_saved_avg": saved_avg}
    return {"stream": stream, "runs": runs, "nodes": nodes, "flops": total_flops,
            "flops_saved": total_saved, "flops_saved_avg": total_saved_avg,
            "mode": mode, "work_smoothed": work, "dense_runs": dense_runs, "stateless_runs": stateless_runs,
            "skipped_runs": skipped, "probes_skipped": probes_skipped, "twin_samples": twin_samples,
            "delta_ms_smoothed": None if delta_seconds is None else 1e3 * delta_seconds,
            "twin_ms_smoothed": None if twin_seconds is None else 1e3 * twin_seconds}


@dataclass(frozen=True)
class LastRun:
    """DeltaSession.last_run(): the counters and each map node's recomputed share of a stream's last run, read
    without building stats()'s dictionaries (a per-frame reader's Python work runs between two runs and leaves
    the next one caches to refill)."""

    runs: int  # runs since the last reset
    mode: str  # "delta", "dense" or "stateless" after that run
    dense_runs: int  # runs of the dense twin since the reset (its timed samples included)
    stateless_runs: int
    skipped_runs: int
    fractions: np.ndarray  # float64 [nodes]: the last run's mean of each change map, in `nodes` order (a copy)
    nodes: tuple[str, ...]  # the map nodes, as stats()["nodes"] orders them


def last_run(state: StreamState, nodes: tuple[str, ...]) -> LastRun:
    with state.lock:
        return LastRun(state.runs, state.mode, state.dense_runs_total, state.stateless_runs_total,
                       state.skipped_runs, state.last_fraction.copy(), nodes)

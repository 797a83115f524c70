"""ORT's profiler on the dense and the converted model: where the time goes, the conv work dense ORT spends,
and the work the numpy reference (the rules at pixel granularity) would redo."""
from __future__ import annotations

import bisect
import collections
import json
import os
import tempfile
import time
from typing import Mapping, Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from ..reference import make_reference_evaluator
from ..session import DeltaSession
from .models import conversion_metadata, session_options


# Kernels of dense ORT that the converted model replaces (besides the fused activations, found by name).
CONV_WORK_OPS = {"Conv", "FusedConv", "NhwcFusedConv", "MaxPool", "NhwcMaxPool", "ReorderInput", "ReorderOutput"}
DELTA_OPS = ("DeltaConv", "DeltaPool", "DeltaMapUnion")


def ideal_speedup(conv_work_share: float, work_redone: float) -> Optional[float]:
    """Amdahl's bound: dense time over dense time with its conv work scaled by the share of it redone. None when
    nothing bounds it (all of dense ORT's time is conv work and none of it is redone)."""
    remaining = (1.0 - conv_work_share) + conv_work_share * work_redone
    return 1.0 / remaining if remaining > 0 else None


def read_profile(path: str, skip_runs: int = 1) -> tuple[list[tuple[str, str, float]], int]:
    """Kernel time per node of an ORT profile, without the first `skip_runs` runs: (node name, op type, the median
    over the kept runs of that node's microseconds in a run), and the number of runs kept. Medians, not means: one
    run that waits on the machine (a page fault on a state's first touch, another job) would otherwise be spread
    over every frame and put a node at many times its real cost."""
    with open(path) as f:
        events = json.load(f)
    starts = sorted(e["ts"] for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")[skip_runs:]
    if not starts:
        return [], 0
    per_run: dict[tuple[str, str], list[float]] = collections.defaultdict(lambda: [0.0] * len(starts))
    for e in events:
        name = e.get("name", "")
        if e.get("cat") == "Node" and name.endswith("_kernel_time") and e["ts"] >= starts[0]:
            run = bisect.bisect_right(starts, e["ts"]) - 1
            key = (name[: -len("_kernel_time")], e.get("args", {}).get("op_name", "?"))
            per_run[key][run] += float(e["dur"])
    return [(node, op, float(np.median(us))) for (node, op), us in per_run.items()], len(starts)


def _is_fused_activation(node_name: str, fused_names: set[str]) -> bool:
    if node_name in fused_names:
        return True
    return any(node_name.startswith(f + "/") for f in fused_names)  # ORT fusions keep the source name as prefix


def profile_dense(model_bytes: bytes, inputs: Sequence[dict], threads: int, fused_names: set[str]) -> dict:
    """Dense ORT's time per frame split into conv work (what the converted model replaces) and the rest."""
    with tempfile.TemporaryDirectory(prefix="deltaonnx-profile-") as tmp:
        session = ort.InferenceSession(model_bytes, session_options(threads, os.path.join(tmp, "dense")),
                                       providers=["CPUExecutionProvider"])
        for feed in inputs:
            session.run(None, feed)
        kernels, runs = read_profile(session.end_profiling(), skip_runs=1)
    if runs == 0:
        return {}
    by_op: dict[str, float] = collections.defaultdict(float)
    by_node: dict[str, float] = collections.defaultdict(float)  # conv work per dense node (its own cost)
    conv_work = other = 0.0
    for node, op, us in kernels:
        ms = us / 1000.0
        if op in CONV_WORK_OPS or _is_fused_activation(node, fused_names):
            conv_work += ms
            by_op[op + " (conv work)"] += ms
            by_node[node] += ms
        else:
            other += ms
            by_op[op] += ms
    return {"frames": runs, "kernel_ms": conv_work + other, "conv_work_ms": conv_work, "other_ms": other,
            "conv_work_share": conv_work / (conv_work + other) if conv_work + other else 0.0,
            "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])), "by_node": dict(by_node)}


def dense_node_ms(dense_by_node: Mapping[str, float], names: Sequence[str], outputs: Sequence[str]) -> Optional[float]:
    """Dense ORT's own time for one converted Conv: the kernels of its nodes (`names`: the Conv and the
    activations fused into the Delta op; ORT's fusions keep a node's name, or make it a prefix before "/") and
    the NCHWc Conv ORT names after the Conv's output (`outputs` + "_nchwc"). None when nothing matches. The
    NCHWc reorders ORT puts between layers are shared and left out."""
    total, found = 0.0, False
    for node, ms in dense_by_node.items():
        if (any(node == n or node.startswith(n + "/") for n in names)
                or any(node == o + "_nchwc" for o in outputs)):
            total += ms
            found = True
    return total if found else None


def profile_delta(converted: onnx.ModelProto, inputs: Sequence[dict], threads: int, dense_fallback: bool = True,
                  stateless_runs: bool = True, initial_state: Optional[Mapping[str, np.ndarray]] = None) -> dict:
    """The converted model's time per frame by op type, over `inputs` in order (the first run is left out:
    it fills the state, or warms the session up). From `initial_state` (the ops' own state before these
    frames) the frames cost what they cost in the timed run; from an empty state they start on fresh
    references, which recompute less than references that drifted below tau over a long run (rule 3)."""
    with tempfile.TemporaryDirectory(prefix="deltaonnx-profile-") as tmp:
        session = DeltaSession(converted, session_options(threads, os.path.join(tmp, "delta")),
                               dense_fallback=dense_fallback, stateless_runs=stateless_runs)
        if initial_state is not None:
            session.load_state(initial_state)
        wall = []
        for i, feed in enumerate(inputs):
            start = time.perf_counter()
            session.run(None, feed)
            if i:
                wall.append(time.perf_counter() - start)
        kernels, runs = read_profile(session.inference_session.end_profiling(), skip_runs=1)
    if runs == 0:
        return {}
    by_op: dict[str, float] = collections.defaultdict(float)
    by_node: dict[str, float] = collections.defaultdict(float)
    for node, op, us in kernels:
        by_op[op] += us / 1000.0
        if op in DELTA_OPS:
            by_node[node] += us / 1000.0
    kernel_ms = sum(by_op.values())
    wall_ms = 1000.0 * float(np.median(wall)) if wall else kernel_ms
    return {"frames": runs, "kernel_ms": kernel_ms, "wall_ms": wall_ms, "from_ops_state": initial_state is not None,
            "delta_ops_ms": sum(by_op.get(op, 0.0) for op in DELTA_OPS),
            "outside_kernels_ms": max(0.0, wall_ms - kernel_ms),
            "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])), "by_node": dict(by_node)}


def oracle_fractions(converted: onnx.ModelProto, inputs: Sequence[dict],
                     initial_state: Optional[Mapping[str, np.ndarray]] = None) -> tuple[dict[str, float], int]:
    """Mean recomputed fraction per Delta node when the converted model runs on the numpy reference
    (deltaonnx.reference: docs/design.md's rules at pixel granularity, no recompute tiles) over `inputs` in
    order, and the number of runs counted. From `initial_state` (past name -> array, e.g. the ops' own state
    before these frames: references that drifted below tau over a long run) every run counts; from an empty
    state the first run (everything new) is left out."""
    metadata = conversion_metadata(converted)
    evaluator = make_reference_evaluator(converted)
    output_names = [o.name for o in converted.graph.output]
    empty = np.zeros((0, 0, 0, 0), np.float32)
    seeded = initial_state is not None
    state = {entry["past"]: (initial_state.get(entry["past"], empty) if seeded else empty)
             for entry in metadata.get("state", [])}
    no_maps = {gate["change_map"]: np.zeros((0, 1, 0, 0), np.uint8) for gate in metadata.get("gates", [])}
    sums: dict[str, float] = collections.defaultdict(float)
    for i, feed in enumerate(inputs):
        results = dict(zip(output_names, evaluator.run(None, {**feed, **state, **no_maps})))
        state = {entry["past"]: results[entry["present"]] for entry in metadata.get("state", [])}
        if i or seeded:
            for entry in metadata.get("maps", []):
                sums[entry["node"]] += float(np.mean(results[entry["output"]] != 0))
    runs = len(inputs) if seeded else max(len(inputs) - 1, 0)
    return ({node: total / runs for node, total in sums.items()} if runs else {}), runs

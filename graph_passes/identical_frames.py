"""The identical-frame plan: when a run of a converted model provably changes nothing, so DeltaSession may
return the previous outputs without running ORT (docs/design.md#identical-frame-skip), read from the converted graph."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import onnx

from .constants import NONDETERMINISTIC_OPS, SHAPE_ONLY_OPS
from .delta_ops import CONV_INPUTS, DELTA_CONV, DELTA_GATE, DELTA_POOL, GATE_INPUTS, POOL_INPUTS
from .metadata import StateEntry
from .protocol import DEFAULT_GATE_BLOCK, DOMAIN

_MAP_INPUT = {DELTA_CONV: CONV_INPUTS["map_in"], DELTA_POOL: POOL_INPUTS["map_in"]}  # the optional change-map input


@dataclass(frozen=True)
class FrameGate:
    """A Delta op reading a model input (directly or through one Identity/Transpose) with no change-map input."""

    input: str  # the model input
    node: str
    present: str  # the present name of its x_ref state
    perm: tuple[int, ...] | None  # the Transpose between input and gate (None: same layout)
    tau: np.float32
    block_rule: dict | None = None  # a DeltaGate with the block rule: its attributes (rule, gate_block, ...)
    change_map: str | None = None  # a DeltaGate's external change-map input (the run's map narrows its check)


@dataclass(frozen=True)
class IdenticalFramePlan:
    """When a run may return the previous outputs without running ORT, and why that is exact.

    The argument is an induction over the graph in topological order. Suppose every Delta op sees no change
    (rule 2) in this run: it then recomputes nothing (rule 4), returns `Y_prev` (its in-place buffer, untouched),
    keeps `X_ref`, and outputs an all-zero map, so every op downstream gets the same values as in the previous
    run and, if it has a map input, a map that marks nothing. Non-Delta ops are deterministic (random ops refuse
    the plan), so all outputs equal the previous run's and the state is unchanged. What remains is to show
    that no Delta op sees a change:

    * ``mode == "tau"``: every consumer of every model input is a *gate* (a DeltaGate, a Delta op without a map
      input, or one Identity/Transpose feeding only such ops) or reads only its shape. Rule 2 is checked here
      directly: every element of the frame is within the gate's tau of its `X_ref` (|x - ref| <= tau, false for
      NaN/Inf, as the kernels compare in float32); a block-rule DeltaGate is asked itself (its engine, run on
      the host on copies, with the run's change map), as that rule lets more through. The gates then see no
      change. (The tau test ignores the map: a map only narrows where a gate looks, so no change without it is
      no change with it.)
    * ``mode == "bitwise"``: the frames are bitwise identical to the previous run's, so by induction each Delta
      op's input equals its input of the previous run, after which the invariant max|X - X_ref| <= tau held;
      ops with a map input compare only marked pixels, and their maps come from ops that saw no change.
    * in both modes, the Delta ops that compare their whole input (no map input) outside the gates must hold a
      finite `X_ref` (`finite_checks`): a NaN/Inf input pixel counts as changed on *every* run (rule 2), and
      such a pixel always ends up in `X_ref` (rule 3). Checked once per real run, when a skip is first considered.
    """

    mode: str  # "tau" or "bitwise"
    gates: tuple[FrameGate, ...]
    finite_checks: tuple[str, ...]  # present names of x_ref states


def _subgraph_nodes(graph: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    for node in graph.node:
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from sub.node
                yield from _subgraph_nodes(sub)


def identical_frame_plan(graph: onnx.GraphProto, frame_inputs: Sequence[str], entries: Sequence[StateEntry],
                          gates_allowed: bool) -> tuple[IdenticalFramePlan | None, str]:
    """The plan for this graph, or None and the reason the shortcut cannot be exact for it."""
    for node in list(graph.node) + list(_subgraph_nodes(graph)):
        if node.op_type in NONDETERMINISTIC_OPS:
            return None, f"node {node.name or node.op_type} ({node.op_type}) is not deterministic"
    if any(n.domain == DOMAIN for n in _subgraph_nodes(graph)):
        return None, "Delta ops inside a subgraph"
    x_ref_present = {e.node: e.present for e in entries if e.kind == "x_ref"}
    delta = [n for n in graph.node if n.domain == DOMAIN and n.op_type in _MAP_INPUT]

    def has_map(node) -> bool:
        index = _MAP_INPUT[node.op_type]
        return len(node.input) > index and node.input[index] != ""

    whole_input = [n for n in delta if not has_map(n)]
    for node in whole_input:
        if node.name not in x_ref_present:
            return None, f"{node.name} compares its whole input but its X_ref is not listed as state"

    gates = find_gates(graph, frame_inputs, x_ref_present, has_map) if gates_allowed else None
    if gates is not None:
        gated = {g.node for g in gates}
        finite = tuple(x_ref_present[n.name] for n in whole_input if n.name not in gated)
        return IdenticalFramePlan("tau", tuple(gates), finite), "frames within the gates' thresholds of X_ref"
    finite = tuple(x_ref_present[n.name] for n in whole_input)
    return IdenticalFramePlan("bitwise", (), finite), "frames bitwise identical to the previous run's"


def find_gates(graph, frame_inputs, x_ref_present, has_map) -> list[FrameGate] | None:
    """The gates of every model input, or None when some consumer is neither a gate nor shape-only."""
    consumers = defaultdict(list)
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name:
                consumers[name].append((node, index))
    graph_outputs = {o.name for o in graph.output}

    def standard(node) -> bool:
        return node.domain in ("", "ai.onnx")

    def gate(node, index, name, model_input, perm) -> FrameGate | None:
        if node.domain == DOMAIN and node.op_type == DELTA_GATE and index == 0 and node.name in x_ref_present:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            rule = attrs.get("rule", b"block")
            rule = rule.decode() if isinstance(rule, bytes) else rule
            block = {"rule": rule, "gate_block": int(attrs.get("gate_block", DEFAULT_GATE_BLOCK)),
                     "gate_hard": float(attrs.get("gate_hard", -1.0))} if rule == "block" else None
            change_map = node.input[GATE_INPUTS["map_in"]] if len(node.input) > GATE_INPUTS["map_in"] else ""
            return FrameGate(model_input, node.name, x_ref_present[node.name], perm,
                             np.float32(attrs.get("threshold", 0.0)), block, change_map or None)
        if (node.domain != DOMAIN or node.op_type not in _MAP_INPUT or index != 0 or has_map(node)
                or list(node.input).count(name) != 1 or node.name not in x_ref_present):
            return None
        tau = next((a.f for a in node.attribute if a.name == "threshold"), 0.0)
        return FrameGate(model_input, node.name, x_ref_present[node.name], perm, np.float32(tau))

    gates = []
    for model_input in frame_inputs:
        if model_input in graph_outputs:
            return None
        for node, index in consumers[model_input]:
            if standard(node) and node.op_type in SHAPE_ONLY_OPS:
                continue
            found = gate(node, index, model_input, model_input, None)
            if found is not None:
                gates.append(found)
                continue
            # one Identity or Transpose (the converter's NHWC -> NCHW) may stand between input and gates:
            # it moves elements without changing any, so "no element changed" reads the same on both sides
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            if not (standard(node) and len(node.input) == 1
                    and (node.op_type == "Identity" or (node.op_type == "Transpose" and perm))):
                return None
            moved = node.output[0]
            if moved in graph_outputs:
                return None
            layout = tuple(perm) if node.op_type == "Transpose" else None
            for consumer, consumer_index in consumers[moved]:
                if standard(consumer) and consumer.op_type in SHAPE_ONLY_OPS:
                    continue
                found = gate(consumer, consumer_index, moved, model_input, layout)
                if found is None:
                    return None
                gates.append(found)
    return gates


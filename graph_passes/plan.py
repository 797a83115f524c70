"""Decide, for every Conv/MaxPool-like node, whether it becomes a Delta op, and its threshold.

Decisions (recorded as a NodePlan in the node's meta and in the context, in graph order):
  - ineligible nodes keep their reason (eligibility.py);
  - an eligible Conv converts if it pays for change detection (cost_model.py), or if it reads a model
    input (it is the input gate, and its change map makes detection nearly free for everything after
    it), or if a change map reaches it from a converted op (detection is then nearly free), or with
    all_nodes;
  - an eligible MaxPool converts if a change map reaches it, or if its own map would reach a converted
    op, or with all_nodes;
  - an eligible Conv reading a tiny input (a squeeze-excite gate's 1x1 vector) converts if its map, joined with
    one arriving at a Mul or Add, would reach another conv: that conv then converts with a map, where it stayed
    dense between blocked regions (mobilenetv3_like: ORT's Conv and two reorders out of the blocked layout and
    back, ~40 us of 0.8 ms a frame).
Maps only add conversions, so the decisions are iterated to a fixed point."""
from __future__ import annotations

import math
from collections import Counter
from typing import Optional

import onnx_ir as ir

from .conversion_context import (CONVERTED, DENSE, INELIGIBLE, PLAN_META_KEY, ConversionContext,
                                 NodePlan, parse_inner_gate)
from .cost_model import MIN_FLOPS_PER_ELEMENT_READ, flops_per_output_pixel, node_flops, pays_for_detection
from .eligibility import ineligibility
from .errors import ConversionError
from .fold_batchnorm import FOLDED_META_KEY
from .protocol import DEFAULT_GATE_BLOCK
from .locality import ChangeMapPropagation, DryRunMaps
from .normalize import CANDIDATE_OPS, onnx_opset
from .shapes import shape_text, static_dims

# Ops between a model input and a Delta op that keep the input's units: the input gate applies.
_LAYOUT_ONLY_OPS = frozenset({"Transpose", "Cast", "Identity"})

REASON_CONVERTED = "converted"
REASON_ALL = "converted (all_nodes)"
REASON_MAP_IN = "converted: a change map arrives, so detection is nearly free"
REASON_FEEDS = "converted: its change map reaches a converted op"
REASON_OPENS_MAP = "converted: its change map, with one arriving elsewhere, reaches another conv (its input is tiny)"
# A conv reading at most this many elements (a squeeze-excite gate's [N, C, 1, 1]) compares them for nothing.
TINY_INPUT_ELEMENTS = 4096
REASON_INPUT_GATE = "converted: it reads the model input (the input gate; its map serves all later ops)"
REASON_POOL_DENSE = "no change map arrives and its map would reach no converted op"


class PlanConversion(ir.passes.InPlacePass):
    def __init__(self, context: ConversionContext) -> None:
        super().__init__()
        self.context = context

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        options = self.context.options
        candidates = [n for n in graph if n.domain == "" and n.op_type in CANDIDATE_OPS]
        _check_threshold_names(options.thresholds, candidates)
        _check_threshold_names(options.inner_gates, candidates, "inner_gates")

        plans: dict[ir.Node, NodePlan] = {}
        eligible: list[ir.Node] = []
        for node in candidates:
            plan = NodePlan(
                source=node.name or "",
                op_type=node.op_type,
                output_shape=shape_text(node.outputs[0]),
                flops=node_flops(node),
                flops_per_output_pixel=flops_per_output_pixel(node),
                fused=list(node.meta.get(FOLDED_META_KEY, [])),
            )
            reason = ineligibility(node)
            if reason is not None:
                plan.decision, plan.reason = INELIGIBLE, reason
            else:
                eligible.append(node)
            plans[node] = plan

        converted = self._decide(model, eligible, plans)

        for node in candidates:
            plan = plans[node]
            if node in converted:
                plan.decision = CONVERTED
                plan.threshold = self._threshold_of(node)
                plan.inner_gate = self._inner_gate_of(node, plan.threshold)
            node.meta[PLAN_META_KEY] = plan
            self.context.plans.append(plan)
        return ir.passes.PassResult(model, modified=False)

    def _decide(self, model: ir.Model, eligible: list[ir.Node], plans: dict[ir.Node, NodePlan]) -> set[ir.Node]:
        if self.context.options.all_nodes:
            for node in eligible:
                plans[node].reason = REASON_ALL
            return set(eligible)
        converted: set[ir.Node] = set()
        for node in eligible:
            if node.op_type != "Conv":
                plans[node].reason = REASON_POOL_DENSE
                continue
            pays, intensity = pays_for_detection(node)
            if pays:
                converted.add(node)
                plans[node].reason = REASON_CONVERTED
            elif reads_model_input(node):
                converted.add(node)
                plans[node].reason = REASON_INPUT_GATE
            else:
                plans[node].decision = DENSE
                plans[node].reason = (
                    f"low arithmetic intensity ({intensity:.0f} FLOPs per input element read"
                    f" < {MIN_FLOPS_PER_ELEMENT_READ:.0f})"
                )
        for node in eligible:
            if node.op_type == "MaxPool":
                plans[node].decision = DENSE

        propagation = ChangeMapPropagation(model.graph, onnx_opset(model), DryRunMaps())

        def maps_from(sources: set[ir.Node]) -> dict:
            return propagation.run({n.outputs[0]: object() for n in sources})

        changed = True
        while changed:
            changed = False
            maps = maps_from(converted)
            for node in eligible:
                if node not in converted and node.inputs[0] in maps:
                    converted.add(node)
                    plans[node].reason = REASON_MAP_IN
                    changed = True
            if changed:
                continue
            for pool in eligible:
                if pool in converted or pool.op_type != "MaxPool":
                    continue
                trial = maps_from(converted | {pool})
                if any(c.inputs[0] in trial and c.inputs[0] not in maps for c in converted):
                    converted.add(pool)
                    plans[pool].reason = REASON_FEEDS
                    changed = True
                    break
            if changed:
                continue
            for conv in eligible:
                if conv in converted or conv.op_type != "Conv" or not _reads_tiny_input(conv):
                    continue
                trial = maps_from(converted | {conv})
                if any(c.op_type == "Conv" and c not in converted and c is not conv and c.inputs[0] in trial
                       and c.inputs[0] not in maps for c in eligible):
                    converted.add(conv)
                    plans[conv].reason = REASON_OPENS_MAP
                    changed = True
                    break
        return converted

    def _threshold_of(self, node: ir.Node) -> float:
        options = self.context.options
        if node.name in options.thresholds:
            return float(options.thresholds[node.name])
        return float(options.threshold if reads_model_input(node) else options.inner_threshold)


    def _inner_gate_of(self, node: ir.Node, tau: float) -> Optional[dict]:
        """The block rule's attributes for this node ({"gate_block": k, "gate_hard": h}), None for the pixel
        rule: inner nodes take inner_gate, a node named in inner_gates its own; nodes reading a model input
        are left to the input gate unless named."""
        options = self.context.options
        if node.name in options.inner_gates:
            rule, block, hard = parse_inner_gate(options.inner_gates[node.name], f"inner_gates[{node.name!r}]")
        elif reads_model_input(node):
            return None
        else:
            rule, block, hard = options.inner_gate, options.inner_gate_block, options.inner_gate_hard
        if rule != "block":
            return None
        if hard is not None and hard < tau:
            raise ConversionError(f"node {node.name!r}: the inner gate's gate_hard ({hard:g}) must be >= its "
                                  f"threshold ({tau:g})")
        # gate_hard None: the op's default, DEFAULT_GATE_HARD x tau (multiplied in float32 by the op)
        return {"gate_block": int(DEFAULT_GATE_BLOCK if block is None else block), "gate_hard": hard}


def _reads_tiny_input(node: ir.Node) -> bool:
    found = static_dims(node.inputs[0])
    return found is not None and None not in found and math.prod(found) <= TINY_INPUT_ELEMENTS


def reads_model_input(node: ir.Node) -> bool:
    """True when the node's data input is a model input, possibly through layout-only ops."""
    value = node.inputs[0]
    while value is not None:
        if value.is_graph_input():
            return True
        producer = value.producer()
        if producer is None or producer.domain != "" or producer.op_type not in _LAYOUT_ONLY_OPS:
            return False
        value = producer.inputs[0]
    return False


def _check_threshold_names(thresholds, candidates: list[ir.Node], what: str = "thresholds") -> None:
    known = {n.name for n in candidates if n.op_type in ("Conv", "MaxPool")}
    unknown = sorted(name for name in thresholds if name not in known)
    if unknown:
        listed = ", ".join(repr(name) for name in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise ConversionError(f"unknown node names in {what} (no Conv or MaxPool of the model has them): {listed}")


class RequireConvertedNode(ir.passes.InPlacePass):
    """Stops the conversion with a clear message when nothing would be converted."""

    def __init__(self, context: ConversionContext) -> None:
        super().__init__()
        self.context = context

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        if self.context.converted():
            return ir.passes.PassResult(model, modified=False)
        if not self.context.plans:
            raise ConversionError("no convertible node: the model has no Conv or MaxPool")
        reasons = Counter(f"{plan.op_type}: {plan.reason}" for plan in self.context.plans)
        summary = "; ".join(f"{count}x {reason}" for reason, count in reasons.most_common(3))
        raise ConversionError(f"no convertible node ({summary})")

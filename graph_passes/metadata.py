"""Record what the conversion did in the model's `deltaonnx` metadata (docs/state_protocol.md),
and read it back."""
from __future__ import annotations

import json
from typing import Optional

import onnx_ir as ir

from deltaonnx import __version__

from .conversion_context import CONVERTED, ConversionContext, NodePlan
from .normalize import METADATA_KEY

FORMAT = 1


def node_entry(plan: NodePlan) -> dict:
    converted = plan.decision == CONVERTED
    return {
        "name": plan.delta_name if converted else plan.source,
        "op": plan.delta_op if converted else plan.op_type,
        "source": plan.source,
        "source_op": plan.op_type,
        "decision": plan.decision,
        "threshold": plan.threshold if converted else None,
        "flops": plan.flops,
        "flops_per_output_pixel": plan.flops_per_output_pixel,
        "reason": plan.reason,
        "shape": plan.output_shape,
        "activation": plan.activation,
        "fused": list(plan.fused),
        "map_in": plan.has_map_input,
        "gate": plan.gate,
        "inner_gate": plan.inner_gate,
    }


def conversion_metadata(context: ConversionContext) -> dict:
    options = context.options
    return {
        "format": FORMAT,
        "deltaonnx_version": __version__,
        "threshold": float(options.threshold),
        "inner_threshold": float(options.inner_threshold),
        "state": list(context.state),
        "maps": list(context.maps),
        "dropped_references": list(context.dropped_references),
        "gate": {"rule": options.gate, "gate_block": options.gate_block, "gate_hard": options.gate_hard},
        "gates": list(context.gates),
        "inner_gate": {"rule": options.inner_gate, "gate_block": options.inner_gate_block,
                       "gate_hard": options.inner_gate_hard, "nodes": dict(options.inner_gates)},
        "nodes": [node_entry(plan) for plan in context.plans],
    }


class WriteConversionMetadata(ir.passes.InPlacePass):
    def __init__(self, context: ConversionContext) -> None:
        super().__init__()
        self.context = context

    def call(self, model: ir.Model) -> ir.passes.PassResult:
        model.metadata_props[METADATA_KEY] = json.dumps(conversion_metadata(self.context), separators=(",", ":"))
        return ir.passes.PassResult(model, modified=True)


def read_conversion_metadata(metadata_props: dict[str, str]) -> Optional[dict]:
    """The parsed `deltaonnx` metadata of a converted model, or None if it has none."""
    text = metadata_props.get(METADATA_KEY)
    if text is None:
        return None
    return json.loads(text)

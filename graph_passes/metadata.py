"""Record what the conversion did in the model's `deltaonnx` metadata (docs/state_protocol.md),
and read it back."""
from __future__ import annotations

import dataclasses
import json
from typing import Optional

import onnx
import onnx_ir as ir

from .conversion_context import CONVERTED, ConversionContext, NodePlan
from .protocol import METADATA_FORMAT, METADATA_KEY


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
        "layout": plan.layout,
    }


def conversion_metadata(context: ConversionContext) -> dict:
    options = context.options
    return {
        "format": METADATA_FORMAT,
        "deltaonnx_version": context.converter_version,
        "threshold": float(options.threshold),
        "inner_threshold": float(options.inner_threshold),
        "state": list(context.state),
        "maps": list(context.maps),
        "dropped_references": list(context.dropped_references),
        "gate": {"rule": options.gate, "gate_block": options.gate_block, "gate_hard": options.gate_hard},
        "gates": list(context.gates),
        "layout": options.layout,
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


class MetadataError(ValueError):
    """The model's `deltaonnx` metadata is missing, not JSON, or of a format this version does not read."""


@dataclasses.dataclass(frozen=True)
class StateEntry:
    """One carried state tensor: the graph input it is fed through and the graph output it comes back on."""

    node: str
    kind: str
    past: str
    present: str
    layout: str = "nchw"  # "blocked": channel-blocked memory, valid only at the library's block (docs/design.md#state)
    channels: Optional[int] = None  # a padded blocked tensor's logical channel count C: it holds roundup(C, b)


@dataclasses.dataclass(frozen=True)
class ConversionMetadata:
    """The `deltaonnx` metadata of a converted model, read once (docs/state_protocol.md): what every reader
    (DeltaSession, the dense twin, inspect, bench, calibrate, the Triton backends) takes from it."""

    entries: dict  # the whole parsed entry, as the converter wrote it
    state: tuple[StateEntry, ...]
    maps: dict[str, str]  # Delta node -> the graph output carrying its change map
    change_map_inputs: dict[str, str]  # model input gated by a DeltaGate -> the gate's change-map graph input
    nodes: tuple[dict, ...]  # one entry per candidate node of the source model (node_entry)

    @classmethod
    def parse(cls, text: Optional[str]) -> "ConversionMetadata":
        """The metadata from its JSON text (None: the model has no entry); MetadataError says what is wrong."""
        if text is None:
            raise MetadataError(f"the model has no '{METADATA_KEY}' metadata, so it is not a deltaonnx-converted model")
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as error:
            raise MetadataError(f"the '{METADATA_KEY}' metadata is not valid JSON: {error}") from None
        if not isinstance(entries, dict) or entries.get("format") != METADATA_FORMAT:
            found = entries.get("format") if isinstance(entries, dict) else type(entries).__name__
            raise MetadataError(f"unsupported '{METADATA_KEY}' metadata format {found!r}; "
                                f"this deltaonnx reads format {METADATA_FORMAT}")
        try:
            return cls(
                entries=entries,
                state=tuple(StateEntry(s["node"], s.get("kind", ""), s["past"], s["present"], s.get("layout", "nchw"),
                                        s.get("channels"))
                            for s in entries.get("state", [])),
                maps={m["node"]: m["output"] for m in entries.get("maps", [])},
                change_map_inputs={g["input"]: g["change_map"] for g in entries.get("gates", [])},
                nodes=tuple(n for n in entries.get("nodes", []) if isinstance(n, dict)),
            )
        except (KeyError, TypeError) as error:
            raise MetadataError(f"the '{METADATA_KEY}' metadata lacks a field of its format ({error!r})") from None

    @classmethod
    def of(cls, model: onnx.ModelProto) -> Optional["ConversionMetadata"]:
        """The metadata of `model`, or None when it has no entry (not converted)."""
        text = metadata_text(model)
        return None if text is None else cls.parse(text)

    def node(self, name: str) -> Optional[dict]:
        """The entry of the node named `name` in the converted model (a Delta op, or a node left dense)."""
        return next((n for n in self.nodes if n.get("name") == name), None)


def metadata_text(model: onnx.ModelProto, key: str = METADATA_KEY) -> Optional[str]:
    """The text of the metadata entry `key` of `model`, None when it has none."""
    return next((p.value for p in model.metadata_props if p.key == key), None)


def is_converted(model: onnx.ModelProto) -> bool:
    return metadata_text(model) is not None

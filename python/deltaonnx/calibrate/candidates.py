"""The converted models calibrate runs: `convert`'s own output for a threshold per node, with the input gate's rule
the options ask for (`convert`'s default, the block rule of docs/design.md#rule-2b, or the pixel rule), so that the
search measures the gate the written model runs with."""
from __future__ import annotations

from collections import OrderedDict
from typing import Optional, Sequence

import onnx

from ..convert import convert_with_report
from ..graph_passes.metadata import ConversionMetadata
from .levels import GATE_LEVELS, CalibrationError
from .model_nodes import NodeCalibration
from .options import CalibrationOptions

# Search models kept converted at once (each a copy of the model's weights); the search moves the gate one
# level at a time, so the last few cover nearly every candidate.
CACHED_GATE_MODELS = 3


def gate_settings(options: CalibrationOptions) -> dict:
    """convert's keywords for the input gate the options ask for (None: convert's default)."""
    settings = {"gate": options.gate}
    settings.update({k: v for k, v in (("gate_block", options.gate_block), ("gate_hard", options.gate_hard))
                     if v is not None})
    return settings


def convert_thresholds(original: onnx.ModelProto, thresholds: dict[str, float], gate_tau: float,
                       options: CalibrationOptions, keep_references: bool = False) -> onnx.ModelProto:
    """The model `convert --thresholds` makes: every converted node's tau from `thresholds` (source node ->
    tau), the input gate at `gate_tau` under the options' rule (none is inserted at 0), other nodes exact."""
    converted, _ = convert_with_report(original, threshold=float(gate_tau), inner_threshold=0.0,
                                       thresholds=thresholds, all_nodes=options.all_nodes,
                                       dense_fraction=options.dense_fraction, keep_references=keep_references,
                                       **gate_settings(options))
    return converted


def gate_tau_of(nodes: Sequence[NodeCalibration], taus: dict[str, float]) -> float:
    """The input gate's threshold for per-node taus: the gate nodes share one (the largest, should they differ)."""
    return max((float(taus[n.name]) for n in nodes if n.gate), default=0.0)


def usable_gate_levels(options: CalibrationOptions, nodes: Sequence[NodeCalibration]) -> tuple[float, ...]:
    """The gate's ladder, cut where a level's tau would pass a fixed per-pixel bound (`gate_hard` given in the
    input's units: convert refuses a block gate whose tau exceeds its hard bound)."""
    if options.gate != "block" or options.gate_hard is None:
        return GATE_LEVELS
    scale = max((n.scale for n in nodes if n.gate), default=0.0)
    return tuple(level for level in GATE_LEVELS if level * scale <= options.gate_hard)


class SearchModels:
    """The search's candidates as serialized models. The input gate's graph depends on its threshold (at 0 no
    gate; under the block rule above 0 one DeltaGate, the ops reading the frame at threshold 0 behind it), so
    each gate threshold gets `convert`'s own model with the options' rule; inner thresholds are attributes,
    rewritten per candidate in that model (nothing else depends on them; their references are kept)."""

    def __init__(self, original: onnx.ModelProto, nodes: Sequence[NodeCalibration], options: CalibrationOptions,
                 exact: Optional[onnx.ModelProto] = None):
        self.original, self.options = original, options
        self.gates = [n for n in nodes if n.gate]
        self.inner = [n for n in nodes if not n.gate]
        self.cache: OrderedDict[tuple, tuple[onnx.ModelProto, dict]] = OrderedDict()
        self.conversions = 0
        self.rules_run: set[str] = set()  # the gate rules of the models converted with a gate threshold above 0
        if exact is not None:  # the model the nodes were read from: every threshold 0
            self._remember(self._gate_key({n.name: 0.0 for n in self.gates}), exact)

    def _gate_key(self, taus: dict[str, float]) -> tuple:
        return tuple((n.source, float(taus[n.name])) for n in self.gates)

    def _remember(self, key: tuple, proto: onnx.ModelProto) -> tuple[onnx.ModelProto, dict]:
        metadata = ConversionMetadata.of(proto)
        if any(tau > 0 for _, tau in key):  # a DeltaGate: the block rule; none: each reader compares per pixel
            self.rules_run.add("block" if metadata.change_map_inputs else "pixel")
        names = {e["source"]: e["name"] for e in metadata.nodes if e.get("decision") == "converted"}
        wanted = {n.source for n in self.gates + self.inner}
        if set(names) != wanted:
            raise CalibrationError(f"internal: convert converted other nodes at gate {dict(key)} "
                                   f"({sorted(set(names) ^ wanted)[:3]} differ)")
        by_name = {node.name: node for node in proto.graph.node}
        attributes = {}
        for n in self.inner:
            found = [a for a in by_name[names[n.source]].attribute if a.name == "threshold"]
            if not found:
                raise CalibrationError(f"internal: the Delta node of {n.source} has no threshold attribute")
            attributes[n.source] = found[0]
        entry = (proto, attributes)
        self.cache[key] = entry
        self.cache.move_to_end(key)
        while len(self.cache) > CACHED_GATE_MODELS:
            self.cache.popitem(last=False)
        return entry

    def serialized(self, taus: dict[str, float]) -> bytes:
        """The model for these per-node taus (Delta node name -> tau)."""
        key = self._gate_key(taus)
        entry = self.cache.get(key)
        if entry is None:
            thresholds = {n.source: float(taus[n.name]) for n in self.gates}
            thresholds.update({n.source: 0.0 for n in self.inner})
            self.conversions += 1
            entry = self._remember(key, convert_thresholds(self.original, thresholds, gate_tau_of(self.gates, taus),
                                                           self.options, keep_references=True))
        else:
            self.cache.move_to_end(key)
        proto, attributes = entry
        for n in self.inner:
            attributes[n.source].f = float(taus[n.name])
        return proto.SerializeToString()


def gate_record(converted: onnx.ModelProto, options: CalibrationOptions, gate_tau: float) -> dict:
    """The input gate the converted model runs with, for the stamp, the record and the report: the rule asked
    for and its threshold; under the block rule whether a DeltaGate was inserted (not at threshold 0: the frame
    is then compared exactly) with its k and per-pixel bound as convert wrote them."""
    record = {"rule": options.gate, "threshold": float(gate_tau)}
    if options.gate == "block":
        gates = list(ConversionMetadata.of(converted).entries.get("gates", []))
        record["inserted"] = bool(gates)
        if gates:
            record.update(gate_block=int(gates[0]["gate_block"]), gate_hard=float(gates[0]["gate_hard"]))
    return record

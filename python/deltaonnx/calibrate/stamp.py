"""The `deltaonnx.calibration` metadata entry: what calibrate chose, written into the converted model beside the
converter's own entry, and read back by PeriodicRefresh.from_model and `inspect`. One writer, one reader."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Optional

import onnx

from ..graph_passes.metadata import metadata_text
from ..graph_passes.protocol import CALIBRATION_METADATA_KEY
from .levels import CalibrationError

STAMP_FORMAT = 1


@dataclass(frozen=True)
class CalibrationStamp:
    refresh: int = 0  # full recompute every `refresh` frames per stream (0: never)
    budget: dict = field(default_factory=dict)  # Budget's fields
    thresholds: dict = field(default_factory=dict)  # source node -> tau
    # the input gate the search ran and the model runs with: {"rule", "threshold"} and, for the block rule,
    # "inserted" with "gate_block" and "gate_hard" (candidates.gate_record); {} in stamps written before it
    gate: dict = field(default_factory=dict)

    def write(self, model: onnx.ModelProto) -> None:
        """Record the stamp in `model`, replacing an earlier one."""
        entry = json.dumps({"format": STAMP_FORMAT, "refresh": self.refresh, "budget": self.budget,
                            "thresholds": self.thresholds, "gate": self.gate}, separators=(",", ":"))
        for prop in model.metadata_props:
            if prop.key == CALIBRATION_METADATA_KEY:
                prop.value = entry
                return
        model.metadata_props.add(key=CALIBRATION_METADATA_KEY, value=entry)

    @classmethod
    def parse(cls, text: Optional[str]) -> Optional["CalibrationStamp"]:
        """The stamp from its JSON text, None when there is none; CalibrationError when it cannot be read."""
        if text is None:
            return None
        try:
            entry = json.loads(text)
            return cls(refresh=int(entry.get("refresh", 0) or 0), budget=dict(entry.get("budget") or {}),
                       thresholds=dict(entry.get("thresholds") or {}), gate=dict(entry.get("gate") or {}))
        except (ValueError, TypeError, AttributeError) as error:
            raise CalibrationError(f"the model's '{CALIBRATION_METADATA_KEY}' metadata cannot be read "
                                   f"({error})") from None

    @classmethod
    def of(cls, model: onnx.ModelProto) -> Optional["CalibrationStamp"]:
        return cls.parse(metadata_text(model, CALIBRATION_METADATA_KEY))


def describe_gate(gate: dict) -> str:
    """One phrase on the input gate of a stamp or calibration record (candidates.gate_record)."""
    if not gate:
        return "not recorded"
    rule, tau = gate.get("rule", "?"), float(gate.get("threshold", 0.0))
    if tau <= 0:
        return f"{rule} rule at threshold 0 (exact: no gate)"
    if rule == "block" and gate.get("inserted"):
        return (f"block rule (DeltaGate: {gate['gate_block']}x{gate['gate_block']} block means within {tau:.4g}, "
                f"every pixel within {gate['gate_hard']:.4g})")
    if rule == "block":
        return f"block rule asked at {tau:.4g}, no DeltaGate inserted (no node reads the input)"
    return f"{rule} rule (each op reading the input within {tau:.4g} per pixel)"

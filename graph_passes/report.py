"""The conversion summary: one row per Conv/MaxPool-like node, what was (or would be) done and why,
and how much of the model's convolution work the converted nodes cover."""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Optional

from .conversion_context import CONVERTED, FUSED, ConversionContext
from .metadata import node_entry


@dataclasses.dataclass
class ReportRow:
    node: str  # name in the source model
    op: str  # op type in the source model
    shape: str  # output shape
    decision: str  # converted / dense / ineligible
    reason: str
    flops: Optional[int]  # per frame (batch item)
    is_conv: bool
    delta_name: Optional[str] = None
    threshold: Optional[float] = None
    activation: str = ""
    fused: list[str] = dataclasses.field(default_factory=list)
    map_in: bool = False

    @property
    def converted(self) -> bool:
        return self.decision == CONVERTED


_CONV_OPS = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "DeformConv"}


@dataclasses.dataclass
class Report:
    rows: list[ReportRow]
    threshold: float
    inner_threshold: float
    done: bool = True  # False: what convert *would* do (inspect of an unconverted model)
    gate: str = ""  # how the input gate decides, e.g. "block 8x8, every pixel within 0.4 (DeltaGate_0)"

    # --- construction -----------------------------------------------------------------------------------

    @classmethod
    def from_context(cls, context: ConversionContext, *, done: bool = True) -> "Report":
        rows = [_row_from_entry(node_entry(plan)) for plan in context.plans]
        options = context.options
        gates = context.gates
        if not done and options.gate == "block" and options.threshold > 0:  # the gate pass has not run
            gates = [{"gate_block": options.gate_block, "gate_hard": options.gate_hard_for(options.threshold)}]
        return cls(rows, float(options.threshold), float(options.inner_threshold), done,
                   _describe_gate(gates, float(options.threshold)))

    @classmethod
    def from_metadata(cls, metadata: dict) -> "Report":
        rows = [_row_from_entry(entry) for entry in metadata.get("nodes", [])]
        threshold = float(metadata.get("threshold", 0.0))
        return cls(rows, threshold, float(metadata.get("inner_threshold", 0.0)), True,
                   _describe_gate(metadata.get("gates", []), threshold))

    def with_flops(self, flops: Mapping[str, int]) -> "Report":
        """A copy whose rows of unknown FLOPs take them from `flops`, keyed by the node's name in the model the
        report describes (the Delta op's name for a converted row)."""
        rows = [row if row.flops is not None else dataclasses.replace(row, flops=flops.get(row.delta_name or row.node))
                for row in self.rows]
        return dataclasses.replace(self, rows=rows)

    # --- figures ----------------------------------------------------------------------------------------

    @property
    def converted_rows(self) -> list[ReportRow]:
        return [row for row in self.rows if row.converted]

    def conv_flops(self) -> int:
        return sum(row.flops or 0 for row in self.rows if row.is_conv)

    def converted_conv_flops(self) -> int:
        return sum(row.flops or 0 for row in self.rows if row.is_conv and row.converted)

    def conv_share_converted(self) -> Optional[float]:
        """Fraction of the model's conv FLOPs in converted nodes; None unless every conv's is known."""
        if any(row.flops is None for row in self.rows if row.is_conv):
            return None
        total = self.conv_flops()
        return None if total == 0 else self.converted_conv_flops() / total

    # --- text ------------------------------------------------------------------------------------------

    def render(self) -> str:
        total = self.conv_flops()
        header = ["node", "op", "output", "decision", "as", "tau", "act", "GFLOPs", "conv%", "reason"]
        table = [header]
        for row in self.rows:
            share = "" if not row.is_conv or row.flops is None or total == 0 else f"{100.0 * row.flops / total:.1f}"
            table.append(
                [
                    row.node,
                    row.op,
                    row.shape,
                    row.decision,
                    row.delta_name or "-",
                    "-" if row.threshold is None else f"{row.threshold:g}",
                    row.activation or "-",
                    "?" if row.flops is None else f"{row.flops / 1e9:.3f}",
                    share or "-",
                    row.reason,
                ]
            )
        widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
        lines = []
        for index, line in enumerate(table):
            cells = [cell.ljust(width) for cell, width in zip(line[:-1], widths)]
            lines.append("  ".join([*cells, line[-1]]).rstrip())
            if index == 0:
                lines.append("  ".join("-" * w for w in widths) + "  " + "-" * len("reason"))
        lines.append("")
        lines.append(self.summary())
        return "\n".join(lines)

    def summary(self) -> str:
        verb = "converted" if self.done else "would convert"
        convs = [row for row in self.rows if row.op == "Conv"]
        pools = [row for row in self.rows if row.op == "MaxPool"]
        parts = [
            f"{verb} {sum(r.converted for r in convs)}/{len(convs)} Conv and "
            f"{sum(r.converted for r in pools)}/{len(pools)} MaxPool nodes"
        ]
        fused = sum(row.decision == FUSED for row in convs)
        if fused:
            parts[0] += f" ({fused} more fused into squeeze-excite gates, DeltaChannelGate)"
        conv_rows = [row for row in self.rows if row.is_conv]
        unknown = sum(row.flops is None for row in conv_rows)
        share = self.conv_share_converted()
        if unknown:
            parts.append(f"conv FLOPs unknown for {unknown} of {len(conv_rows)} convs (dynamic shapes)")
        elif share is not None:
            parts.append(
                f"covering {100.0 * share:.1f}% of conv FLOPs "
                f"({self.converted_conv_flops() / 1e9:.3f} of {self.conv_flops() / 1e9:.3f} GFLOPs per frame)"
            )
        parts.append(f"threshold {self.threshold:g}, inner_threshold {self.inner_threshold:g}")
        if self.gate:
            parts.append(f"input gate: {self.gate}")
        return "; ".join(parts)

    def __str__(self) -> str:
        return self.render()


def _describe_gate(gates: list[dict], threshold: float) -> str:
    """The input gate in words: its DeltaGate(s) with the block rule, per pixel, or "" at threshold 0."""
    if gates:
        rules = sorted({f"block {g['gate_block']}x{g['gate_block']}, every pixel within {g['gate_hard']:g}" for g in gates})
        names = [g["node"] for g in gates if "node" in g]
        return "; ".join(rules) + (f" ({', '.join(names)})" if names else "")
    return "per pixel, in each op reading the frame" if threshold > 0 else ""


def _row_from_entry(entry: dict) -> ReportRow:
    converted = entry.get("decision", CONVERTED) == CONVERTED
    source_op = entry.get("source_op") or entry.get("op", "?")
    return ReportRow(
        node=entry.get("source") or entry.get("name", "?"),
        op=source_op,
        shape=entry.get("shape") or "?",
        decision=entry.get("decision", CONVERTED),
        reason=entry.get("reason", ""),
        flops=entry.get("flops"),
        is_conv=source_op in _CONV_OPS,
        delta_name=entry.get("name") if converted else None,
        threshold=entry.get("threshold"),
        activation=entry.get("activation", ""),
        fused=list(entry.get("fused", [])),
        map_in=bool(entry.get("map_in", False)),
    )

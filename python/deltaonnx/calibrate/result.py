"""What calibrate returns, its files (the model, its thresholds, the record) and the report it prints."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional, Union

import onnx

from .._version import __version__
from ..bench import json_ready
from ..convert import save_model
from ..graph_passes.protocol import CALIBRATION_METADATA_KEY
from ..text_table import fmt, table
from .agreement import AgreementSummary, Budget
from .levels import FEW_BOXES
from .model_nodes import NodeCalibration
from .stamp import describe_gate
from .timings import describe_timings
from .verify import RangeResult


@dataclass
class CalibrationResult:
    model: onnx.ModelProto  # the converted model with the calibrated thresholds
    thresholds: dict[str, float]  # source node name -> tau (the format of `convert --thresholds`)
    refresh: int
    nodes: list[NodeCalibration]
    budget: Budget
    calibration: RangeResult
    heldout: Optional[RangeResult]
    search: dict
    settings: dict

    def as_dict(self) -> dict:
        return json_ready({
            "format": 1, "deltaonnx_version": __version__, "budget": asdict(self.budget), "refresh": self.refresh,
            "thresholds": self.thresholds, "settings": self.settings,
            "nodes": [asdict(n) | {"factor": n.factor} for n in self.nodes],
            "calibration": asdict(self.calibration), "heldout": asdict(self.heldout) if self.heldout else None,
            "search": self.search,
        })

    def report(self) -> str:
        return format_report(self)


def side_files(model_path: Union[str, Path]) -> tuple[Path, Path]:
    """OUT.onnx -> (OUT.thresholds.json, OUT.calibration.json)."""
    path = Path(model_path)
    stem = path.name[: -len(".onnx")] if path.name.endswith(".onnx") else path.name
    return path.with_name(f"{stem}.thresholds.json"), path.with_name(f"{stem}.calibration.json")


def save_calibration(result: CalibrationResult, model_path: Union[str, Path]) -> list[Path]:
    """Write the converted model, its thresholds ({source node: tau}, what `convert --thresholds` and
    `bench --node-thresholds` read) and the whole calibration record beside it. Returns the paths."""
    model_path = Path(model_path)
    thresholds_path, record_path = side_files(model_path)
    save_model(result.model, model_path)
    thresholds_path.write_text(json.dumps(result.thresholds, indent=2) + "\n")
    record_path.write_text(json.dumps(result.as_dict(), indent=2) + "\n")
    return [model_path, thresholds_path, record_path]


def _agreement_cells(summary: AgreementSummary, detections: bool) -> list[str]:
    cells = [f"{summary.error:.1e}"]
    if detections:
        cells = [fmt(summary.f1, ".3f"), fmt(summary.margin_f1, ".3f"), fmt(summary.mean_iou, ".3f"),
                 str(summary.reference_boxes)] + cells
    return cells


def format_report(result: CalibrationResult) -> str:
    detections = result.settings.get("detections") is not None
    gate = result.settings.get("gate") or {}
    searched = result.search.get("gate_rules_searched") or []
    lines = [f"budget: {result.budget.describe()} (against dense ORT, {result.settings['threads']} thread(s))",
             f"input gate: {describe_gate(gate)}; the search ran "
             + (f"the {', '.join(searched)} rule" if searched else "no gate threshold above 0")]
    header = ["frames", "range", "refresh", "conv work redone", "dense ms", "delta ms", "speedup", "ideal"]
    header += (["box F1", "margin F1", "IoU", "boxes"] if detections else []) + ["rel err", "dense jitter"]
    header += (["dense flicker"] if detections else []) + ["early -> late", "budget"]
    rows = []
    for label, r in (("calibration", result.calibration), ("held-out", result.heldout)):
        if r is None:
            rows.append([label, "-", "-", "no frames"] + ["-"] * (len(header) - 4))
            continue
        if detections:
            early_late = f"F1 {fmt(r.early.f1, '.3f')} -> {fmt(r.late.f1, '.3f')}"
        else:
            early_late = f"{r.early.error:.1e} -> {r.late.error:.1e}"
        rows.append([label, r.label(), str(r.refresh or "-"), f"{100 * r.work:.1f}% (p90 {100 * r.work_p90:.0f}%)",
                     fmt(r.dense_ms, ".1f"), fmt(r.delta_ms, ".1f"), fmt(r.speedup) + "x",
                     (fmt(r.ideal_speedup) + "x") if r.ideal_speedup else "-"]
                    + _agreement_cells(r.agreement, detections) + [fmt(r.dense_jitter, ".1e")]
                    + ([fmt(r.dense_flicker, ".3f")] if detections else [])
                    + [early_late + (" drift" if r.drift else ""), "ok" if r.within_budget else "; ".join(r.violations)])
    lines += ["", table(header, rows)]
    lines.append("(speedup: thread CPU time of dense ORT over the converted model, interleaved frame by frame; "
                 "ideal: dense time with its conv work scaled by the work redone; rel err: mean |delta - dense| / "
                 "spread of the dense output, worst output; dense jitter: the same measure between consecutive "
                 "dense frames)")
    if detections:
        d = result.settings["detections"]
        lines.append(f"(box F1: delta boxes against dense ORT's, score > {d['conf_threshold']:g}, IoU >= "
                     f"{d['match_iou']:g}, same class; margin F1: a missed dense box counts only above "
                     f"{d['conf_threshold'] + d['margin']:g}, a delta box matching a dense box above "
                     f"{max(d['conf_threshold'] - d['margin'], 0):g} is no false positive; dense flicker: 1 - box F1 "
                     "of each dense frame against the previous one, the noise floor of dense ORT itself)")
    node_rows = []
    for n in result.nodes:
        node_rows.append([n.name, n.source if len(n.source) <= 40 else "..." + n.source[-37:],
                          "gate" if n.gate else "inner", f"{n.scale:.3g}", f"{n.factor:g}", f"{n.tau:.4g}",
                          fmt(n.flops / 1e9, ".3f") if n.flops else "-",
                          fmt(100 * n.fraction, ".1f") + "%" if n.fraction is not None else "-"])
    lines += ["", "thresholds (tau = factor x scale; scale = input range for the gate, input std otherwise):",
              table(["node", "source", "kind", "scale", "factor", "tau", "GFLOPs", "recomputed"], node_rows)]
    search = result.search
    lines.append("")
    lines.append(f"search: {search['evaluations']} candidates on {search['search_frames']} frames "
                 f"({len(search['segments'])} segment(s)), {search['backoffs']} back-off(s)"
                 + (", stopped by the time limit" if search["stopped_by_time"] else "")
                 + f"; {search['cpu_seconds']:.0f} s CPU, {search['wall_seconds']:.0f} s wall")
    if search.get("timings"):
        lines.append(f"CPU by phase: {describe_timings(search['timings'])}")
    if search.get("note"):
        lines.append(search["note"])
    if search.get("range_boxes") is not None:
        lines.append(f"search frames: {search['search_boxes']} dense boxes on them, {search['range_boxes']} on the "
                     f"calibration range; {search['frames_skipped']} candidate frames skipped (the F1 budget out of "
                     "reach, or a greedy step unable or unlikely to gain)")
        if search["search_boxes"] < search["min_boxes"]:
            lines.append(f"note: the calibration range holds only {search['search_boxes']} scored dense boxes, fewer "
                         f"than the {search['min_boxes']} wanted: box F1 resolves 1/{max(search['search_boxes'], 1)} "
                         "at best; a longer --frames range or a lower --conf gives the search more to measure")
    if search.get("search_boxes") is not None and search["search_boxes"] < FEW_BOXES:
        lines.append(f"note: only {search['search_boxes']} dense boxes on the search frames, so box F1 was coarse "
                     "there; more --search-frames or a lower --conf give the search more to measure")
    if result.refresh:
        lines.append(f"refresh: full recompute every {result.refresh} frames per stream (deltaonnx.calibrate."
                     f"PeriodicRefresh; stored in the model's '{CALIBRATION_METADATA_KEY}' metadata)")
    for label, r in (("calibration", result.calibration), ("held-out", result.heldout)):
        if r is not None and r.speedup < 1.0:
            lines.append(f"note: on the {label} frames the converted model is slower than dense ORT "
                         f"({r.speedup:.2f}x): with this budget the model gains nothing on this clip")
            break
    return "\n".join(lines)

"""The benchmark's report: the text table `bench` prints, and the JSON it writes."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..text_table import fmt, table


def format_report(result: dict, per_node: bool = True) -> str:
    machine = result["machine"]
    dense = result["dense"]
    lines = [
        f"deltaonnx bench: {result['model']} on {result['source']}",
        f"input {result['input']['name']} {result['input']['shape']}; {result['frames_timed']} frames timed after "
        f"{min(result['warmup'], result['frames_read'])} warm-up; {result['threads']} thread(s); "
        f"conv work {result['conv_gflops']:.2f} GFLOPs/frame",
        f"machine: {machine['cpu']}, {machine['logical_cores']} logical cores, op kernels {machine['op_kernels']}, "
        f"onnxruntime {machine['onnxruntime']}",
    ]
    load = machine.get("load_average_1_5_15min")
    if load and machine.get("logical_cores") and load[0] > 0.75 * machine["logical_cores"]:
        lines.append(f"warning: the machine was busy (load average {load[0]:.1f} on {machine['logical_cores']} cores): "
                     "absolute times are noisy; the interleaved ratios less so")
    profile = dense.get("profile") or {}
    if profile:
        lines.append(f"dense time split (ORT profiler, {profile['frames']} frames): conv work "
                     f"{100 * profile['conv_work_share']:.0f}% (Conv, fused activations, layout reorders), "
                     f"other ops {100 * (1 - profile['conv_work_share']):.0f}%")
    has_boxes = any("detections" in r for r in result["runs"])
    header = ["model", "tau", "inner", "ms/frame", "fps", "speedup", "ideal", "achieved", "conv FLOPs redone",
              "state MB", "max rel diff"] + (["box F1", "margin F1", "box IoU"] if has_boxes else [])
    rows = [["dense ORT", "-", "-", fmt(dense["ms_per_frame"]), fmt(dense["fps"], ".1f"), "1.00x", "-", "-", "100%",
             "-", "-"] + (["-", "-", "-"] if has_boxes else [])]
    for r in result["runs"]:
        redone = r["conv_flops_redone"]
        # the change rules, when not convert's defaults (e.g. "gate=pixel" in a sweep of gates), name the row
        row = [" ".join(filter(None, ["deltaonnx", r.get("rules")])), f"{r['threshold']:g}", f"{r['inner_threshold']:g}", fmt(r["ms_per_frame"]),
               fmt(r["fps"], ".1f"), fmt(r["speedup"], ".2f") + "x", fmt(r["ideal_speedup"], ".2f") + "x"
               if r["ideal_speedup"] else "-", fmt(100 * r["achieved_share"], ".0f") + "%" if r["achieved_share"]
               else "-", f"{fmt(100 * redone['mean'], '.1f')}% (p90 {fmt(100 * redone['p90'], '.0f')}%)",
               fmt(r["state_bytes"] / 2**20, ".1f"),
               ("equal " if r["equal_to_dense"] else "") + fmt(r["max_rel"], ".1e")]
        if has_boxes:
            d = r.get("detections", {})
            row += [fmt(d.get("f1"), ".3f"), fmt(r.get("detections_margin", {}).get("f1"), ".3f"),
                    fmt(d.get("mean_iou"), ".3f")]
        rows.append(row)
    lines += ["", table(header, rows)]
    for r in result["runs"]:
        if r.get("dense_fallback_frames"):
            lines.append(f"{r['label']}: {r['dense_fallback_frames']} of {result['frames_timed']} timed frames ran "
                         "DeltaSession's dense twin (its fallback when almost everything changes; --no-fallback "
                         "measures the Delta ops instead)")
        if r.get("stateless_frames"):
            lines.append(f"{r['label']}: {r['stateless_frames']} of {result['frames_timed']} timed frames ran the Delta "
                         "ops without keeping state (stateless runs, when almost everything changes; --keep-state "
                         "keeps it on every run)")
    if any(r.get("detections") for r in result["runs"]):
        d = result["runs"][0]["detections"]
        m = result["runs"][0]["detections_margin"]
        conf, margin = m["conf_threshold"], m["margin"]
        lines.append(f"(boxes: {d['reference_boxes']} dense boxes over {d['frames']} frames, matched at IoU >= "
                     f"{d['iou_threshold']:g}, same class; margin F1: a missed dense box counts only above score "
                     f"{conf + margin:g}, a delta box matching a dense box above {max(conf - margin, 0):g} is no false "
                     "positive)")
        lines.append(f"dense ORT's own box flicker: {fmt(dense.get('box_flicker'), '.3f')} (1 - box F1 of each dense "
                     "frame against the previous one: the frame-to-frame noise users of dense ORT already live with)")

    lines += ["", "output agreement (over every frame, warm-up included; rel = max abs / max |dense|):"]
    out_rows = []
    for r in result["runs"]:
        for name, o in r["outputs"].items():
            out_rows.append([r["label"], name, fmt(o["max_abs"], ".3e"), fmt(o["mean_abs"], ".3e"),
                             fmt(o["max_rel"], ".2e")])
    lines.append(table(["configuration", "output", "max abs", "mean abs", "max rel"], out_rows))

    if per_node and result["runs"]:
        names = [n["name"] for n in result["runs"][0]["nodes"]]
        same_nodes = all([n["name"] for n in r["nodes"]] == names for r in result["runs"])
        if same_nodes and names:
            # Each node's threshold (calibrated ones differ node by node): one column when every run uses the
            # same, else beside each run's fraction.
            same_tau = all([n.get("threshold") for n in r["nodes"]] == [n.get("threshold") for n in result["runs"][0]["nodes"]]
                           for r in result["runs"])
            tau = lambda node: "-" if node.get("threshold") is None else f"{node['threshold']:g}"
            header = ["node", "op", "source", "GFLOPs"] + (["tau"] if same_tau else []) + [
                f"{r['label']} mean/p90" + ("" if same_tau else " (tau)") for r in result["runs"]]
            node_rows = []
            for i, name in enumerate(names):
                first = result["runs"][0]["nodes"][i]
                node_rows.append([name, first["op"], _short(first["source"]), fmt((first["flops"] or 0) / 1e9, ".3f")
                                  if first["flops"] else "-"] + ([tau(first)] if same_tau else []) + [
                    f"{_percent(r['nodes'][i]['fraction_mean'], '.1f')} / {_percent(r['nodes'][i]['fraction_p90'], '.0f')}"
                    + ("" if same_tau else f" ({tau(r['nodes'][i])})")
                    for r in result["runs"]])
            lines += ["", "recomputed fraction of each Delta node's output (mean / p90 over timed frames) and its threshold:",
                      table(header, node_rows)]
        for r in result["runs"]:
            if r["kept_dense"]:
                kept = "; ".join(f"{k['name']} ({k['reason']})" for k in r["kept_dense"][:6])
                more = f" and {len(r['kept_dense']) - 6} more" if len(r["kept_dense"]) > 6 else ""
                lines.append(f"kept dense in {r['label']}: {kept}{more}")
                break
    for r in result["runs"]:
        p = r.get("profile")
        if not p:
            continue
        top = ", ".join(f"{op} {ms:.2f}" for op, ms in list(p["by_op"].items())[:8])
        start = "from the ops' state" if p.get("from_ops_state") else "from empty state"
        lines += ["", f"where the time goes, {r['label']} (ORT profiler, last {p['frames']} frames {start}, median ms/frame): "
                  f"{p['wall_ms']:.2f} wall = {p['delta_ops_ms']:.2f} Delta ops + "
                  f"{p['kernel_ms'] - p['delta_ops_ms']:.2f} other kernels + {p['outside_kernels_ms']:.2f} outside "
                  f"kernels (state binding, session); ideal conv work {fmt(p.get('ideal_conv_work_ms'))}",
                  f"  by op: {top}"]
        lines += node_profile_lines(r["nodes"])
    for r in result["runs"]:
        o = r.get("oracle")
        if not o:
            continue
        lines += ["", f"granularity, {r['label']} (last {o['frames']} frames): the ops recomputed "
                  f"{fmt(100 * o['conv_flops_redone_measured'], '.1f')}% of conv FLOPs where the rules at pixel "
                  f"granularity (numpy reference) need {fmt(100 * o['conv_flops_redone_exact'], '.1f')}%; "
                  f"ideal speedup at pixel granularity {fmt(o.get('ideal_speedup_exact'), '.2f')}x; the reference "
                  + ("started from the ops' own state (same references)" if o.get("from_ops_state") else
                     "started from an empty state (fresher references than the ops' after a long run)")
                  + (" (the ops' figures count frames the dense twin ran as 100%; --no-fallback shows the ops' own)"
                     if r.get("dense_fallback_frames") else ""),
                  indent(table(["node", "op", "ops' fraction", "pixel-exact fraction"], [
                      [n["name"], n["op"], f"{fmt(100 * (n.get('fraction_same_frames') or float('nan')), '.1f')}%",
                       f"{fmt(100 * (n.get('exact_fraction') if n.get('exact_fraction') is not None else float('nan')), '.1f')}%"]
                      for n in r["nodes"]]), "  ")]
    if profile and any(r.get("profile") for r in result["runs"]):
        top = ", ".join(f"{op} {ms:.2f}" for op, ms in list(profile["by_op"].items())[:8])
        lines.append(f"  dense by op (ms/frame): {top}")
    if result.get("maps_written"):
        lines.append(f"\nchange-map pictures: {len(result['maps_written'])} files, e.g. {result['maps_written'][0]}")
    return "\n".join(lines)


def indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _short(text: Optional[str], width: int = 36) -> str:
    text = text or "-"
    return text if len(text) <= width else "..." + text[-(width - 3):]


def json_ready(value):
    """`value` with numpy scalars as Python numbers, non-finite floats as None and paths as text (for json.dumps)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(result: dict, path: str) -> None:
    text = json.dumps(json_ready(result), indent=2)
    if path == "-":
        sys.stdout.write(text + "\n")
    else:
        Path(path).write_text(text + "\n")


def node_profile_lines(nodes: Sequence[dict], shown: int = 16) -> list[str]:
    """Achieved against ideal per Delta node, furthest above its ideal first, and the totals."""
    timed = [n for n in nodes if n.get("profile_ms") is not None]
    if not timed:
        return []
    slow = sorted(timed, key=lambda n: -(n["profile_ms"] - (n.get("ideal_ms") or 0.0)))
    rows = [[n["name"], n["op"], n.get("source") or "-", _percent(n["fraction_mean"], ".1f"),
             fmt(n.get("dense_ms"), ".3f"), fmt(n.get("ideal_ms"), ".3f"), fmt(n["profile_ms"], ".3f"),
             f"{n['profile_ms'] / n['ideal_ms']:.1f}x" if n.get("ideal_ms") else "-",
             fmt(n["profile_ms"] - (n.get("ideal_ms") or 0.0), ".3f")] for n in slow[:shown]]
    measured = sum(n["profile_ms"] for n in timed)
    ideal = sum(n.get("ideal_ms") or 0.0 for n in timed)
    rows.append([f"all {len(timed)}", "", "", "", fmt(sum(n.get("dense_ms") or 0.0 for n in timed), ".3f"),
                 fmt(ideal, ".3f"), fmt(measured, ".3f"), f"{measured / ideal:.1f}x" if ideal else "-",
                 fmt(measured - ideal, ".3f")])
    return ["  per Delta node, furthest above its ideal first (ms/frame; dense = dense ORT's own kernel and fused "
            "activations for that conv, ideal = dense x recomputed, the ceiling at dense ORT's cost per FLOP):",
            indent(table(["node", "op", "source", "recomputed", "dense ms", "ideal ms", "measured ms", "x ideal",
                            "excess ms"], rows), "    ")]


def _percent(fraction: Optional[float], spec: str) -> str:
    """A recomputed fraction as a percentage; "-" where it is not known (a converted node without a change map)."""
    return "-" if fraction is None else f"{fmt(100 * fraction, spec)}%"

"""run_benchmark: dense ORT and the converted models on the same frames, interleaved in blocks (see the package's
docstring for what is measured and why)."""
from __future__ import annotations

import collections
import math
import os
import time
from dataclasses import asdict
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import onnxruntime as ort

from ..convert import convert_with_report, load_model
from ..detections import SCORE_MARGIN, BoxAgreement, MarginBoxAgreement, decode_with_margin, flicker
from ..graph_passes.metadata import is_converted
from ..session import DeltaSession
from ..video import Preprocess
from .config_run import ConfigRun
from .machine import Progress, machine_info
from .models import conv_flops, conversion_metadata, image_input, session_options
from .options import BenchError, BenchOptions, DeltaConfig, FrameRecord
from .pictures import map_frame_indices, write_maps
from .profile import dense_node_ms, ideal_speedup, oracle_fractions, profile_delta, profile_dense


RELATIVE_EQUALITY = 1e-4  # "outputs equal dense" at threshold 0 (the criterion)
_ITEMSIZE = {"tensor(float)": 4, "tensor(float16)": 2, "tensor(double)": 8, "tensor(uint8)": 1}


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q)) if len(values) else float("nan")


def _state_bytes(session) -> int:
    total = 0
    for value in session.state().values():
        total += int(np.prod(value.shape())) * _ITEMSIZE.get(value.data_type(), 4)
    return total


def run_benchmark(model, frames: Iterable[np.ndarray], preprocess: Optional[Preprocess] = None, *,
                  configs: Sequence[DeltaConfig] = (DeltaConfig(0.0, 0.0),), converted: Optional[Any] = None,
                  options: Optional[BenchOptions] = None, frame_total: Optional[int] = None,
                  source: str = "", on_frame: Optional[Callable[[FrameRecord], None]] = None,
                  capture_maps_at: Iterable[int] = ()) -> dict:
    """Benchmark `model` (the dense original: path, bytes or ModelProto) against its conversions.

    `frames`: uint8 BGR frames (see deltaonnx.video.read_frames); `preprocess`: how they become the input
    (default: read from the model's input shape). `configs`: the conversions to run; or `converted`, an
    already converted model (path/bytes/ModelProto), which then is the only configuration. `on_frame` is
    called for every frame with its FrameRecord (change maps included for the frames in `capture_maps_at`).
    Returns the result dict that `format_report` prints and `--json` writes."""
    options = options or BenchOptions()
    if options.threads < 1:
        raise BenchError(f"--threads must be >= 1, got {options.threads}")
    if options.warmup < 0:
        raise BenchError(f"--warmup must be >= 0, got {options.warmup}")
    original = load_model(model)
    if is_converted(original):
        raise BenchError("the dense model is already converted; give the original model (and the converted one "
                         "with --original ORIGINAL when calling bench on a converted model)")
    input_name, input_shape = image_input(original)
    if preprocess is None:
        preprocess = Preprocess.for_model_input(input_shape)
    output_names = [o.name for o in original.graph.output]
    if options.detections and options.detections != "yolo":
        raise BenchError(f"--detections: only 'yolo' is supported, got {options.detections!r}")
    boxes_output = options.detections_output or output_names[0]
    if options.detections and boxes_output not in output_names:
        raise BenchError(f"--detections-output {boxes_output!r} is not an output of the model ({output_names})")

    runs: list[ConfigRun] = []
    options_for_sessions = session_options(options.threads)
    if converted is not None:
        converted_proto = load_model(converted)
        if not is_converted(converted_proto):
            raise BenchError("the converted model has no deltaonnx metadata: run `deltaonnx convert` first")
        metadata = conversion_metadata(converted_proto)
        config = DeltaConfig(float(metadata.get("threshold", 0.0)), float(metadata.get("inner_threshold", 0.0)))
        runs.append(ConfigRun(config, converted_proto, metadata, DeltaSession(
            converted_proto, options_for_sessions, dense_fallback=options.dense_fallback,
            stateless_runs=options.stateless_runs, fallback_clock=options.fallback_clock)))
    else:
        if not configs:
            raise BenchError("no configuration to run (empty threshold lists)")
        for config in configs:
            proto, _ = convert_with_report(original, threshold=config.threshold, inner_threshold=config.inner_threshold,
                                           **config.gate.convert_kwargs(),
                                           **config.inner_gate.convert_kwargs("inner_"), layout=config.layout,
                                           fuse_sum=config.fuse_sum,
                                           thresholds=options.node_thresholds, all_nodes=options.all_nodes,
                                           dense_fraction=options.dense_fraction)
            runs.append(ConfigRun(config, proto, conversion_metadata(proto), DeltaSession(
                proto, options_for_sessions, dense_fallback=options.dense_fallback,
                stateless_runs=options.stateless_runs, fallback_clock=options.fallback_clock)))
    dense_bytes = original.SerializeToString()
    dense = ort.InferenceSession(dense_bytes, options_for_sessions, providers=["CPUExecutionProvider"])
    dense_boxes: list = []  # dense ORT's boxes above the threshold per frame, for its flicker
    if options.detections:
        for run in runs:
            run.agreement = BoxAgreement(iou_threshold=options.match_iou)
            run.margin_agreement = MarginBoxAgreement(iou_threshold=options.match_iou,
                                                      conf_threshold=options.conf_threshold, margin=SCORE_MARGIN)

    flops: dict[str, float] = {}
    dense_times: list[float] = []
    kept_inputs: collections.deque = collections.deque(maxlen=max(options.profile_frames, 0) + 1)
    maps_at = map_frame_indices(options, frame_total) | set(capture_maps_at)
    written_maps: list[str] = []
    frame_hw = None
    count = timed = 0
    block_size = max(1, options.interleave)
    progress = Progress(frame_total, "bench", options.progress)
    # The oracle and the profile replay the kept frames from the ops' own state (same references, drift
    # included), taken right after the frame before them: known only when the clip's length is.
    seed_index = (frame_total - kept_inputs.maxlen
                  if (options.oracle or options.profile_delta) and frame_total and frame_total > kept_inputs.maxlen
                  else None)

    def run_block(block: list[tuple[int, np.ndarray, dict]], block_number: int) -> None:
        """Dense ORT on the block's frames, then each converted model on them (the order of the models
        alternates between blocks); per-frame statistics are read right after each run."""
        nonlocal timed
        models = list(range(len(runs) + 1))  # 0: dense, k: runs[k - 1]
        if block_number % 2:
            models.reverse()
        outputs = {m: [] for m in models}
        maps = {m: {} for m in models}
        for m in models:
            session = dense if m == 0 else runs[m - 1].session
            for index, _, feed in block:
                start = time.perf_counter()
                result = session.run(None, feed)
                elapsed = time.perf_counter() - start
                outputs[m].append(result)
                if index < options.warmup:
                    continue
                if m == 0:
                    dense_times.append(elapsed)
                else:
                    runs[m - 1].times.append(elapsed)
                    if index == seed_index:
                        runs[m - 1].replay_state = {name: np.array(value.numpy())
                                                   for name, value in session.state().items()}
                    if _record_fractions(runs[m - 1]):
                        continue  # the dense twin ran: no change maps this frame
                if m and index in maps_at:  # the maps of this very run (the next run replaces them)
                    maps[m][index] = {node: change_map.copy() for node, change_map in session.change_maps().items()}
        for position, (index, frame, feed) in enumerate(block):
            dense_outputs = outputs[0][position]
            reference_boxes = None
            if options.detections:  # decoded down to conf - margin; strict comparisons take those above conf
                reference_boxes = _decode(dense_outputs[output_names.index(boxes_output)], options)
                dense_boxes.append(reference_boxes.above(options.conf_threshold))
            for k, run in enumerate(runs, start=1):
                _compare_outputs(run, output_names, dense_outputs, outputs[k][position])
                if reference_boxes is not None:
                    boxes = _decode(outputs[k][position][output_names.index(boxes_output)], options)
                    run.agreement.add(boxes.above(options.conf_threshold), dense_boxes[-1])
                    run.margin_agreement.add(boxes, reference_boxes)
            frame_maps = [maps[k].get(index) for k in range(1, len(runs) + 1)]
            if options.maps_dir is not None and index in maps_at and index >= options.warmup:
                written_maps.extend(write_maps(options.maps_dir, index, preprocess.fit(frame), runs, frame_maps))
            if index >= options.warmup:
                timed += 1
            if on_frame is not None:
                on_frame(FrameRecord(index, index >= options.warmup, frame, feed[input_name], dense_outputs,
                                     [outputs[k][position] for k in range(1, len(runs) + 1)],
                                     [run.session for run in runs], frame_maps))

    block: list[tuple[int, np.ndarray, dict]] = []
    blocks = 0
    try:
        for index, frame in enumerate(frames):
            feed = {input_name: preprocess(frame)}
            if index == 0:
                frame_hw = frame.shape[:2]
                _check_model_runs(dense, feed)
                flops = conv_flops(original, feed)
            block.append((index, frame, feed))
            kept_inputs.append(feed)
            count += 1
            # warm-up frames run one by one (their own block), then blocks of `interleave` frames
            if len(block) >= block_size or index < options.warmup:
                run_block(block, blocks)
                blocks += 1
                block = []
                progress.update(count, _progress_note(dense_times, runs))
        if block:
            run_block(block, blocks)
            progress.update(count, _progress_note(dense_times, runs))
    finally:
        progress.close()
    if count == 0:
        raise BenchError(f"no frames were read from {source or 'the clip'}")
    if timed == 0:
        raise BenchError(f"only {count} frames were read and --warmup is {options.warmup}: nothing was timed "
                         "(lower --warmup or read more frames)")

    for run in runs:
        _finish_fractions(run, flops)
    fused_names = {name for run in runs for node in run.metadata.get("nodes", [])
                   if node.get("decision") == "converted" for name in node.get("fused", [])}
    dense_profile = {}
    if options.profile_frames > 0 and len(kept_inputs) > 1:
        dense_profile = profile_dense(dense_bytes, list(kept_inputs), options.threads, fused_names)
    dense_ms = 1000.0 * float(np.mean(dense_times))
    result = {
        "machine": machine_info(),
        "model": _describe(model), "source": source,
        "input": {"name": input_name, "shape": list(preprocess.input_shape(frame_hw)),
                  "frame_hw": list(frame_hw) if frame_hw else None},
        "preprocess": preprocess.describe(),
        "threads": options.threads, "interleave": block_size, "dense_fallback": options.dense_fallback, "frames_read": count, "warmup": options.warmup, "frames_timed": timed,
        "conv_gflops": sum(flops.values()) / 1e9,
        "dense": {"ms_per_frame": dense_ms, "ms_median": 1000.0 * float(np.median(dense_times)),
                  "fps": 1000.0 / dense_ms if dense_ms else None, "profile": dense_profile},
        "runs": [],
        "maps_written": written_maps,
    }
    if options.detections:
        steady = flicker(dense_boxes, options.match_iou)
        result["dense"]["box_flicker"] = 1.0 - steady.f1 if steady.frames else None
        result["dense"]["box_flicker_counts"] = steady.as_dict()
    for run in runs:
        entry = _summarize(run, dense_ms, flops, dense_profile, output_names)
        # From the ops' state, the frames after the one it was taken at; else every kept frame from empty state.
        replay = list(kept_inputs)[1:] if run.replay_state is not None else list(kept_inputs)
        if options.profile_delta and len(kept_inputs) > 1:
            entry["profile"] = profile_delta(run.model, replay, options.threads, options.dense_fallback,
                                             options.stateless_runs, run.replay_state)
            _attach_node_profile(entry, dense_profile, flops,
                                 {node.get("name"): node.get("fused", []) for node in run.metadata.get("nodes", [])},
                                 {node.name: list(node.output) for node in original.graph.node})
        if options.oracle and len(kept_inputs) > 1:
            _attach_oracle(entry, run, replay, flops, dense_profile)
        result["runs"].append(entry)
    return result


def _attach_oracle(entry: dict, run: "ConfigRun", inputs: list, flops: dict[str, float], dense_profile: dict) -> None:
    """The pixel-granular recomputed fractions on the replayed frames, beside the ops' own on the same frames."""
    seeded = run.replay_state is not None
    exact, runs = oracle_fractions(run.model, inputs, run.replay_state)
    measured_total = exact_total = total = 0.0
    converted_sources = set()
    for node in entry["nodes"]:
        node["exact_fraction"] = exact.get(node["name"])
        recent = run.fractions.get(node["name"], [])[-runs:] if runs else []
        node["fraction_same_frames"] = float(np.mean(recent)) if recent else None
        if node["flops"] and node["exact_fraction"] is not None and node["fraction_same_frames"] is not None:
            converted_sources.add(node["source"])
            exact_total += node["flops"] * node["exact_fraction"]
            measured_total += node["flops"] * node["fraction_same_frames"]
    for source, f in flops.items():
        total += f
        if source not in converted_sources:  # kept dense: redone in full either way
            exact_total += f
            measured_total += f
    oracle = {"frames": runs, "from_ops_state": seeded,
              "conv_flops_redone_exact": exact_total / total if total else None,
              "conv_flops_redone_measured": measured_total / total if total else None}
    if dense_profile and oracle["conv_flops_redone_exact"] is not None:
        share = dense_profile["conv_work_share"]
        oracle["ideal_speedup_exact"] = ideal_speedup(share, oracle["conv_flops_redone_exact"])
    entry["oracle"] = oracle


def _attach_node_profile(entry: dict, dense_profile: dict, flops: dict[str, float],
                         fused: Optional[Mapping[str, Sequence[str]]] = None,
                         outputs: Optional[Mapping[str, Sequence[str]]] = None) -> None:
    """Per Delta node: its measured time and its ideal, dense ORT's own time for that conv (kernel and fused
    activations, from the dense profile) x its recomputed fraction; where the dense profile has no such node,
    dense conv work x the node's FLOP share x its fraction. fused: Delta node -> the dense nodes fused into it;
    outputs: dense node -> its outputs."""
    profile = entry["profile"]
    conv_work_ms = dense_profile.get("conv_work_ms", float("nan"))
    dense_by_node = dense_profile.get("by_node", {})
    total_flops = sum(flops.values())
    profile["ideal_conv_work_ms"] = conv_work_ms * entry["conv_flops_redone"]["mean"]
    by_node = profile.pop("by_node", {})
    for node in entry["nodes"]:
        node["profile_ms"] = by_node.get(node["name"])
        source = node.get("source")
        names = [source, *(fused or {}).get(node["name"], ())] if source else []
        # ORT names an NCHWc Conv after the output of the last node it fused (a BatchNormalization, a Clip).
        node["dense_ms"] = None if not source else dense_node_ms(
            dense_by_node, names, [o for n in names for o in (outputs or {}).get(n, ())])
        fraction = node["fraction_mean"]
        if fraction is None:
            node["ideal_ms"] = None
        elif node["dense_ms"] is not None:
            node["ideal_ms"] = node["dense_ms"] * fraction
        else:
            node["ideal_ms"] = (conv_work_ms * node["flops"] / total_flops * fraction
                                if node["flops"] and total_flops else None)


def _progress_note(dense_times: list, runs: list) -> str:
    if not dense_times:
        return "warm-up"
    return f"dense {1000 * float(np.mean(dense_times)):.1f} ms" + "".join(
        f" | {run.config.label} {1000 * float(np.mean(run.times)):.1f} ms" for run in runs[:2] if run.times)


def _describe(model) -> str:
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    return type(model).__name__


def _check_model_runs(dense: ort.InferenceSession, feed: dict) -> None:
    """The dense model on the first prepared frame: a model that cannot take the input as prepared (a --size
    too small for its strides, say) is a problem with the options, reported as such, not a bug."""
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the error is reported once, below
    try:
        dense.run(None, feed, quiet)
    except (ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.RuntimeException) as error:
        (name, value), = feed.items()
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise BenchError(f"the model does not run on input {name} of shape {list(value.shape)} (check --size and "
                         f"--resize): {reason}") from error


def _decode(output: np.ndarray, options: BenchOptions):
    return decode_with_margin(output, options.conf_threshold, iou_threshold=options.nms_iou,
                              objectness=options.objectness)[0]


def _compare_outputs(run: ConfigRun, names: list[str], dense_outputs: list, delta_outputs: list) -> None:
    for name, reference, value in zip(names, dense_outputs, delta_outputs):
        reference = np.asarray(reference, np.float64)
        value = np.asarray(value, np.float64)
        if reference.shape != value.shape:
            raise BenchError(f"output {name}: the converted model gives shape {value.shape}, dense {reference.shape}")
        difference = np.abs(value - reference)
        if not np.all(np.isfinite(difference)):
            # NaN on either side is never "equal" (an all-NaN output would otherwise compare equal to itself);
            # Inf where the other has a number is the worst disagreement; the same infinity on both sides agrees.
            same_infinity = np.isinf(reference) & (value == reference)
            difference = np.where(same_infinity, 0.0, np.where(np.isnan(difference), np.inf, difference))
        run.output_max_abs[name] = max(run.output_max_abs[name], float(difference.max()) if difference.size else 0.0)
        run.output_sum_mean_abs[name] += float(difference.mean()) if difference.size else 0.0
        scale_key = "\0scale:" + name
        finite = np.abs(reference[np.isfinite(reference)])
        run.output_max_abs[scale_key] = max(run.output_max_abs[scale_key], float(finite.max()) if finite.size else 0.0)
    run.compared_frames += 1


def _record_fractions(run: ConfigRun) -> bool:
    """Note the last run's change-map shares (DeltaSession.last_run: a few reads, no per-node Python, since this
    runs between two timed runs of the session); returns whether it ran the dense twin (DeltaSession's fallback
    for streams that change almost everywhere), which redoes everything and leaves no change maps.
    _finish_fractions turns the notes into per-node and per-frame numbers once the frames are done."""
    last = run.session.last_run()
    ran_dense = last.dense_runs > run.dense_runs_seen
    run.dense_runs_seen = last.dense_runs
    if last.stateless_runs > run.stateless_runs_seen:
        run.stateless_frames += 1
    run.stateless_runs_seen = last.stateless_runs
    if ran_dense:
        run.dense_frames += 1
    elif last.mode != run.mode_seen:  # the state's size changes with the mode only (the shapes are fixed here)
        run.state_bytes = max(run.state_bytes, _state_bytes(run.session))
        run.mode_seen = last.mode
    run.frame_fractions.append(None if ran_dense else last.fractions)
    run.map_nodes = last.nodes
    return ran_dense


def _finish_fractions(run: ConfigRun, flops: dict[str, float]) -> None:
    """Per converted node its share recomputed on each noted frame (1 where the dense twin ran), and per frame the
    share of the conv FLOPs redone (of the converted convs, and of all convs: those kept dense redo everything)."""
    column = {name: index for index, name in enumerate(run.map_nodes)}
    nodes = [node for node in run.metadata.get("nodes", []) if node.get("decision") == "converted"]
    for fractions in run.frame_fractions:
        redone = total = redone_converted = total_converted = 0.0
        converted_sources = set()
        for node in nodes:
            name = node["name"]
            if fractions is None:
                fraction = 1.0
            elif name in column:
                fraction = float(fractions[column[name]])
            else:
                continue
            run.fractions[name].append(fraction)
            if node.get("source_op") == "Conv" and node.get("source") in flops:
                converted_sources.add(node["source"])
                f = flops[node["source"]]
                redone_converted += f * fraction
                total_converted += f
        for source, f in flops.items():  # convs kept dense are redone in full
            total += f
            if source not in converted_sources:
                redone += f
        redone += redone_converted
        if total_converted:
            run.flops_fraction_converted.append(redone_converted / total_converted)
        if total:
            run.flops_fraction_all.append(redone / total)
    run.frame_fractions = []


def _summarize(run: ConfigRun, dense_ms: float, flops: dict[str, float], dense_profile: dict,
               output_names: list[str]) -> dict:
    ms = 1000.0 * float(np.mean(run.times))
    speedup = dense_ms / ms if ms else float("nan")
    outputs = {}
    for name in output_names:
        scale = run.output_max_abs.get("\0scale:" + name, 0.0)
        max_abs = run.output_max_abs.get(name, 0.0)
        outputs[name] = {"max_abs": max_abs, "mean_abs": run.output_sum_mean_abs[name] / max(run.compared_frames, 1),
                         "max_rel": max_abs / scale if scale else (0.0 if max_abs == 0 else float("inf"))}
    nodes = []
    for node in run.metadata.get("nodes", []):
        name = node["name"]
        converted = node.get("decision") == "converted"
        values = run.fractions.get(name, [])
        nodes.append({"name": name, "op": node.get("op"), "source": node.get("source"), "decision": node.get("decision"),
                      "reason": node.get("reason"), "threshold": node.get("threshold"),
                      "flops": flops.get(node.get("source")) if node.get("source_op") == "Conv" else None,
                      "fraction_mean": float(np.mean(values)) if converted and values else (None if converted else 1.0),
                      "fraction_p90": _percentile(values, 90) if converted and values else (None if converted else 1.0)})
    redone_all = {"mean": float(np.mean(run.flops_fraction_all)) if run.flops_fraction_all else float("nan"),
                  "p90": _percentile(run.flops_fraction_all, 90)}
    redone_converted = {"mean": float(np.mean(run.flops_fraction_converted)) if run.flops_fraction_converted else float("nan"),
                        "p90": _percentile(run.flops_fraction_converted, 90)}
    ideal = None
    if dense_profile and dense_profile.get("kernel_ms") and math.isfinite(redone_all["mean"]):
        ideal = ideal_speedup(dense_profile["conv_work_share"], redone_all["mean"])
    converted_count = sum(1 for n in nodes if n["decision"] == "converted")
    entry = {
        "threshold": run.config.threshold, "inner_threshold": run.config.inner_threshold, "label": run.config.label,
        "rules": run.config.rules,
        "gate": asdict(run.config.gate), "inner_gate": asdict(run.config.inner_gate),
        "ms_per_frame": ms, "ms_median": 1000.0 * float(np.median(run.times)), "fps": 1000.0 / ms if ms else None,
        "speedup": speedup, "ideal_speedup": ideal,
        "achieved_share": speedup / ideal if ideal else None,
        "outputs": outputs,
        "max_rel": max((o["max_rel"] for o in outputs.values()), default=0.0),
        "equal_to_dense": all(o["max_rel"] <= RELATIVE_EQUALITY for o in outputs.values()),
        "conv_flops_redone": redone_all, "converted_conv_flops_redone": redone_converted,
        "state_bytes": run.state_bytes,
        "dense_fallback_frames": run.dense_frames, "stateless_frames": run.stateless_frames,
        "converted_nodes": converted_count, "kept_dense": [{"name": n["name"], "reason": n["reason"]} for n in nodes
                                                           if n["decision"] not in ("converted", "fused")],
        "nodes": [n for n in nodes if n["decision"] == "converted"],
    }
    if run.agreement is not None:
        entry["detections"] = run.agreement.as_dict()
        entry["detections_margin"] = run.margin_agreement.as_dict()
    return entry

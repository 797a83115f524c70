"""`python -m deltaonnx bench MODEL --video CLIP`: dense ORT against the converted model, on your video.

Both models run on the same frames, interleaved in blocks of `--interleave` frames (dense ORT runs a block,
then each converted model runs the same block, in an order that alternates between blocks), so a change of
machine load hits both alike; blocks rather than single frames because alternating every frame makes each
model evict the other's weights and state from the caches, which deployment never sees. Same thread count;
the first `--warmup` frames run untimed (they also fill the state). For each converted configuration (one, or one per value of `--thresholds` x `--inner-thresholds`)
it reports:

* ms/frame, fps and the speedup over dense ORT (means over the timed frames);
* output agreement: per output the max and mean absolute difference to dense, and the max relative to the
  dense output's largest magnitude (`max_rel`; threshold 0 must give <= 1e-4); with `--detections yolo`, box
  F1 / mean IoU of the delta model's boxes against dense ORT's, the margin F1 beside it and dense ORT's own
  box flicker between consecutive frames (deltaonnx.detections);
* per Delta node the recomputed fraction of its output (mean and p90 over frames, from the change maps) and
  the FLOP-weighted totals: over converted convs, and over all of the model's convs (those kept dense count
  as fully recomputed) -- the "conv FLOPs to redo" of docs/design.md ("Where it pays");
* the ideal speedup this allows (Amdahl): dense ORT's time is split with ORT's profiler into *conv work*
  (Conv/FusedConv/MaxPool kernels, the activations the converter fuses into the Delta ops, and the NCHWc
  layout reorders ORT inserts around its convs -- everything the converted model replaces) and the rest;
  ideal time = rest + conv work x FLOP fraction redone. A profile rather than a conv-less copy of the model,
  because removing convs changes the shapes every other op sees. Then the achieved share = speedup / ideal;
* state memory (bytes of the carried state tensors);
* with `--profile`, where the converted model's time goes (per op type, from ORT's profiler).

`run_benchmark` is the library entry point (used by `demo` too); `add_command` registers the CLI.
"""
from __future__ import annotations

import argparse
import collections
import itertools
import json
import math
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from . import __version__
from .graph_passes.conversion_context import DEFAULT_GATE
from .video import Preprocess, VideoError

METADATA_KEY = "deltaonnx"
# Kernels of dense ORT that the converted model replaces (besides the fused activations, found by name).
CONV_WORK_OPS = {"Conv", "FusedConv", "NhwcFusedConv", "MaxPool", "NhwcMaxPool", "ReorderInput", "ReorderOutput"}
DELTA_OPS = ("DeltaConv", "DeltaPool", "DeltaMapUnion")
RELATIVE_EQUALITY = 1e-4  # "outputs equal dense" at threshold 0 (the issue's criterion)
_ITEMSIZE = {"tensor(float)": 4, "tensor(float16)": 2, "tensor(double)": 8, "tensor(uint8)": 1}


class BenchError(ValueError):
    """A benchmark cannot run as asked (model, clip or options); the message says what to change."""


@dataclass(frozen=True)
class GateConfig:
    """How the input gate decides (convert's gate, gate_block, gate_hard), or the inner thresholds (inner_gate, ...)."""

    rule: str = "pixel"  # the inner gate's default; the input gate's is INPUT_GATE
    block: Optional[int] = None  # None: convert's default
    hard: Optional[float] = None  # None: convert's default (a multiple of tau)

    @classmethod
    def parse(cls, text: str) -> "GateConfig":
        """pixel, block, block:K or block:K:HARD."""
        parts = text.strip().split(":")
        try:
            if parts[0] == "pixel" and len(parts) == 1:
                return cls()
            if parts[0] == "block" and len(parts) <= 3:
                block = int(parts[1]) if len(parts) > 1 else None
                hard = float(parts[2]) if len(parts) > 2 else None
                return cls("block", block, hard)
        except ValueError:
            pass
        raise argparse.ArgumentTypeError(f"a gate is pixel, block, block:K or block:K:HARD, got {text!r}")

    def convert_kwargs(self, prefix: str = "") -> dict:
        """convert's keyword arguments: gate, gate_block, gate_hard (prefix "inner_": of the inner gate)."""
        kwargs = {f"{prefix}gate": self.rule}
        if self.block is not None:
            kwargs[f"{prefix}gate_block"] = self.block
        if self.hard is not None:
            kwargs[f"{prefix}gate_hard"] = self.hard
        return kwargs

    def label_as(self, name: str, default: str = "pixel") -> str:
        """"" for `default` with convert's k and bound, else " name=rule[k][/hard]"."""
        if self.rule == default and self.block is None and self.hard is None:
            return ""
        if self.rule == "pixel":
            return f" {name}=pixel"
        return f" {name}=block" + (f"{self.block}" if self.block else "") + (f"/{self.hard:g}" if self.hard is not None else "")

    @property
    def label(self) -> str:
        return self.label_as("gate", DEFAULT_GATE)


INPUT_GATE = GateConfig(DEFAULT_GATE)  # convert's input gate


@dataclass(frozen=True)
class DeltaConfig:
    """One converted configuration: the input gate and the inner threshold."""

    threshold: float
    inner_threshold: float
    gate: GateConfig = INPUT_GATE
    inner_gate: GateConfig = GateConfig()  # the change rule of the inner thresholds

    @property
    def label(self) -> str:
        return f"tau={self.threshold:g} inner={self.inner_threshold:g}{self.gate.label}{self.inner_gate.label_as('inner_gate')}"


@dataclass
class BenchOptions:
    threads: int = 1
    warmup: int = 5
    detections: Optional[str] = None  # "yolo": decode boxes and compare them
    detections_output: Optional[str] = None  # which output holds the boxes (default: the first)
    conf_threshold: float = 0.25
    nms_iou: float = 0.45
    match_iou: float = 0.5
    objectness: bool = False
    all_nodes: bool = False
    dense_fraction: float = 0.5
    node_thresholds: Optional[dict] = None
    profile_frames: int = 20  # dense frames profiled for the Amdahl bound (0: no bound)
    profile_delta: bool = False  # also profile the converted models
    oracle: bool = False  # also run the numpy reference (pixel-granular rules) on the profiled frames
    dense_fallback: bool = True  # DeltaSession's fallback to the dense twin when almost everything changes
    maps_dir: Optional[Path] = None
    maps_frames: int = 3
    progress: bool = True
    interleave: int = 8  # frames per block: dense runs a block, then each converted model runs the same block


@dataclass
class FrameRecord:
    """What `on_frame` callbacks see for each frame (after the runs)."""

    index: int
    timed: bool
    frame: np.ndarray  # uint8 BGR as read
    input: np.ndarray  # the model input
    dense_outputs: list
    delta_outputs: list  # one list of outputs per configuration
    sessions: list  # the DeltaSessions, one per configuration
    change_maps: list = field(default_factory=list)  # per configuration: {node: map} of this frame, or None
                                                     # (captured only for frames in capture_maps_at / --maps)


# --------------------------------------------------------------------------------------------------------
# machine, progress
# --------------------------------------------------------------------------------------------------------


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    simd = None
    try:
        from . import _native

        simd = _native.simd_level()
    except Exception:  # noqa: BLE001 - informational only
        pass
    try:  # other work on the machine makes timings noisy: say how busy it was
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
            "onnxruntime": ort.__version__, "numpy": np.__version__, "deltaonnx": __version__, "op_kernels": simd,
            "load_average_1_5_15min": load}


class Progress:
    """A one-line progress bar on stderr (a line per 10% when stderr is not a terminal)."""

    def __init__(self, total: Optional[int], label: str, enabled: bool = True, stream=None):
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last_draw = 0.0
        self.last_decile = -1
        self.started = time.perf_counter()

    def update(self, done: int, note: str = "") -> None:
        if not self.enabled:
            return
        if self.tty:
            now = time.perf_counter()
            if now - self.last_draw < 0.1 and done != self.total:
                return
            self.last_draw = now
            self.stream.write("\r" + self._line(done, note) + "\033[K")
            self.stream.flush()
        elif self.total:
            decile = done * 10 // self.total
            if decile > self.last_decile:
                self.last_decile = decile
                self.stream.write(self._line(done, note) + "\n")
                self.stream.flush()

    def _line(self, done: int, note: str) -> str:
        elapsed = time.perf_counter() - self.started
        if self.total:
            width = 24
            filled = min(width, done * width // max(self.total, 1))
            bar = "#" * filled + "." * (width - filled)
            eta = elapsed / done * (self.total - done) if done else 0.0
            return f"{self.label} [{bar}] {done}/{self.total} frames {elapsed:.0f}s eta {eta:.0f}s {note}"
        return f"{self.label} {done} frames {elapsed:.0f}s {note}"

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


# --------------------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------------------


def is_converted(proto: onnx.ModelProto) -> bool:
    return any(p.key == METADATA_KEY for p in proto.metadata_props)


def conversion_metadata(proto: onnx.ModelProto) -> dict:
    for prop in proto.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    return {}


def session_options(threads: int, profile_prefix: Optional[str] = None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def image_input(proto: onnx.ModelProto) -> tuple[str, list]:
    """The model's one image input (name, shape with ints or symbolic names)."""
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers and not i.name.startswith("deltaonnx.")]
    if len(inputs) != 1:
        raise BenchError(f"bench feeds one image input, but the model has {len(inputs)}: {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    return inputs[0].name, shape


def conv_flops(proto: onnx.ModelProto, feed: dict) -> dict[str, float]:
    """Multiply-add FLOPs (2 per MAC) of every Conv node of the dense model at this input, by node name.

    Found by running the model once with every Conv output exposed, so the shapes are exact whatever the
    model's symbolic dimensions."""
    weights = {t.name: list(t.dims) for t in proto.graph.initializer}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    if not convs:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    declared = {o.name for o in probe.graph.output}
    elem_types = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
        elem_types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    except Exception:  # noqa: BLE001 - then assume float outputs
        pass
    for node in convs:
        if node.output[0] not in declared:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(
                node.output[0], elem_types.get(node.output[0], onnx.TensorProto.FLOAT), None))
    session = ort.InferenceSession(probe.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"])
    names = [n.output[0] for n in convs]
    shapes = dict(zip(names, (o.shape for o in session.run(names, feed))))
    flops = {}
    for node in convs:
        w = weights.get(node.input[1])
        y = shapes.get(node.output[0])
        if w is None or y is None or len(w) < 3:
            continue
        per_output = int(np.prod(w[1:]))  # C/group * kh * kw multiply-adds per output value
        flops[node.name or node.output[0]] = 2.0 * per_output * float(np.prod(y[1:]))
    return flops


# --------------------------------------------------------------------------------------------------------
# profiles
# --------------------------------------------------------------------------------------------------------


def read_profile(path: str, skip_runs: int = 1) -> tuple[list[tuple[str, str, float]], int]:
    """Kernel events (node name, op type, microseconds) of an ORT profile, without those of the first
    `skip_runs` runs; and the number of runs kept."""
    with open(path) as f:
        events = json.load(f)
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    kept_runs = runs[skip_runs:]
    if not kept_runs:
        return [], 0
    start = kept_runs[0][0]
    kernels = []
    for e in events:
        name = e.get("name", "")
        if e.get("cat") == "Node" and name.endswith("_kernel_time") and e["ts"] >= start:
            kernels.append((name[: -len("_kernel_time")], e.get("args", {}).get("op_name", "?"), float(e["dur"])))
    return kernels, len(kept_runs)


def _is_fused_activation(node_name: str, fused_names: set[str]) -> bool:
    if node_name in fused_names:
        return True
    return any(node_name.startswith(f + "/") for f in fused_names)  # ORT fusions keep the source name as prefix


def profile_dense(model_bytes: bytes, inputs: Sequence[dict], threads: int, fused_names: set[str]) -> dict:
    """Dense ORT's time per frame split into conv work (what the converted model replaces) and the rest."""
    with tempfile.TemporaryDirectory(prefix="deltaonnx-profile-") as tmp:
        session = ort.InferenceSession(model_bytes, session_options(threads, os.path.join(tmp, "dense")),
                                       providers=["CPUExecutionProvider"])
        for feed in inputs:
            session.run(None, feed)
        kernels, runs = read_profile(session.end_profiling(), skip_runs=1)
    if runs == 0:
        return {}
    by_op: dict[str, float] = collections.defaultdict(float)
    by_node: dict[str, float] = collections.defaultdict(float)  # conv work per dense node (its own cost)
    conv_work = other = 0.0
    for node, op, us in kernels:
        ms = us / 1000.0 / runs
        if op in CONV_WORK_OPS or _is_fused_activation(node, fused_names):
            conv_work += ms
            by_op[op + " (conv work)"] += ms
            by_node[node] += ms
        else:
            other += ms
            by_op[op] += ms
    return {"frames": runs, "kernel_ms": conv_work + other, "conv_work_ms": conv_work, "other_ms": other,
            "conv_work_share": conv_work / (conv_work + other) if conv_work + other else 0.0,
            "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])), "by_node": dict(by_node)}


def _dense_node_ms(dense_by_node: Mapping[str, float], names: Sequence[str], outputs: Sequence[str]) -> Optional[float]:
    """Dense ORT's own time for one converted Conv: the kernels of its nodes (`names`: the Conv and the
    activations fused into the Delta op; ORT's fusions keep a node's name, or make it a prefix before "/") and
    the NCHWc Conv ORT names after the Conv's output (`outputs` + "_nchwc"). None when nothing matches. The
    NCHWc reorders ORT puts between layers are shared and left out."""
    total, found = 0.0, False
    for node, ms in dense_by_node.items():
        if (any(node == n or node.startswith(n + "/") for n in names)
                or any(node == o + "_nchwc" for o in outputs)):
            total += ms
            found = True
    return total if found else None


def profile_delta(converted: onnx.ModelProto, inputs: Sequence[dict], threads: int, dense_fallback: bool = True,
                  initial_state: Optional[Mapping[str, np.ndarray]] = None) -> dict:
    """The converted model's time per frame by op type, over `inputs` in order (the first run is left out:
    it fills the state, or warms the session up). From `initial_state` (the ops' own state before these
    frames) the frames cost what they cost in the timed run; from an empty state they start on fresh
    references, which recompute less than references that drifted below tau over a long run (rule 3)."""
    from .session import DeltaSession

    with tempfile.TemporaryDirectory(prefix="deltaonnx-profile-") as tmp:
        session = DeltaSession(converted, session_options(threads, os.path.join(tmp, "delta")),
                               dense_fallback=dense_fallback)
        if initial_state is not None:
            session.load_state(initial_state)
        wall = []
        for i, feed in enumerate(inputs):
            start = time.perf_counter()
            session.run(None, feed)
            if i:
                wall.append(time.perf_counter() - start)
        kernels, runs = read_profile(session.inference_session.end_profiling(), skip_runs=1)
    if runs == 0:
        return {}
    by_op: dict[str, float] = collections.defaultdict(float)
    by_node: dict[str, float] = collections.defaultdict(float)
    for node, op, us in kernels:
        by_op[op] += us / 1000.0 / runs
        if op in DELTA_OPS:
            by_node[node] += us / 1000.0 / runs
    kernel_ms = sum(by_op.values())
    wall_ms = 1000.0 * float(np.mean(wall)) if wall else kernel_ms
    return {"frames": runs, "kernel_ms": kernel_ms, "wall_ms": wall_ms, "from_ops_state": initial_state is not None,
            "delta_ops_ms": sum(by_op.get(op, 0.0) for op in DELTA_OPS),
            "outside_kernels_ms": max(0.0, wall_ms - kernel_ms),
            "by_op": dict(sorted(by_op.items(), key=lambda kv: -kv[1])), "by_node": dict(by_node)}


def oracle_fractions(converted: onnx.ModelProto, inputs: Sequence[dict],
                     initial_state: Optional[Mapping[str, np.ndarray]] = None) -> tuple[dict[str, float], int]:
    """Mean recomputed fraction per Delta node when the converted model runs on the numpy reference
    (deltaonnx.reference: docs/design.md's rules at pixel granularity, no recompute tiles) over `inputs` in
    order, and the number of runs counted. From `initial_state` (past name -> array, e.g. the ops' own state
    before these frames: references that drifted below tau over a long run) every run counts; from an empty
    state the first run (everything new) is left out."""
    from .reference import make_reference_evaluator

    metadata = conversion_metadata(converted)
    evaluator = make_reference_evaluator(converted)
    output_names = [o.name for o in converted.graph.output]
    empty = np.zeros((0, 0, 0, 0), np.float32)
    seeded = initial_state is not None
    state = {entry["past"]: (initial_state.get(entry["past"], empty) if seeded else empty)
             for entry in metadata.get("state", [])}
    no_maps = {gate["change_map"]: np.zeros((0, 1, 0, 0), np.uint8) for gate in metadata.get("gates", [])}
    sums: dict[str, float] = collections.defaultdict(float)
    for i, feed in enumerate(inputs):
        results = dict(zip(output_names, evaluator.run(None, {**feed, **state, **no_maps})))
        state = {entry["past"]: results[entry["present"]] for entry in metadata.get("state", [])}
        if i or seeded:
            for entry in metadata.get("maps", []):
                sums[entry["node"]] += float(np.mean(results[entry["output"]] != 0))
    runs = len(inputs) if seeded else max(len(inputs) - 1, 0)
    return ({node: total / runs for node, total in sums.items()} if runs else {}), runs


# --------------------------------------------------------------------------------------------------------
# the benchmark
# --------------------------------------------------------------------------------------------------------


@dataclass
class _ConfigRun:
    """Everything measured for one converted configuration."""

    config: DeltaConfig
    model: onnx.ModelProto
    metadata: dict
    session: Any
    times: list = field(default_factory=list)
    fractions: dict = field(default_factory=lambda: collections.defaultdict(list))  # node -> per frame
    flops_fraction_converted: list = field(default_factory=list)
    flops_fraction_all: list = field(default_factory=list)
    output_max_abs: dict = field(default_factory=lambda: collections.defaultdict(float))
    output_sum_mean_abs: dict = field(default_factory=lambda: collections.defaultdict(float))
    compared_frames: int = 0
    agreement: Any = None  # box F1 against dense (detections.BoxAgreement)
    margin_agreement: Any = None  # ... forgiving boxes near the threshold (detections.MarginBoxAgreement)
    dense_runs_seen: int = 0  # the session's count of dense-twin runs (its fallback), last seen
    dense_frames: int = 0  # timed frames that ran the dense twin
    state_bytes: int = 0  # the largest state seen
    replay_state: Optional[dict] = None  # the ops' state (past name -> array) before the replayed last frames


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, np.float64), q)) if len(values) else float("nan")


def _state_bytes(session) -> int:
    total = 0
    for value in session.state().values():
        total += int(np.prod(value.shape())) * _ITEMSIZE.get(value.data_type(), 4)
    return total


def parse_configs(thresholds: Sequence[float], inner_thresholds: Sequence[float],
                  gates: Sequence[GateConfig] = (INPUT_GATE,),
                  inner_gates: Sequence[GateConfig] = (GateConfig(),)) -> list[DeltaConfig]:
    return [DeltaConfig(float(t), float(i), g, ig)
            for t, i, g, ig in itertools.product(thresholds, inner_thresholds, gates, inner_gates)]


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
    from .convert import convert_with_report, load_model
    from .session import DeltaSession

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

    runs: list[_ConfigRun] = []
    options_for_sessions = session_options(options.threads)
    if converted is not None:
        converted_proto = load_model(converted)
        if not is_converted(converted_proto):
            raise BenchError("the converted model has no deltaonnx metadata: run `deltaonnx convert` first")
        metadata = conversion_metadata(converted_proto)
        config = DeltaConfig(float(metadata.get("threshold", 0.0)), float(metadata.get("inner_threshold", 0.0)))
        runs.append(_ConfigRun(config, converted_proto, metadata, DeltaSession(
            converted_proto, options_for_sessions, dense_fallback=options.dense_fallback)))
    else:
        if not configs:
            raise BenchError("no configuration to run (empty threshold lists)")
        for config in configs:
            proto, _ = convert_with_report(original, threshold=config.threshold, inner_threshold=config.inner_threshold,
                                           **config.gate.convert_kwargs(),
                                           **config.inner_gate.convert_kwargs("inner_"),
                                           thresholds=options.node_thresholds, all_nodes=options.all_nodes,
                                           dense_fraction=options.dense_fraction)
            runs.append(_ConfigRun(config, proto, conversion_metadata(proto), DeltaSession(
                proto, options_for_sessions, dense_fallback=options.dense_fallback)))
    dense_bytes = original.SerializeToString()
    dense = ort.InferenceSession(dense_bytes, options_for_sessions, providers=["CPUExecutionProvider"])
    dense_boxes: list = []  # dense ORT's boxes above the threshold per frame, for its flicker
    if options.detections:
        from .detections import SCORE_MARGIN, BoxAgreement, MarginBoxAgreement

        for run in runs:
            run.agreement = BoxAgreement(iou_threshold=options.match_iou)
            run.margin_agreement = MarginBoxAgreement(iou_threshold=options.match_iou,
                                                      conf_threshold=options.conf_threshold, margin=SCORE_MARGIN)

    flops: dict[str, float] = {}
    dense_times: list[float] = []
    kept_inputs: collections.deque = collections.deque(maxlen=max(options.profile_frames, 0) + 1)
    maps_at = _map_frame_indices(options, frame_total) | set(capture_maps_at)
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
                    if _record_fractions(runs[m - 1], flops):
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
                written_maps.extend(_write_maps(options.maps_dir, index, preprocess.fit(frame), runs, frame_maps))
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
        from .detections import flicker

        steady = flicker(dense_boxes, options.match_iou)
        result["dense"]["box_flicker"] = 1.0 - steady.f1 if steady.frames else None
        result["dense"]["box_flicker_counts"] = steady.as_dict()
    for run in runs:
        entry = _summarize(run, dense_ms, flops, dense_profile, output_names)
        # From the ops' state, the frames after the one it was taken at; else every kept frame from empty state.
        replay = list(kept_inputs)[1:] if run.replay_state is not None else list(kept_inputs)
        if options.profile_delta and len(kept_inputs) > 1:
            entry["profile"] = profile_delta(run.model, replay, options.threads, options.dense_fallback,
                                             run.replay_state)
            _attach_node_profile(entry, dense_profile, flops,
                                 {node.get("name"): node.get("fused", []) for node in run.metadata.get("nodes", [])},
                                 {node.name: list(node.output) for node in original.graph.node})
        if options.oracle and len(kept_inputs) > 1:
            _attach_oracle(entry, run, replay, flops, dense_profile)
        result["runs"].append(entry)
    return result


def _attach_oracle(entry: dict, run: "_ConfigRun", inputs: list, flops: dict[str, float], dense_profile: dict) -> None:
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
        oracle["ideal_speedup_exact"] = 1.0 / ((1.0 - share) + share * oracle["conv_flops_redone_exact"])
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
        node["dense_ms"] = None if not source else _dense_node_ms(
            dense_by_node, [source, *(fused or {}).get(node["name"], ())], (outputs or {}).get(source, ()))
        fraction = node["fraction_mean"]
        if fraction is None:
            node["ideal_ms"] = None
        elif node["dense_ms"] is not None:
            node["ideal_ms"] = node["dense_ms"] * fraction
        else:
            node["ideal_ms"] = (conv_work_ms * node["flops"] / total_flops * fraction
                                if node["flops"] and total_flops else None)


def _node_profile_lines(nodes: Sequence[dict], shown: int = 16) -> list[str]:
    """Achieved against ideal per Delta node, furthest above its ideal first, and the totals."""
    timed = [n for n in nodes if n.get("profile_ms") is not None]
    if not timed:
        return []
    slow = sorted(timed, key=lambda n: -(n["profile_ms"] - (n.get("ideal_ms") or 0.0)))
    rows = [[n["name"], n["op"], n.get("source") or "-", f"{_fmt(100 * n['fraction_mean'], '.1f')}%",
             _fmt(n.get("dense_ms"), ".3f"), _fmt(n.get("ideal_ms"), ".3f"), _fmt(n["profile_ms"], ".3f"),
             f"{n['profile_ms'] / n['ideal_ms']:.1f}x" if n.get("ideal_ms") else "-",
             _fmt(n["profile_ms"] - (n.get("ideal_ms") or 0.0), ".3f")] for n in slow[:shown]]
    measured = sum(n["profile_ms"] for n in timed)
    ideal = sum(n.get("ideal_ms") or 0.0 for n in timed)
    rows.append([f"all {len(timed)}", "", "", "", _fmt(sum(n.get("dense_ms") or 0.0 for n in timed), ".3f"),
                 _fmt(ideal, ".3f"), _fmt(measured, ".3f"), f"{measured / ideal:.1f}x" if ideal else "-",
                 _fmt(measured - ideal, ".3f")])
    return ["  per Delta node, furthest above its ideal first (ms/frame; dense = dense ORT's own kernel and fused "
            "activations for that conv, ideal = dense x recomputed, the ceiling at dense ORT's cost per FLOP):",
            _indent(_table(["node", "op", "source", "recomputed", "dense ms", "ideal ms", "measured ms", "x ideal",
                            "excess ms"], rows), "    ")]


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
    from .detections import decode_with_margin

    return decode_with_margin(output, options.conf_threshold, iou_threshold=options.nms_iou,
                              objectness=options.objectness)[0]


def _compare_outputs(run: _ConfigRun, names: list[str], dense_outputs: list, delta_outputs: list) -> None:
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


def _record_fractions(run: _ConfigRun, flops: dict[str, float]) -> bool:
    """Read the last run's statistics; returns whether it ran the dense twin (DeltaSession's fallback for
    streams that change almost everywhere), which redoes everything and leaves no change maps."""
    stats = run.session.stats()
    dense_runs = stats.get("dense_runs", 0) or 0
    ran_dense = dense_runs > run.dense_runs_seen
    run.dense_runs_seen = dense_runs
    if ran_dense:
        run.dense_frames += 1
    else:
        run.state_bytes = max(run.state_bytes, _state_bytes(run.session))
    stats = stats["nodes"]
    redone = total = redone_converted = total_converted = 0.0
    converted_sources = set()
    for node in run.metadata.get("nodes", []):
        if node.get("decision") != "converted":
            continue
        name = node["name"]
        fraction = 1.0 if ran_dense else stats.get(name, {}).get("fraction")
        if fraction is None:
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
    return ran_dense


def _summarize(run: _ConfigRun, dense_ms: float, flops: dict[str, float], dense_profile: dict,
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
        share = dense_profile["conv_work_share"]
        ideal = 1.0 / ((1.0 - share) + share * redone_all["mean"])
    converted_count = sum(1 for n in nodes if n["decision"] == "converted")
    entry = {
        "threshold": run.config.threshold, "inner_threshold": run.config.inner_threshold, "label": run.config.label,
        "gate": asdict(run.config.gate), "inner_gate": asdict(run.config.inner_gate),
        "ms_per_frame": ms, "ms_median": 1000.0 * float(np.median(run.times)), "fps": 1000.0 / ms if ms else None,
        "speedup": speedup, "ideal_speedup": ideal,
        "achieved_share": speedup / ideal if ideal else None,
        "outputs": outputs,
        "max_rel": max((o["max_rel"] for o in outputs.values()), default=0.0),
        "equal_to_dense": all(o["max_rel"] <= RELATIVE_EQUALITY for o in outputs.values()),
        "conv_flops_redone": redone_all, "converted_conv_flops_redone": redone_converted,
        "state_bytes": run.state_bytes,
        "dense_fallback_frames": run.dense_frames,
        "converted_nodes": converted_count, "kept_dense": [{"name": n["name"], "reason": n["reason"]} for n in nodes
                                                           if n["decision"] != "converted"],
        "nodes": [n for n in nodes if n["decision"] == "converted"],
    }
    if run.agreement is not None:
        entry["detections"] = run.agreement.as_dict()
        entry["detections_margin"] = run.margin_agreement.as_dict()
    return entry


# --------------------------------------------------------------------------------------------------------
# pictures
# --------------------------------------------------------------------------------------------------------


def _map_frame_indices(options: BenchOptions, frame_total: Optional[int]) -> set[int]:
    if options.maps_dir is None or options.maps_frames <= 0:
        return set()
    first = options.warmup
    if frame_total and frame_total > first:
        return {int(round(v)) for v in np.linspace(first, frame_total - 1, options.maps_frames)}
    return {first + 10 * k for k in range(options.maps_frames)}


def _label(image: np.ndarray, text: str) -> np.ndarray:
    import cv2

    band = np.full((18, image.shape[1], 3), 32, np.uint8)
    cv2.putText(band, text[: max(4, image.shape[1] // 7)], (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                cv2.LINE_AA)
    return np.concatenate([image, band], axis=0)


def change_map_picture(frame_bgr: np.ndarray, maps: dict[str, np.ndarray], title: str = "",
                       tile_width: int = 200, columns: int = 6) -> np.ndarray:
    """A grid: the frame (as the model saw it), then each layer's change map (white = recomputed) with its
    node name and recomputed fraction. Returns a uint8 BGR image."""
    import cv2

    h, w = frame_bgr.shape[:2]
    tile_height = max(1, round(tile_width * h / w))
    tiles = [_label(cv2.resize(frame_bgr, (tile_width, tile_height), interpolation=cv2.INTER_AREA), title or "input")]
    for name, change_map in maps.items():
        plane = (np.asarray(change_map).reshape(change_map.shape[-2:]) != 0)
        image = cv2.resize(plane.astype(np.uint8) * 255, (tile_width, tile_height), interpolation=cv2.INTER_NEAREST)
        tile = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        tile[image == 0] = (48, 24, 24)
        tiles.append(_label(tile, f"{name} {100 * plane.mean():.1f}%"))
    blank = np.zeros_like(tiles[0])
    rows = []
    for start in range(0, len(tiles), columns):
        row = tiles[start:start + columns]
        row += [blank] * (columns - len(row)) if len(tiles) > columns else []
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0))) for t in row], axis=1))
    return np.concatenate(rows, axis=0)


def _safe_label(config: DeltaConfig) -> str:
    gates = [label.strip().replace("=", "").replace("/", "_")
             for label in (config.gate.label, config.inner_gate.label_as("inner_gate"))]
    return f"tau{config.threshold:g}_inner{config.inner_threshold:g}" + "".join(f"_{g}" for g in gates if g)


def _write_maps(directory: Path, index: int, fitted: np.ndarray, runs: list[_ConfigRun], frame_maps: list) -> list[str]:
    try:
        import cv2
    except ImportError as error:
        raise BenchError("--maps needs OpenCV: pip install opencv-python-headless") from error
    written = []
    for run, maps in zip(runs, frame_maps):
        if maps is None:
            continue
        target = Path(directory) / _safe_label(run.config) if len(runs) > 1 else Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        picture = change_map_picture(fitted, maps, f"frame {index} {run.config.label}")
        path = target / f"frame_{index:05d}.png"
        if not cv2.imwrite(str(path), picture):
            raise BenchError(f"cannot write {path}")
        written.append(str(path))
    return written


def plot_sweep(result: dict, path) -> Path:
    """Speedup (measured and ideal) and agreement against the swept threshold (the paper's Figure 6)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise BenchError("--plot needs matplotlib: pip install matplotlib") from error
    runs = result["runs"]
    thresholds = sorted({r["threshold"] for r in runs})
    inners = sorted({r["inner_threshold"] for r in runs})
    sweep_inner = len(thresholds) == 1 and len(inners) > 1
    x_key, series_key = ("inner_threshold", "threshold") if sweep_inner else ("threshold", "inner_threshold")
    has_boxes = all("detections" in r for r in runs)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for value in sorted({r[series_key] for r in runs}):
        series = sorted((r for r in runs if r[series_key] == value), key=lambda r: r[x_key])
        xs = [r[x_key] for r in series]
        name = f"{series_key.replace('_', ' ')} {value:g}"
        line, = left.plot(xs, [r["speedup"] for r in series], "o-", label=f"measured, {name}")
        if all(r["ideal_speedup"] for r in series):
            left.plot(xs, [r["ideal_speedup"] for r in series], "--", color=line.get_color(), label=f"ideal, {name}")
        if has_boxes:
            right.plot(xs, [r["detections"]["f1"] for r in series], "o-", label=f"box F1, {name}")
        else:
            right.plot(xs, [max(r["max_rel"], 1e-9) for r in series], "o-", label=name)
    left.axhline(1.0, color="grey", lw=0.8)
    left.set_xlabel(x_key.replace("_", " "))
    left.set_ylabel("speedup over dense ORT")
    left.legend(fontsize=7)
    right.set_xlabel(x_key.replace("_", " "))
    if has_boxes:
        right.set_ylabel("box F1 against dense")
        right.set_ylim(0, 1.05)
    else:
        right.set_ylabel("max |delta - dense| / max |dense|")
        right.set_yscale("log")
    right.legend(fontsize=7)
    figure.suptitle(f"{Path(str(result['model'])).name} on {Path(str(result['source'])).name}, "
                    f"{result['threads']} thread(s), {result['frames_timed']} frames")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


# --------------------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------------------


def _fmt(value, spec: str = ".2f", missing: str = "-") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return missing
    return format(value, spec)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in [header, ["-" * w for w in widths], *rows]]
    return "\n".join(line.rstrip() for line in lines)


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
    rows = [["dense ORT", "-", "-", _fmt(dense["ms_per_frame"]), _fmt(dense["fps"], ".1f"), "1.00x", "-", "-", "100%",
             "-", "-"] + (["-", "-", "-"] if has_boxes else [])]
    for r in result["runs"]:
        redone = r["conv_flops_redone"]
        row = ["deltaonnx", f"{r['threshold']:g}", f"{r['inner_threshold']:g}", _fmt(r["ms_per_frame"]),
               _fmt(r["fps"], ".1f"), _fmt(r["speedup"], ".2f") + "x", _fmt(r["ideal_speedup"], ".2f") + "x"
               if r["ideal_speedup"] else "-", _fmt(100 * r["achieved_share"], ".0f") + "%" if r["achieved_share"]
               else "-", f"{_fmt(100 * redone['mean'], '.1f')}% (p90 {_fmt(100 * redone['p90'], '.0f')}%)",
               _fmt(r["state_bytes"] / 2**20, ".1f"),
               ("equal " if r["equal_to_dense"] else "") + _fmt(r["max_rel"], ".1e")]
        if has_boxes:
            d = r.get("detections", {})
            row += [_fmt(d.get("f1"), ".3f"), _fmt(r.get("detections_margin", {}).get("f1"), ".3f"),
                    _fmt(d.get("mean_iou"), ".3f")]
        rows.append(row)
    lines += ["", _table(header, rows)]
    for r in result["runs"]:
        if r.get("dense_fallback_frames"):
            lines.append(f"{r['label']}: {r['dense_fallback_frames']} of {result['frames_timed']} timed frames ran "
                         "DeltaSession's dense twin (its fallback when almost everything changes; --no-fallback "
                         "measures the Delta ops instead)")
    if any(r.get("detections") for r in result["runs"]):
        d = result["runs"][0]["detections"]
        m = result["runs"][0]["detections_margin"]
        conf, margin = m["conf_threshold"], m["margin"]
        lines.append(f"(boxes: {d['reference_boxes']} dense boxes over {d['frames']} frames, matched at IoU >= "
                     f"{d['iou_threshold']:g}, same class; margin F1: a missed dense box counts only above score "
                     f"{conf + margin:g}, a delta box matching a dense box above {max(conf - margin, 0):g} is no false "
                     "positive)")
        lines.append(f"dense ORT's own box flicker: {_fmt(dense.get('box_flicker'), '.3f')} (1 - box F1 of each dense "
                     "frame against the previous one: the frame-to-frame noise users of dense ORT already live with)")

    lines += ["", "output agreement (over every frame, warm-up included; rel = max abs / max |dense|):"]
    out_rows = []
    for r in result["runs"]:
        for name, o in r["outputs"].items():
            out_rows.append([r["label"], name, _fmt(o["max_abs"], ".3e"), _fmt(o["mean_abs"], ".3e"),
                             _fmt(o["max_rel"], ".2e")])
    lines.append(_table(["configuration", "output", "max abs", "mean abs", "max rel"], out_rows))

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
                node_rows.append([name, first["op"], _short(first["source"]), _fmt((first["flops"] or 0) / 1e9, ".3f")
                                  if first["flops"] else "-"] + ([tau(first)] if same_tau else []) + [
                    f"{_fmt(100 * r['nodes'][i]['fraction_mean'], '.1f')}% / {_fmt(100 * r['nodes'][i]['fraction_p90'], '.0f')}%"
                    + ("" if same_tau else f" ({tau(r['nodes'][i])})")
                    for r in result["runs"]])
            lines += ["", "recomputed fraction of each Delta node's output (mean / p90 over timed frames) and its threshold:",
                      _table(header, node_rows)]
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
        lines += ["", f"where the time goes, {r['label']} (ORT profiler, last {p['frames']} frames {start}, ms/frame): "
                  f"{p['wall_ms']:.2f} wall = {p['delta_ops_ms']:.2f} Delta ops + "
                  f"{p['kernel_ms'] - p['delta_ops_ms']:.2f} other kernels + {p['outside_kernels_ms']:.2f} outside "
                  f"kernels (state binding, session); ideal conv work {_fmt(p.get('ideal_conv_work_ms'))}",
                  f"  by op: {top}"]
        lines += _node_profile_lines(r["nodes"])
    for r in result["runs"]:
        o = r.get("oracle")
        if not o:
            continue
        lines += ["", f"granularity, {r['label']} (last {o['frames']} frames): the ops recomputed "
                  f"{_fmt(100 * o['conv_flops_redone_measured'], '.1f')}% of conv FLOPs where the rules at pixel "
                  f"granularity (numpy reference) need {_fmt(100 * o['conv_flops_redone_exact'], '.1f')}%; "
                  f"ideal speedup at pixel granularity {_fmt(o.get('ideal_speedup_exact'), '.2f')}x; the reference "
                  + ("started from the ops' own state (same references)" if o.get("from_ops_state") else
                     "started from an empty state (fresher references than the ops' after a long run)")
                  + (" (the ops' figures count frames the dense twin ran as 100%; --no-fallback shows the ops' own)"
                     if r.get("dense_fallback_frames") else ""),
                  _indent(_table(["node", "op", "ops' fraction", "pixel-exact fraction"], [
                      [n["name"], n["op"], f"{_fmt(100 * (n.get('fraction_same_frames') or float('nan')), '.1f')}%",
                       f"{_fmt(100 * (n.get('exact_fraction') if n.get('exact_fraction') is not None else float('nan')), '.1f')}%"]
                      for n in r["nodes"]]), "  ")]
    if profile and any(r.get("profile") for r in result["runs"]):
        top = ", ".join(f"{op} {ms:.2f}" for op, ms in list(profile["by_op"].items())[:8])
        lines.append(f"  dense by op (ms/frame): {top}")
    if result.get("maps_written"):
        lines.append(f"\nchange-map pictures: {len(result['maps_written'])} files, e.g. {result['maps_written'][0]}")
    return "\n".join(lines)


def _indent(text: str, prefix: str) -> str:
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


# --------------------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------------------


def float_list(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one number")
    bad = [v for v in values if not math.isfinite(v) or v < 0]
    if bad:
        raise argparse.ArgumentTypeError(f"thresholds must be finite and >= 0, got {bad}")
    return values


def size_hw(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH such as 480x640, got {text!r}") from None
    if len(values) == 1:
        values = (values[0], values[0])
    if len(values) != 2 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected HEIGHTxWIDTH with positive sides, got {text!r}")
    return values


def channel_values(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 1 or 3 comma-separated numbers, got {text!r}") from None
    if len(values) not in (1, 3):
        raise argparse.ArgumentTypeError(f"expected 1 or 3 values, got {len(values)}")
    return values


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_video_options(parser: argparse.ArgumentParser) -> None:
    """Clip and preprocessing options, shared by bench and demo."""
    group = parser.add_argument_group("frames")
    group.add_argument("--frames", type=positive_int, metavar="N", help="read at most N frames (default: all)")
    group.add_argument("--start", type=non_negative_int, default=0, metavar="I", help="first frame to read (default 0)")
    group.add_argument("--step", type=positive_int, default=1, metavar="K", help="read every K-th frame (default 1)")
    prep = parser.add_argument_group("preprocessing (defaults follow the model's input shape)")
    prep.add_argument("--size", type=size_hw, metavar="HxW", help="model input size, e.g. 480x640 (default: the "
                      "model's static size, else the frame's)")
    prep.add_argument("--resize", choices=("letterbox", "resize", "none"), default="letterbox",
                      help="fit frames to --size keeping the aspect (letterbox, default), stretching, or not at all")
    prep.add_argument("--scale", type=float, default=1 / 255, metavar="F", help="pixel (0..255) multiplier (default 1/255)")
    prep.add_argument("--mean", type=channel_values, default=(0.0,), metavar="M[,M,M]", help="subtracted after --scale")
    prep.add_argument("--std", type=channel_values, default=(1.0,), metavar="S[,S,S]", help="divides after --mean")
    prep.add_argument("--color", choices=("RGB", "BGR", "GRAY"), help="channel order (default RGB; GRAY for 1-channel inputs)")
    prep.add_argument("--layout", choices=("NCHW", "NHWC"), help="default: from the model's input shape")


def preprocess_from_args(args: argparse.Namespace, input_shape: list) -> Preprocess:
    return Preprocess.for_model_input(input_shape, size=args.size, resize=args.resize, scale=args.scale,
                                      mean=args.mean, std=args.std, color=args.color, layout=args.layout)


def add_command(subparsers, common: argparse.ArgumentParser) -> None:
    parser = subparsers.add_parser(
        "bench", parents=[common],
        help="measure dense ORT against the converted model on a video",
        description="Convert MODEL (or take a converted MODEL with --original), run dense ORT and deltaonnx on "
        "the same frames of CLIP, interleaved, and report speed, agreement, recomputed fractions and the ideal "
        "speedup they allow.")
    parser.add_argument("model", help="the ONNX model (dense), or a converted one together with --original")
    parser.add_argument("--video", required=True, metavar="CLIP", help="a video file or a folder of images")
    parser.add_argument("--original", metavar="MODEL", help="the dense model, when MODEL is already converted")
    conv = parser.add_argument_group("conversion")
    conv.add_argument("--threshold", type=float_list, metavar="TAU", help="input gate (default 0)")
    conv.add_argument("--thresholds", type=float_list, metavar="T1,T2,...", help="sweep the input gate")
    conv.add_argument("--inner-threshold", type=float_list, metavar="TAU", help="inner threshold (default 0)")
    conv.add_argument("--inner-thresholds", type=float_list, metavar="T1,T2,...", help="sweep the inner threshold")
    conv.add_argument("--node-thresholds", metavar="FILE.json", help='per-node overrides {"<node>": tau}')
    conv.add_argument("--gate", type=GateConfig.parse, metavar="GATE",
                      help=f"the input gate: block, block:K, block:K:HARD (k x k blocks, every pixel within HARD; "
                      f"defaults as convert's) or pixel; default {DEFAULT_GATE}")
    conv.add_argument("--gates", type=lambda text: [GateConfig.parse(t) for t in text.split(",")], metavar="G1,G2,...",
                      help="sweep the input gate, e.g. pixel,block:8,block:4:0.3")
    conv.add_argument("--inner-gate", type=lambda text: [GateConfig.parse(t) for t in text.split(",")],
                      metavar="G1,G2,...", help="the change rule of the inner thresholds, one or a sweep: pixel "
                      "(default), block, block:K, block:K:HARD, e.g. pixel,block:2,block:4")
    conv.add_argument("--all", dest="all_nodes", action="store_true", help="convert every eligible node")
    conv.add_argument("--dense-fraction", type=float, default=0.5, metavar="F",
                      help="changed fraction above which an op runs densely (default 0.5)")
    run = parser.add_argument_group("running")
    run.add_argument("--threads", type=positive_int, default=1, metavar="N", help="ORT threads, both models (default 1)")
    run.add_argument("--warmup", type=non_negative_int, default=5, metavar="N", help="untimed first frames (default 5)")
    run.add_argument("--interleave", type=positive_int, default=8, metavar="N",
                     help="frames per block: dense ORT runs N frames, then each converted model the same N "
                     "(default 8; 1 alternates every frame, which makes each model evict the other's data "
                     "from the caches)")
    run.add_argument("--profile", action="store_true", help="also profile the converted model: time per op type")
    run.add_argument("--profile-frames", type=non_negative_int, default=20, metavar="N",
                     help="frames profiled for the ideal speedup (default 20; 0: skip)")
    run.add_argument("--oracle", action="store_true", help="also run the numpy reference (the rules at pixel "
                     "granularity) on the last --profile-frames frames: the work an exact implementation would redo")
    run.add_argument("--no-fallback", dest="dense_fallback", action="store_false",
                     help="never let DeltaSession switch a stream that changes almost everywhere to the dense "
                     "twin (measures the Delta ops themselves)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    agree = parser.add_argument_group("agreement")
    agree.add_argument("--detections", choices=("yolo",), help="decode YOLO boxes and report box F1 against dense")
    agree.add_argument("--detections-output", metavar="NAME", help="the output holding the boxes (default: the first)")
    agree.add_argument("--conf", type=float, default=0.25, help="box score threshold (default 0.25)")
    agree.add_argument("--nms-iou", type=float, default=0.45, help="NMS IoU (default 0.45)")
    agree.add_argument("--match-iou", type=float, default=0.5, help="IoU for a box to match dense (default 0.5)")
    agree.add_argument("--objectness", action="store_true", help="YOLOv5-style heads with an objectness column")
    out = parser.add_argument_group("output")
    out.add_argument("--json", metavar="PATH", help="write all results as JSON ('-' for stdout)")
    out.add_argument("--plot", metavar="OUT.png", help="speedup and agreement against the swept thresholds")
    out.add_argument("--maps", metavar="DIR", help="write per-layer change-map pictures of a few frames to DIR")
    out.add_argument("--maps-frames", type=positive_int, default=3, metavar="N", help="how many frames (default 3)")
    add_video_options(parser)
    parser.set_defaults(run=run_command)


def _one_or_sweep(single: Optional[list], sweep: Optional[list], name: str) -> list[float]:
    from .cli import CliError

    if single is not None and sweep is not None:
        raise CliError(f"give --{name} or --{name}s, not both")
    if single is not None and len(single) != 1:
        raise CliError(f"--{name} takes one value; use --{name}s {','.join(f'{v:g}' for v in single)} to sweep")
    return sweep or single or [0.0]


def run_command(args: argparse.Namespace) -> int:
    from .cli import CliError, existing_model_path, read_thresholds_file
    from .convert import load_model
    from .video import describe_source, frame_count, read_frames

    model_path = existing_model_path(args.model)
    thresholds = _one_or_sweep(args.threshold, args.thresholds, "threshold")
    inners = _one_or_sweep(args.inner_threshold, args.inner_thresholds, "inner-threshold")
    if args.gate is not None and args.gates is not None:
        raise CliError("give --gate or --gates, not both")
    gates = args.gates or [args.gate or INPUT_GATE]
    if not 0 <= args.dense_fraction <= 1:
        raise CliError(f"--dense-fraction must be in [0, 1], got {args.dense_fraction:g}")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise CliError(f"--plot writes a PNG: give a path ending in .png, got {args.plot}")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise CliError("--plot needs matplotlib, which is not installed: pip install matplotlib") from None
    video = Path(args.video)
    if not video.exists():
        raise CliError(f"no such video or folder: {video}")
    proto = load_model(model_path)
    converted = None
    if is_converted(proto):
        if args.original is None:
            raise CliError(f"{model_path} is already converted: pass the dense model with --original MODEL")
        if (args.threshold or args.thresholds or args.inner_threshold or args.inner_thresholds or args.gate or args.gates
                or args.inner_gate):
            raise CliError("thresholds are fixed in an already converted model; give the dense model to sweep them")
        converted, proto = proto, load_model(existing_model_path(args.original))
        if is_converted(proto):
            raise CliError(f"--original {args.original} is converted too; give the dense model")
    elif args.original is not None:
        raise CliError(f"--original is for a converted MODEL, but {model_path} is not converted")
    _, input_shape = image_input(proto)
    try:
        preprocess = preprocess_from_args(args, input_shape)
        total = frame_count(video)
        if total is not None:
            total = max(0, (total - args.start + args.step - 1) // args.step)
            total = min(total, args.frames) if args.frames else total
        frames = read_frames(video, args.frames, args.start, args.step)
        options = BenchOptions(
            threads=args.threads, warmup=args.warmup, interleave=args.interleave, detections=args.detections,
            detections_output=args.detections_output, conf_threshold=args.conf, nms_iou=args.nms_iou,
            match_iou=args.match_iou, objectness=args.objectness, all_nodes=args.all_nodes,
            dense_fraction=args.dense_fraction, node_thresholds=read_thresholds_file(args.node_thresholds),
            profile_frames=args.profile_frames, profile_delta=args.profile, oracle=args.oracle,
            dense_fallback=args.dense_fallback,
            maps_dir=Path(args.maps) if args.maps else None, maps_frames=args.maps_frames, progress=not args.quiet)
        inner_gates = args.inner_gate or [GateConfig()]
        result = run_benchmark(proto, frames, preprocess, configs=parse_configs(thresholds, inners, gates, inner_gates),
                               converted=converted, options=options, frame_total=total,
                               source=describe_source(video))
    except (BenchError, VideoError) as error:
        raise CliError(str(error)) from error
    result["model"] = str(model_path)
    if converted is not None:
        result["original"] = str(args.original)
    # with --json -, stdout carries the JSON alone
    print(format_report(result), file=sys.stderr if args.json == "-" else sys.stdout)
    if args.json:
        write_json(result, args.json)
        if args.json != "-":
            print(f"wrote {args.json}")
    if args.plot:
        try:
            print(f"wrote {plot_sweep(result, args.plot)}")
        except BenchError as error:
            raise CliError(str(error)) from error
    return 0


__all__ = ["BenchError", "BenchOptions", "DeltaConfig", "FrameRecord", "GateConfig", "INPUT_GATE", "add_command", "change_map_picture",
           "format_report", "machine_info", "parse_configs", "plot_sweep", "run_benchmark", "write_json"]

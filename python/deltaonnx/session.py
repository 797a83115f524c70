"""DeltaSession: run a converted model like an onnxruntime.InferenceSession while the state is carried for you.

A converted model (``python -m deltaonnx convert``) has, besides its own inputs and outputs, *state* inputs
(past) and outputs (present) listed in its ``deltaonnx`` metadata (docs/state_protocol.md). DeltaSession
hides them: ``run()`` takes and returns exactly the original model's inputs and outputs, and keeps one state
per *stream* (an independent video source) between runs.

How the state is carried: each stream owns one IOBinding for as long as its state lives. The first run feeds
empty state and binds the present outputs and the change maps to a device, so ORT allocates them; then each
state buffer is bound once as both its past input and its present output, and each change map once to its
buffer, and they stay bound. Every later run rebinds only the frame inputs and the model outputs asked for:
the ops receive one buffer per state tensor and write only the pixels they recompute, nothing is copied,
allocated or looped over per state tensor. A change of input shape, a reset, a failed run or a switch to the
dense twin drops the binding with the state.

Who owns what:
* model outputs that are not state: numpy views of buffers ORT allocated for this run; the caller's, no copy
  (``OrtValue.numpy()`` does not copy on CPU, the view keeps the buffer alive); no later run touches them.
* a model output that is also a state buffer: a copy (the next run writes into the buffer).
* `change_maps()`: copies of the live map buffers, taken when called.
* `state()`: the live state buffers themselves (the next run writes into them).
* `load_state()`: copies of what it is given, fed as the past state of the stream's next run.

Identical frames (``skip_identical_frames``, on by default): when a run's frames provably leave every Delta op
without a change, the converted model would return exactly its previous outputs and leave the state as it was
(see `_IdenticalFramePlan`), so the run returns the previous outputs without calling ORT; its statistics say
nothing was recomputed and its change maps are all zero. For that the session keeps a private copy of the
model outputs of a run whose successor will be tested (one copy of the outputs, into reused buffers) and
returns copies of it. A stream whose frames keep changing is tested on every 16th frame only (after 4 misses
in a row), so it pays the test and the copy rarely; skipping or not never changes a result.

Threads: one ORT session is shared by all streams; each stream has its own IOBinding. Runs on different
streams may proceed at the same time from different threads. Runs on the *same* stream are serialized by a
per-stream lock: a second call waits until the first has finished and then continues from its state.
"""
from __future__ import annotations

import functools
import json
import math
import os
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from ._lib import library_path

METADATA_KEY = "deltaonnx"
SUPPORTED_FORMAT = 1
STATE_PREFIX = "deltaonnx."  # names starting with this are never the model's own (state_protocol.md)
DEFAULT_STREAM = "default"

# An empty rank-4 tensor is the "no state" value of every past input (state_protocol.md, step 1): float32,
# or the element type the graph declares for that input (float16 models).
_EMPTY_STATE_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}

# SessionOptions has no copy and no way to list its config entries, so the documented keys are probed
# (onnxruntime_session_options_config_keys.h); entries set under other keys are not carried over.
_KNOWN_CONFIG_KEYS = (
    "session.disable_prepacking", "session.use_env_allocators", "session.load_model_format",
    "session.save_model_format", "session.set_denormal_as_zero", "session.disable_quant_qdq",
    "session.disable_double_qdq_remover", "session.enable_quant_qdq_cleanup",
    "optimization.enable_gelu_approximation", "session.disable_aot_function_inlining",
    "optimization.memory_optimizer_config", "optimization.enable_memory_probe_recompute_config",
    "optimization.disable_specified_optimizers", "session.use_device_allocator_for_initializers",
    "session.inter_op.allow_spinning", "session.intra_op.allow_spinning", "session.use_ort_model_bytes_directly",
    "session.qdqisint8allowed", "session.x64quantprecision", "session.dynamic_block_base",
    "session.force_spinning_stop", "session.strict_shape_type_inference", "session.allow_released_opsets_only",
    "session.node_partition_config_file", "session.intra_op_thread_affinities",
    "session.debug_layout_transformation", "session.disable_cpu_ep_fallback",
    "session.collect_node_memory_stats_to_file", "session.graph_optimizations_loop_level",
    "session.use_ort_model_bytes_for_initializers", "session.disable_model_compile",
    "session.record_ep_graph_assignment_info", "ep.context_enable", "ep.context_file_path",
    "ep.context_embed_mode", "ep.context_node_name_prefix", "ep.share_ep_contexts",
    "mlas.enable_gemm_fastmath_arm64_bfloat16", "session.qdq_matmulnbits_accuracy_level",
    "ep.dynamic.workload_type",
)
_COPIED_ATTRIBUTES = (
    "enable_cpu_mem_arena", "enable_mem_pattern", "enable_mem_reuse", "enable_profiling", "execution_mode",
    "execution_order", "graph_optimization_level", "inter_op_num_threads", "intra_op_num_threads",
    "log_severity_level", "log_verbosity_level", "logid", "optimized_model_filepath", "profile_file_prefix",
    "use_deterministic_compute", "use_per_session_threads",
)


def _copy_session_options(source: ort.SessionOptions | None) -> ort.SessionOptions:
    """A new SessionOptions with the caller's settings, so registering the op library never mutates theirs.

    ORT's Python API cannot read back free-dimension overrides, added initializers or custom op libraries the
    caller registered; those are not carried over (use the model itself or pass them another way).
    """
    options = ort.SessionOptions()
    if source is None:
        return options
    if source.has_providers():
        raise ValueError(
            "DeltaSession: sess_options has execution providers added with add_provider(), which cannot be "
            "copied; pass them as DeltaSession(..., providers=[...]) instead"
        )
    for name in _COPIED_ATTRIBUTES:
        try:
            setattr(options, name, getattr(source, name))
        except (AttributeError, TypeError):  # attribute absent in this ORT version, or read-only
            pass
    for key in _KNOWN_CONFIG_KEYS:
        try:
            value = source.get_session_config_entry(key)
        except RuntimeError:  # not set on the caller's options
            continue
        options.add_session_config_entry(key, value)
    return options




def _provider_name(provider: str | tuple) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


def _wrap(value) -> ort.OrtValue:
    return value if isinstance(value, ort.OrtValue) else ort.OrtValue(value)


class _Binding:
    """One stream's IOBinding, called per run through ORT's C-level objects where this ORT has them: the
    Python wrappers add checks for WebGPU graph capture and build a device object on every call, which is
    most of the binding cost per run. Binding the state once goes through the public API."""

    def __init__(self, session: ort.InferenceSession):
        self.public = session.io_binding()
        self._c_binding = getattr(self.public, "_iobinding", None)
        self._c_session = getattr(session, "_sess", None)
        try:
            self._cpu = ort.OrtDevice.make("cpu", 0)._get_c_device()
        except AttributeError:  # an ORT without OrtDevice.make: the public calls below
            self._cpu = None
        self._lean = self._c_binding is not None and self._c_session is not None and self._cpu is not None
        self._session = session
        self._frames: dict[str, Any] = {}  # the bound frames, kept alive while ORT points at them

    def bind_frame(self, name: str, value) -> None:
        self._frames[name] = value
        if not self._lean:
            if isinstance(value, ort.OrtValue):
                self.public.bind_ortvalue_input(name, value)
            else:
                self.public.bind_cpu_input(name, value)
        elif isinstance(value, ort.OrtValue):
            self._c_binding.bind_ortvalue_input(name, value._ortvalue)
        else:
            self._c_binding.bind_input(name, value)  # wraps the array's memory, no copy

    def bind_fresh_output(self, name: str) -> None:
        """ORT allocates this output anew in the next run (else it writes into the last run's buffer)."""
        if self._lean:
            self._c_binding.bind_output(name, self._cpu)
        else:
            self.public.bind_output(name, "cpu")

    def run(self, run_options: ort.RunOptions | None) -> None:
        if self._lean:
            self._c_session.run_with_iobinding(self._c_binding, run_options)
        else:
            self._session.run_with_iobinding(self.public, run_options)

    def outputs(self):
        """The run's outputs as ORT's own vector (indexed without wrapping each in a Python object)."""
        if self._lean:
            return self._c_binding.get_outputs()
        getter = getattr(self.public, "get_outputs_as_ortvaluevector", None)
        return getter() if getter is not None else self.public.get_outputs()


@dataclass(frozen=True)
class StateEntry:
    """One carried state tensor: the graph input it is fed through and the graph output it comes back on."""

    node: str
    kind: str
    past: str
    present: str


# ----------------------------------------------------------------------------------------------- identical frames

DOMAIN = "com.deltaonnx"
_MAP_INPUT = {"DeltaConv": 5, "DeltaPool": 3}  # index of the optional change-map input (docs/ops.md)
_NO_MAP = np.zeros((0, 1, 0, 0), np.uint8)  # DeltaGate's external change map when the caller gives none
_RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
_SHAPE_ONLY_OPS = {"Shape", "Size"}  # read only the shape, which a skipped run keeps by construction


@dataclass(frozen=True)
class _Gate:
    """A Delta op reading a model input (directly or through one Identity/Transpose) with no change-map input."""

    input: str  # the model input
    node: str
    present: str  # the present name of its x_ref state
    perm: tuple[int, ...] | None  # the Transpose between input and gate (None: same layout)
    tau: np.float32
    block_rule: dict | None = None  # a DeltaGate with the block rule: its attributes (rule, gate_block, ...)


@dataclass(frozen=True)
class _IdenticalFramePlan:
    """When a run may return the previous outputs without running ORT, and why that is exact.

    The argument is an induction over the graph in topological order. Suppose every Delta op sees no change
    (rule 2) in this run: it then recomputes nothing (rule 4), returns `Y_prev` (its in-place buffer, untouched),
    keeps `X_ref`, and outputs an all-zero map, so every op downstream gets the same values as in the previous
    run and, if it has a map input, a map that marks nothing. Non-Delta ops are deterministic (random ops refuse
    the plan), so all outputs equal the previous run's and the state is unchanged. What remains is to show
    that no Delta op sees a change:

    * ``mode == "tau"``: every consumer of every model input is a *gate* (a DeltaGate, a Delta op without a map
      input, or one Identity/Transpose feeding only such ops) or reads only its shape. Rule 2 is checked here
      directly: every element of the frame is within the gate's tau of its `X_ref` (|x - ref| <= tau, false for
      NaN/Inf, as the kernels compare in float32); a block-rule DeltaGate is asked itself (its engine, run on
      the host without writing anything), as that rule lets more through. The gates then see no change. (A
      DeltaGate's external change map only narrows where it looks: no change without it is no change with it.)
    * ``mode == "bitwise"``: the frames are bitwise identical to the previous run's, so by induction each Delta
      op's input equals its input of the previous run, after which the invariant max|X - X_ref| <= tau held;
      ops with a map input compare only marked pixels, and their maps come from ops that saw no change.
    * in both modes, the Delta ops that compare their whole input (no map input) outside the gates must hold a
      finite `X_ref` (`finite_checks`): a NaN/Inf input pixel counts as changed on *every* run (rule 2), and
      such a pixel always ends up in `X_ref` (rule 3). Checked once per real run, when a skip is first considered.
    """

    mode: str  # "tau" or "bitwise"
    gates: tuple[_Gate, ...]
    finite_checks: tuple[str, ...]  # present names of x_ref states


def _subgraph_nodes(graph: onnx.GraphProto) -> Iterable[onnx.NodeProto]:
    for node in graph.node:
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield from sub.node
                yield from _subgraph_nodes(sub)


def _identical_frame_plan(graph: onnx.GraphProto, frame_inputs: Sequence[str], entries: Sequence[StateEntry],
                          gates_allowed: bool) -> tuple[_IdenticalFramePlan | None, str]:
    """The plan for this graph, or None and the reason the shortcut cannot be exact for it."""
    for node in list(graph.node) + list(_subgraph_nodes(graph)):
        if node.op_type in _RANDOM_OPS:
            return None, f"node {node.name or node.op_type} ({node.op_type}) is not deterministic"
    if any(n.domain == DOMAIN for n in _subgraph_nodes(graph)):
        return None, "Delta ops inside a subgraph"
    x_ref_present = {e.node: e.present for e in entries if e.kind == "x_ref"}
    delta = [n for n in graph.node if n.domain == DOMAIN and n.op_type in _MAP_INPUT]

    def has_map(node) -> bool:
        index = _MAP_INPUT[node.op_type]
        return len(node.input) > index and node.input[index] != ""

    whole_input = [n for n in delta if not has_map(n)]
    for node in whole_input:
        if node.name not in x_ref_present:
            return None, f"{node.name} compares its whole input but its X_ref is not listed as state"

    gates = _find_gates(graph, frame_inputs, x_ref_present, has_map) if gates_allowed else None
    if gates is not None:
        gated = {g.node for g in gates}
        finite = tuple(x_ref_present[n.name] for n in whole_input if n.name not in gated)
        return _IdenticalFramePlan("tau", tuple(gates), finite), "frames within the gates' thresholds of X_ref"
    finite = tuple(x_ref_present[n.name] for n in whole_input)
    return _IdenticalFramePlan("bitwise", (), finite), "frames bitwise identical to the previous run's"


def _find_gates(graph, frame_inputs, x_ref_present, has_map) -> list[_Gate] | None:
    """The gates of every model input, or None when some consumer is neither a gate nor shape-only."""
    consumers = defaultdict(list)
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name:
                consumers[name].append((node, index))
    graph_outputs = {o.name for o in graph.output}

    def standard(node) -> bool:
        return node.domain in ("", "ai.onnx")

    def gate(node, index, name, model_input, perm) -> _Gate | None:
        if node.domain == DOMAIN and node.op_type == "DeltaGate" and index == 0 and node.name in x_ref_present:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            rule = attrs.get("rule", b"block")
            rule = rule.decode() if isinstance(rule, bytes) else rule
            block = {"rule": rule, "gate_block": int(attrs.get("gate_block", 4)),
                     "gate_hard": float(attrs.get("gate_hard", -1.0))} if rule == "block" else None
            return _Gate(model_input, node.name, x_ref_present[node.name], perm,
                         np.float32(attrs.get("threshold", 0.0)), block)
        if (node.domain != DOMAIN or node.op_type not in _MAP_INPUT or index != 0 or has_map(node)
                or list(node.input).count(name) != 1 or node.name not in x_ref_present):
            return None
        tau = next((a.f for a in node.attribute if a.name == "threshold"), 0.0)
        return _Gate(model_input, node.name, x_ref_present[node.name], perm, np.float32(tau))

    gates = []
    for model_input in frame_inputs:
        if model_input in graph_outputs:
            return None
        for node, index in consumers[model_input]:
            if standard(node) and node.op_type in _SHAPE_ONLY_OPS:
                continue
            found = gate(node, index, model_input, model_input, None)
            if found is not None:
                gates.append(found)
                continue
            # one Identity or Transpose (the converter's NHWC -> NCHW) may stand between input and gates:
            # it moves elements without changing any, so "no element changed" reads the same on both sides
            perm = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
            if not (standard(node) and len(node.input) == 1
                    and (node.op_type == "Identity" or (node.op_type == "Transpose" and perm))):
                return None
            moved = node.output[0]
            if moved in graph_outputs:
                return None
            layout = tuple(perm) if node.op_type == "Transpose" else None
            for consumer, consumer_index in consumers[moved]:
                if standard(consumer) and consumer.op_type in _SHAPE_ONLY_OPS:
                    continue
                found = gate(consumer, consumer_index, moved, model_input, layout)
                if found is None:
                    return None
                gates.append(found)
    return gates


def _host_array(value) -> np.ndarray | None:
    """The frame as a host numpy array without a copy, or None when it lives on a device."""
    if isinstance(value, np.ndarray):
        return value
    if value.device_name().lower() == "cpu":
        return value.numpy()
    return None


_BLOCK_ELEMENTS = 1 << 16  # compare in blocks that stay in cache, and stop at the first block that differs
_SAMPLE_ROW_STEP = 32  # first compare every 32nd row: a changed frame is usually caught there, reading little


@functools.lru_cache(maxsize=64)
def _blocks(shape: tuple) -> tuple[tuple, ...]:
    """Index tuples cutting `shape` into blocks of about _BLOCK_ELEMENTS along its outermost long axis (the
    rows of an image), after a first block of every 32nd row of that axis."""
    long_axes = [i for i, n in enumerate(shape) if n >= 2 * _SAMPLE_ROW_STEP]
    if not long_axes:
        return ((),)
    axis = long_axes[0]
    lead = (slice(None),) * axis
    inner = max(1, math.prod(shape) // shape[axis])
    step = max(1, _BLOCK_ELEMENTS // inner)
    return ((*lead, slice(None, None, _SAMPLE_ROW_STEP)),) + tuple(
        (*lead, slice(start, start + step)) for start in range(0, shape[axis], step))


def _within_tau(frame: np.ndarray, reference: np.ndarray, tau: np.float32) -> bool:
    """Rule 2 sees no change anywhere: |frame - reference| <= tau for every element (NaN/Inf never are)."""
    with np.errstate(invalid="ignore", over="ignore"):  # Inf - Inf, overflow: both count as changed below
        for block in _blocks(frame.shape):
            difference = np.subtract(frame[block], reference[block])
            if difference.size:
                np.abs(difference, out=difference)
                if not difference.max() <= tau:  # max propagates NaN
                    return False
    return True


def _gate_sees_nothing(gate: _Gate, frame: np.ndarray, reference: np.ndarray) -> bool:
    """The gate would find no change: within tau everywhere (enough for either rule), or, for the block
    rule, its own engine finds no block changed (the copy it writes is thrown away)."""
    if _within_tau(frame, reference, gate.tau):
        return True
    if gate.block_rule is None or frame.ndim != 4:
        return False
    try:
        from . import _native
    except ImportError:  # built without the pybind module: the tau test alone
        return False
    _, changed = _native.delta_gate(frame, reference, threshold=float(gate.tau), **gate.block_rule)
    return not changed.any()


def _bits(array: np.ndarray) -> np.ndarray:
    kinds = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}
    return array.view(kinds[array.itemsize]) if array.itemsize in kinds else array.view(np.uint8)


def _bitwise_equal(frame: np.ndarray, previous: np.ndarray) -> bool:
    if frame.shape != previous.shape or frame.dtype != previous.dtype:
        return False
    frame, previous = _bits(frame), _bits(previous)
    return all(np.array_equal(frame[block], previous[block]) for block in _blocks(frame.shape))


def _all_finite(array: np.ndarray) -> bool:
    return array.size == 0 or bool(np.isfinite(array.min()) and np.isfinite(array.max()))  # NaN propagates


# ----------------------------------------------------------------------------------------------- per stream

@dataclass
class _StreamState:
    """Everything one stream carries between runs. Guarded by `lock`; `retired` once reset() dropped it."""

    map_count: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    retired: bool = False
    # The live state, None while the stream has none (first run, after a reset, shape change or failure).
    binding: _Binding | None = None
    values: dict[str, ort.OrtValue] = field(default_factory=dict)  # present name -> live state buffer
    loaded: dict[str, np.ndarray] = field(default_factory=dict)  # load_state(): past name -> the next run's past
    input_shapes: tuple | None = None  # shapes of the model inputs the state was built for
    output_index: dict[str, int] = field(default_factory=dict)  # bound output -> position in ORT's output vector
    model_outputs: tuple[str, ...] = ()  # model outputs (not state) bound to a fresh buffer on every run
    map_values: list[ort.OrtValue] | None = None  # the live map buffers, in metadata order
    map_views: list[np.ndarray] | None = None  # numpy views of them
    map_divisors: np.ndarray | None = None  # the maps' sizes (1 for an empty map, whose fraction is 0)
    # Per map: the node's FLOPs per frame (batch item) at the shapes of the last delta run (0: unknown). Kept when
    # the state is dropped, so stats() still has them in dense mode; the next binding recomputes them.
    node_flops: np.ndarray | None = None
    flops_total: float = 0.0
    # statistics, per map in metadata order
    runs: int = 0  # runs since the last reset
    last_fraction: np.ndarray | None = None
    fraction_sum: np.ndarray | None = None
    maps_cleared: bool = False  # the last run was skipped: its maps are all zero
    maps_snapshot: list[np.ndarray] | None = None  # the last maps, once the state (and its buffers) is dropped
    skipped_runs: int = 0
    # identical-frame shortcut
    kept_outputs: dict[str, np.ndarray] = field(default_factory=dict)  # private copies of model outputs
    kept_names: frozenset | None = None  # the outputs of the last run among them; None: the last run kept none
    previous_frames: dict[str, np.ndarray] = field(default_factory=dict)  # bitwise mode: the last frames
    finite_state: bool | None = None  # whole-input Delta ops hold a finite X_ref (None: not checked yet)
    check_misses: int = 0  # identical-frame tests failed in a row
    check_wait: int = 0  # runs before the next test
    # The dense fallback (DeltaSession's dense_fallback): "delta" or "dense", the smoothed FLOP-weighted
    # share of work redone, and the runs in the current mode.
    mode: str = "delta"
    work: float | None = None
    mode_runs: int = 0
    dense_runs_total: int = 0
    probe_interval: int = 0  # dense runs before the next probe (set when the stream falls back)

    def __post_init__(self):
        self.last_fraction = np.zeros(self.map_count)
        self.fraction_sum = np.zeros(self.map_count)

    def current_maps(self) -> list[np.ndarray] | None:
        """Copies of the last run's maps (None when there are none, e.g. after a failed run)."""
        if self.map_views is None:
            return None if self.maps_snapshot is None else [m.copy() for m in self.maps_snapshot]
        if self.maps_cleared:
            return [np.zeros_like(v) for v in self.map_views]
        return [v.copy() for v in self.map_views]

    def drop_state(self, keep_maps: bool = False) -> None:
        """Forget the state and its binding; `keep_maps`: keep a copy of the last maps for change_maps()."""
        self.maps_snapshot = self.current_maps() if keep_maps else None
        self.binding = None
        self.values = {}
        self.loaded = {}
        self.input_shapes = None
        self.output_index = {}
        self.model_outputs = ()
        self.map_values = self.map_views = self.map_divisors = None
        self.kept_outputs, self.kept_names = {}, None
        self.previous_frames = {}
        self.finite_state = None


class DeltaSession:
    """An InferenceSession for a deltaonnx-converted model that carries its state between runs.

    ``model``: path, serialized bytes or onnx.ModelProto of a converted model. ``sess_options`` are copied
    (see `_copy_session_options` for what ORT lets us copy) and the deltaonnx op library is registered on the
    copy. ``providers`` as for InferenceSession; default CPU. With "CUDAExecutionProvider" the CUDA op library
    is registered too when it was built, and the state then lives on the GPU.
    """

    # A stream whose smoothed share of conv work redone exceeds FALLBACK_ENTER runs the dense twin; after
    # `fallback_probe_every` dense frames it tries delta again (from empty state) and stays if, after
    # FALLBACK_SETTLE frames, the share is below FALLBACK_STAY; each failed probe doubles the wait for the
    # next, up to FALLBACK_PROBE_BACKOFF x fallback_probe_every.
    FALLBACK_ENTER = 0.8
    FALLBACK_STAY = 0.65
    FALLBACK_SETTLE = 2  # the first frame with state decides (the one before it, without state, is redone in full)
    FALLBACK_PROBE_BACKOFF = 4
    # The identical-frame test (and the copy of the outputs it needs) runs on every frame until it has failed
    # CHECK_MISSES_BEFORE_SPACING times in a row (a stream that never repeats), then on every CHECK_SPACING-th
    # frame until it succeeds again. Skipping or not never changes a result, only the time taken.
    CHECK_MISSES_BEFORE_SPACING = 4
    CHECK_SPACING = 16

    def __init__(self, model: str | os.PathLike | bytes | Any, sess_options: ort.SessionOptions | None = None,
                 providers: Sequence[str | tuple] | None = None, *, dense_fallback: bool = True,
                 fallback_probe_every: int = 30, skip_identical_frames: bool = True):
        """dense_fallback: a stream whose frames change almost everywhere (a moving camera) is run through
        the model's dense twin (densify.py), which costs what dense ORT costs, and probed with delta again
        after `fallback_probe_every` frames (twice as long after each failed probe, at most 4x); stats() says
        which mode a stream is in. Dense frames are exact (no thresholds apply). The twin is built when the
        session is, in a thread of its own.

        skip_identical_frames: a run whose frames leave every Delta op without a change (bitwise identical
        frames; or, when the Delta ops read the model inputs directly, frames within their threshold of the
        reference) returns the previous outputs without running ORT, exactly as the model would
        (`identical_frame_check` says which test applies to this model; see `_IdenticalFramePlan`). Only
        streams in delta mode skip; resets, shape changes and the first run after them always run."""
        if fallback_probe_every < 1:
            raise ValueError("fallback_probe_every must be >= 1")
        self._dense_fallback, self._probe_every = bool(dense_fallback), int(fallback_probe_every)
        self._dense_session: ort.InferenceSession | None = None
        self._dense_lock = threading.Lock()
        self._dense_options = _copy_session_options(sess_options)
        model_source = self._model_source(model)
        options = _copy_session_options(sess_options)
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        # Both libraries register the domain com.deltaonnx and ORT accepts a domain once per session, so a
        # session takes the CUDA library when the CUDA EP is asked for (and it was built), else the CPU one.
        cuda_library_registered = False
        if "CUDAExecutionProvider" in (_provider_name(p) for p in providers):
            try:
                options.register_custom_ops_library(library_path("cuda"))
                cuda_library_registered = True
            except FileNotFoundError:  # built without nvcc: the ops run on the CPU EP, ORT copies around them
                pass
        if not cuda_library_registered:
            options.register_custom_ops_library(library_path("cpu"))
        self._session = ort.InferenceSession(model_source, sess_options=options, providers=providers)
        self._model_bytes = model_source if isinstance(model_source, bytes) else None
        self._model_path = model_source if isinstance(model_source, str) else None
        self._providers_requested = providers

        custom_metadata = self._session.get_modelmeta().custom_metadata_map
        self._metadata = self._parse_metadata(custom_metadata.get(METADATA_KEY))
        self._state_entries = [StateEntry(s["node"], s.get("kind", ""), s["past"], s["present"])
                               for s in self._metadata.get("state", [])]
        self._map_outputs = {m["node"]: m["output"] for m in self._metadata.get("maps", [])}
        self._map_nodes = list(self._map_outputs)
        self._node_info = {n["name"]: n for n in self._metadata.get("nodes", []) if "name" in n}
        # model input (the frame a DeltaGate gates) -> the gate's change-map graph input
        self._change_map_inputs = {g["input"]: g["change_map"] for g in self._metadata.get("gates", [])}
        self._check_graph_matches_metadata()

        past_names = {s.past for s in self._state_entries}
        self._inputs = [i for i in self._session.get_inputs()
                        if i.name not in past_names and not i.name.startswith(STATE_PREFIX)]
        self._outputs = [o for o in self._session.get_outputs() if not o.name.startswith(STATE_PREFIX)]
        self._input_names = [i.name for i in self._inputs]
        self._output_names = [o.name for o in self._outputs]
        self._present_names = {s.present for s in self._state_entries}
        past_types = {i.name: i.type for i in self._session.get_inputs()}
        self._empty_state = {s.past: np.empty((0, 0, 0, 0), _EMPTY_STATE_DTYPES.get(past_types[s.past], np.float32))
                             for s in self._state_entries}

        self._state_device, self._state_device_id = "cpu", 0
        if cuda_library_registered and "CUDAExecutionProvider" in self._session.get_providers():
            cuda_options = self._session.get_provider_options().get("CUDAExecutionProvider", {})
            self._state_device, self._state_device_id = "cuda", int(cuda_options.get("device_id", 0))

        self._identical_plan: _IdenticalFramePlan | None = None
        self._identical_reason = "skip_identical_frames=False"
        if skip_identical_frames:
            graph = self._graph(model)
            # The tau test reads the gates' X_ref on the host: with the state on a GPU, compare frames instead.
            self._identical_plan, self._identical_reason = _identical_frame_plan(
                graph, self._input_names, self._state_entries, gates_allowed=self._state_device == "cpu")

        self._streams: dict[Hashable, _StreamState] = {}
        self._streams_lock = threading.Lock()
        if self._dense_fallback and self._map_nodes:
            # The twin takes about three frames' time to build (densify, a session): built beside the first
            # frames, so the first stream to fall back does not stall (a run that needs it sooner waits on the
            # lock). Not a daemon: interpreter exit waits for the build rather than killing it inside ORT.
            threading.Thread(target=self._build_dense_twin, name="deltaonnx-dense-twin").start()

    # ----------------------------------------------------------------- construction helpers

    @staticmethod
    def _model_source(model: Any) -> str | bytes:
        if isinstance(model, (str, os.PathLike)):
            return os.fspath(model)
        if isinstance(model, (bytes, bytearray, memoryview)):
            return bytes(model)
        if hasattr(model, "SerializeToString") and hasattr(model, "metadata_props"):  # onnx.ModelProto
            if not any(p.key == METADATA_KEY for p in model.metadata_props):  # fail before building a session
                DeltaSession._parse_metadata(None)
            return model.SerializeToString()
        raise TypeError(f"DeltaSession: model must be a path, bytes or onnx.ModelProto, not {type(model).__name__}")

    def _graph(self, model: Any) -> onnx.GraphProto:
        if hasattr(model, "graph") and hasattr(model, "metadata_props"):
            return model.graph
        if self._model_bytes is not None:
            return onnx.load_from_string(self._model_bytes).graph
        return onnx.load(self._model_path, load_external_data=False).graph

    @staticmethod
    def _parse_metadata(text: str | None) -> dict:
        if text is None:
            raise ValueError(
                f"DeltaSession: the model has no '{METADATA_KEY}' metadata, so it is not a deltaonnx-converted "
                "model; run `python -m deltaonnx convert model.onnx -o converted.onnx` first "
                "(or deltaonnx.convert(model))"
            )
        try:
            metadata = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"DeltaSession: the '{METADATA_KEY}' metadata is not valid JSON: {error}") from None
        if not isinstance(metadata, dict) or metadata.get("format") != SUPPORTED_FORMAT:
            found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
            raise ValueError(f"DeltaSession: unsupported '{METADATA_KEY}' metadata format {found!r}; "
                             f"this deltaonnx reads format {SUPPORTED_FORMAT}")
        return metadata

    def _check_graph_matches_metadata(self) -> None:
        graph_inputs = {i.name for i in self._session.get_inputs()}
        graph_outputs = {o.name for o in self._session.get_outputs()}
        for entry in self._state_entries:
            if entry.past not in graph_inputs:
                raise ValueError(f"DeltaSession: state input {entry.past!r} listed in the metadata is not a graph input")
            if entry.present not in graph_outputs:
                raise ValueError(f"DeltaSession: state output {entry.present!r} listed in the metadata is not a graph output")
        for node, output in self._map_outputs.items():
            if output not in graph_outputs:
                raise ValueError(f"DeltaSession: change map {output!r} of {node!r} is not a graph output")

    # ----------------------------------------------------------------- InferenceSession-like surface

    def get_inputs(self) -> list:
        """The model's own inputs (NodeArg, as InferenceSession.get_inputs), without the state inputs."""
        return list(self._inputs)

    def get_outputs(self) -> list:
        """The model's own outputs (NodeArg), without the state outputs and change maps."""
        return list(self._outputs)

    @property
    def providers(self) -> list[str]:
        return self._session.get_providers()

    def get_providers(self) -> list[str]:
        return self._session.get_providers()

    @property
    def metadata(self) -> dict:
        """The parsed `deltaonnx` metadata of the model (docs/state_protocol.md)."""
        return self._metadata

    @property
    def inference_session(self) -> ort.InferenceSession:
        """The underlying session, whose inputs and outputs include the state (for debugging)."""
        return self._session

    @property
    def identical_frame_check(self) -> dict:
        """How runs that change nothing are recognised: ``{"mode": "tau" | "bitwise" | None, "reason": ...}``.

        "tau": every model input is read only by Delta ops without a map input (directly or through one
        Identity/Transpose), and a frame within each such op's threshold of its reference is skipped. "bitwise": a frame
        bitwise identical to the previous one is skipped. None: no shortcut (reason says why)."""
        plan = self._identical_plan
        return {"mode": plan.mode if plan else None, "reason": self._identical_reason,
                "gates": [g.node for g in plan.gates] if plan else []}

    def state_names(self) -> list[tuple[str, str]]:
        """(past input, present output) name pairs of every carried state tensor, in metadata order."""
        return [(s.past, s.present) for s in self._state_entries]

    def streams(self) -> list[Hashable]:
        """The streams that currently hold state or statistics."""
        with self._streams_lock:
            return list(self._streams)

    # ----------------------------------------------------------------- running

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any],
            run_options: ort.RunOptions | None = None, *, stream: Hashable = DEFAULT_STREAM,
            change_map: Any = None) -> list[np.ndarray]:
        """Run one frame of `stream`: same call and result as InferenceSession.run (list of numpy arrays).

        The stream's state is fed and updated; a change of any input shape drops it first (every pixel is
        then recomputed). Concurrent calls on the same stream are serialized; on different streams they run
        in parallel. If the run fails, the stream's state is dropped (in-place buffers may be half written).

        change_map: where the frame may have changed since the last run (models converted with
        gate="block"): uint8 [N,1,H,W] at the frame's resolution or [N,1,ceil(H/k),ceil(W/k)] one cell per
        gate block, nonzero = may have changed. The gate looks only there: pixels left 0 keep their previous
        value (a timestamp overlay, a waving tree), so every output they reach stays as it was. A dict
        {model input name: map} for models with several gated inputs. (A stream in the dense fallback runs
        the dense twin, which sees whole frames.)
        """
        requested = self._check_output_names(output_names)
        inputs = self._check_input_feed(input_feed)
        maps = self._check_change_map(change_map)
        input_shapes = tuple((name, tuple(shape)) for name, (_, shape) in inputs.items())
        while True:
            state = self._stream(stream, create=True)
            with state.lock:
                if state.retired:  # reset() dropped this stream while we waited: use the fresh one
                    continue
                return self._run_locked(state, requested, inputs, input_shapes, run_options, maps)

    def _build_dense_twin(self) -> None:
        """Builds the twin and, where the model's inputs have fixed shapes, runs it once on zeros: ORT's first
        run of a session costs ~20% more than the next (buffers found and allocated), paid here, not by the
        first frame that falls back."""
        try:
            with self._dense_lock:
                twin = self._dense_twin_session_locked()
                feed = {}
                for i in twin.get_inputs():
                    dtype = _EMPTY_STATE_DTYPES.get(i.type)
                    if dtype is None or not all(isinstance(d, int) and d > 0 for d in i.shape):
                        return
                    feed[i.name] = np.zeros(i.shape, dtype)
                twin.run(None, feed)
        except Exception:  # noqa: BLE001 - the build is retried, and its error raised, where the twin is used
            pass

    def _dense_twin_session(self) -> ort.InferenceSession:
        with self._dense_lock:
            return self._dense_twin_session_locked()

    def _dense_twin_session_locked(self) -> ort.InferenceSession:
        if self._dense_session is None:
            from .densify import dense_twin

            proto = onnx.load_from_string(self._model_bytes) if self._model_bytes is not None \
                else onnx.load(self._model_path)
            twin = dense_twin(proto, self._output_names)
            self._dense_session = ort.InferenceSession(twin.SerializeToString(), sess_options=self._dense_options,
                                                       providers=self._providers_requested)
        return self._dense_session

    def _run_dense(self, state: _StreamState, requested: list[str], inputs: dict,
                   run_options: ort.RunOptions | None) -> list[np.ndarray]:
        feed = {name: value for name, (value, _) in inputs.items()}
        outputs = self._dense_twin_session().run(requested, feed, run_options)
        state.mode_runs += 1
        state.dense_runs_total += 1
        if state.mode_runs >= state.probe_interval:  # probe: delta again, from empty state
            state.mode, state.mode_runs, state.work = "delta", 0, None
        return outputs

    def _update_fallback(self, state: _StreamState) -> None:
        """After a delta run: smooth the FLOP-weighted share of conv work redone; switch to dense when high."""
        state.mode_runs += 1
        total = state.flops_total
        if not total or state.mode_runs < 2:  # the first frame after a reset is always redone in full
            return
        work = float(state.node_flops @ state.last_fraction) / total
        state.work = work if state.work is None else 0.5 * state.work + 0.5 * work
        probing = state.dense_runs_total > 0 and state.mode_runs <= self.FALLBACK_SETTLE
        limit = self.FALLBACK_STAY if probing else self.FALLBACK_ENTER
        if state.mode_runs >= self.FALLBACK_SETTLE and state.work > limit:
            state.drop_state(keep_maps=True)
            state.mode, state.mode_runs = "dense", 0
            # A failed probe doubles the wait before the next (a camera that keeps moving pays fewer probes, each
            # two frames at the Delta ops' full cost), up to FALLBACK_PROBE_BACKOFF times fallback_probe_every.
            state.probe_interval = (min(2 * state.probe_interval, self.FALLBACK_PROBE_BACKOFF * self._probe_every)
                                    if probing and state.probe_interval else self._probe_every)

    def _run_locked(self, state: _StreamState, requested: list[str], inputs: dict, input_shapes: tuple,
                    run_options: ort.RunOptions | None, maps: dict | None = None) -> list[np.ndarray]:
        if state.mode == "dense":
            return self._run_dense(state, requested, inputs, run_options)
        if state.binding is not None and state.input_shapes != input_shapes:
            state.drop_state()
        if self._identical_plan is not None and state.binding is not None:
            if state.check_wait > 0:
                state.check_wait -= 1
            elif self._nothing_changes(state, inputs, requested):
                state.check_misses = 0
                return self._skipped_run(state, requested)
            else:
                state.check_misses += 1
                if state.check_misses >= self.CHECK_MISSES_BEFORE_SPACING:
                    state.check_wait = self.CHECK_SPACING - 1
        try:
            results = self._run_delta(state, requested, inputs, run_options, maps or {})
        except BaseException:
            state.drop_state()
            raise
        state.input_shapes = input_shapes
        self._record_maps(state)
        if self._dense_fallback:
            self._update_fallback(state)
        return results

    def _bind_new_state(self, state: _StreamState) -> _Binding:
        """First run of a state: empty state in (or what load_state() gave); ORT allocates the present outputs
        and the change maps."""
        binding = _Binding(self._session)
        order = []
        for entry in self._state_entries:
            binding.public.bind_cpu_input(entry.past, state.loaded.get(entry.past, self._empty_state[entry.past]))
            binding.public.bind_output(entry.present, self._state_device, self._state_device_id)
            order.append(entry.present)
        for output in self._map_outputs.values():
            binding.public.bind_output(output, "cpu")
            order.append(output)
        state.binding, state.output_index, state.model_outputs = binding, {n: i for i, n in enumerate(order)}, ()
        return binding

    def _keep_state_bound(self, state: _StreamState, outputs) -> None:
        """After the first run: each state buffer becomes both its past input and its present output, and each
        map buffer stays bound to its output, for every later run of this state."""
        public, index = state.binding.public, state.output_index
        values = {}
        for entry in self._state_entries:
            value = values[entry.present] = _wrap(outputs[index[entry.present]])
            public.bind_ortvalue_input(entry.past, value)
            public.bind_ortvalue_output(entry.present, value)
        map_values = [_wrap(outputs[index[output]]) for output in self._map_outputs.values()]
        for output, value in zip(self._map_outputs.values(), map_values):
            public.bind_ortvalue_output(output, value)
        state.values, state.map_values = values, map_values
        state.map_views = [value.numpy() for value in map_values]
        state.map_divisors = np.array([max(v.size, 1) for v in state.map_views], dtype=np.float64)  # empty: 0/1
        flops = []
        for node, view in zip(self._map_nodes, state.map_views):
            # The node's work per frame: its FLOPs from the metadata, or, for models with dynamic input sizes,
            # its FLOPs per output pixel times the pixels of one item's map ([N, 1, Ho, Wo]) in this run.
            info = self._node_info.get(node, {})
            pixels = view.size // view.shape[0] if view.ndim == 4 and view.shape[0] else view.size
            flops.append(info.get("flops") or (info.get("flops_per_output_pixel") or 0) * pixels)
        state.node_flops = np.array(flops, dtype=np.float64)
        state.flops_total = float(state.node_flops.sum())

    def _model_outputs_to_bind(self, state: _StreamState, requested: list[str]) -> tuple[str, ...]:
        """The requested model outputs that are not state (bound to a fresh buffer on every run). When they
        differ from the last run's, the output binding is brought in line first."""
        fresh = tuple(name for name in dict.fromkeys(requested) if name not in self._present_names)
        if fresh == state.model_outputs:
            return fresh
        if any(name not in fresh for name in state.model_outputs):
            # an output bound before and not asked for now would be written into the caller's buffer:
            # start the output binding again with the state and the maps only
            public = state.binding.public
            public.clear_binding_outputs()
            order = []
            for entry in self._state_entries:
                public.bind_ortvalue_output(entry.present, state.values[entry.present])
                order.append(entry.present)
            for output, value in zip(self._map_outputs.values(), state.map_values):
                public.bind_ortvalue_output(output, value)
                order.append(output)
            state.output_index = {n: i for i, n in enumerate(order)}
        for name in fresh:
            state.output_index.setdefault(name, len(state.output_index))  # ORT lists outputs as first bound
        state.model_outputs = fresh
        return fresh

    def _run_delta(self, state: _StreamState, requested: list[str], inputs: dict,
                   run_options: ort.RunOptions | None, maps: dict) -> list[np.ndarray]:
        first = state.binding is None
        binding = self._bind_new_state(state) if first else state.binding
        for name, (value, _) in inputs.items():
            binding.bind_frame(name, value)
        for name in self._change_map_inputs.values():  # rebound every run: no map is an empty one
            binding.bind_frame(name, maps.get(name, _NO_MAP))
        for name in self._model_outputs_to_bind(state, requested):
            binding.bind_fresh_output(name)
        binding.run(run_options)
        outputs = binding.outputs()
        if first:
            self._keep_state_bound(state, outputs)
            state.loaded = {}  # the present buffers hold it now
        index, presents = state.output_index, self._present_names
        returned = [self._state_output(state, name) if name in presents else outputs[index[name]].numpy()
                    for name in requested]  # numpy(): a view of this run's own buffer
        if self._identical_plan is not None:
            if state.check_wait == 0:  # the next run will be tested
                self._keep_for_identical_frames(state, requested, returned, inputs)
            else:
                state.kept_names = None
        return returned

    def _state_output(self, state: _StreamState, name: str) -> np.ndarray:
        value = state.values[name].numpy()  # a host copy already when the state lives on a GPU
        return np.array(value, copy=True) if self._state_device == "cpu" else value  # the next run writes here

    def _keep_for_identical_frames(self, state: _StreamState, requested: list[str], returned: list[np.ndarray],
                                   inputs: dict) -> None:
        """What the next run needs to be skipped: private copies of the outputs (the caller may write into
        theirs), in buffers reused from run to run; in bitwise mode, of the frames too."""
        kept, names = state.kept_outputs, []
        for name, array in zip(requested, returned):
            if name in self._present_names or name in names:
                continue
            names.append(name)
            buffer = kept.get(name)
            if buffer is not None and buffer.shape == array.shape and buffer.dtype == array.dtype:
                np.copyto(buffer, array)
            else:
                kept[name] = array.copy()
        state.kept_names = frozenset(names)
        state.finite_state = None
        if self._identical_plan.mode == "bitwise":
            for name, (value, _) in inputs.items():
                frame = _host_array(value)
                if frame is None:
                    state.previous_frames.pop(name, None)
                    continue
                buffer = state.previous_frames.get(name)
                if buffer is not None and buffer.shape == frame.shape and buffer.dtype == frame.dtype:
                    np.copyto(buffer, frame)
                else:
                    state.previous_frames[name] = frame.copy()

    def _nothing_changes(self, state: _StreamState, inputs: dict, requested: list[str]) -> bool:
        """Whether this run provably recomputes nothing anywhere (see _IdenticalFramePlan)."""
        kept = state.kept_names
        if kept is None or any(name not in kept and name not in self._present_names for name in requested):
            return False
        plan = self._identical_plan
        if plan.mode == "tau":
            for gate in plan.gates:
                frame = _host_array(inputs[gate.input][0])
                reference = state.values[gate.present].numpy()
                if frame is not None and gate.perm is not None:
                    # compare in the reference's layout: it is the larger read, and contiguous that way
                    frame = frame.transpose(gate.perm) if frame.ndim == len(gate.perm) else None
                if (frame is None or frame.shape != reference.shape or frame.dtype != reference.dtype
                        or not _gate_sees_nothing(gate, frame, reference)):
                    return False
        else:
            for name, (value, _) in inputs.items():
                frame, previous = _host_array(value), state.previous_frames.get(name)
                if frame is None or previous is None or not _bitwise_equal(frame, previous):
                    return False
        if state.finite_state is None:
            state.finite_state = all(_all_finite(state.values[present].numpy()) for present in plan.finite_checks)
        return state.finite_state

    def _skipped_run(self, state: _StreamState, requested: list[str]) -> list[np.ndarray]:
        """The run ORT would have made: the previous outputs, nothing recomputed, all maps zero."""
        state.runs += 1
        state.skipped_runs += 1
        state.last_fraction = np.zeros(len(self._map_nodes))
        state.maps_cleared = True
        if self._dense_fallback:
            self._update_fallback(state)
        return [self._state_output(state, name) if name in self._present_names else state.kept_outputs[name].copy()
                for name in requested]

    def _record_maps(self, state: _StreamState) -> None:
        state.runs += 1
        fraction = np.divide(list(map(np.count_nonzero, state.map_views)), state.map_divisors)
        state.last_fraction = fraction
        state.fraction_sum += fraction
        state.maps_cleared = False

    def _check_output_names(self, output_names: Sequence[str] | None) -> list[str]:
        if output_names is None:
            return list(self._output_names)
        if isinstance(output_names, str):
            raise TypeError("DeltaSession.run: output_names must be a list of names or None, not a string")
        requested = list(output_names)
        unknown = [n for n in requested if n not in self._output_names]
        if unknown:
            raise ValueError(f"DeltaSession.run: unknown output name(s) {unknown}; the model's outputs are "
                             f"{self._output_names} (state outputs are carried internally)")
        return requested

    def _check_change_map(self, change_map: Any) -> dict[str, np.ndarray]:
        """change_map as {change-map graph input: contiguous uint8 array} (the gate checks its shape)."""
        if change_map is None:
            return {}
        gates = self._change_map_inputs
        if not gates:
            raise ValueError("DeltaSession.run: change_map needs a model converted with gate='block' (it has no "
                             "DeltaGate to take it)")
        if not isinstance(change_map, Mapping):
            if len(gates) != 1:
                raise ValueError(f"DeltaSession.run: the model gates several inputs {list(gates)}: give change_map "
                                 f"as a dict {{input name: map}}")
            change_map = {next(iter(gates)): change_map}
        unknown = [name for name in change_map if name not in gates]
        if unknown:
            raise ValueError(f"DeltaSession.run: change_map for {unknown}, but the gated inputs are {list(gates)}")
        maps = {}
        for name, value in change_map.items():
            array = np.ascontiguousarray(value, dtype=np.uint8)
            if array.ndim != 4 or array.shape[1] != 1:
                raise ValueError(f"DeltaSession.run: change_map for {name!r} must be uint8 [N,1,H,W] (or one cell "
                                 f"per gate block), got shape {array.shape}")
            maps[gates[name]] = array
        return maps

    def _check_input_feed(self, input_feed: Mapping[str, Any]) -> dict[str, tuple[Any, tuple]]:
        if type(input_feed) is not dict and not isinstance(input_feed, Mapping):
            raise TypeError(f"DeltaSession.run: input_feed must be a dict of name -> array, "
                            f"not {type(input_feed).__name__}")
        names = self._input_names
        complete = len(input_feed) == len(names) and all(n in input_feed for n in names)
        unknown = [] if complete else [n for n in input_feed if n not in names]
        if unknown:
            state_inputs = [n for n in unknown if n.startswith(STATE_PREFIX)]
            hint = (f"; state inputs such as {state_inputs[0]!r} are fed by DeltaSession itself"
                    if state_inputs else "")
            raise ValueError(f"DeltaSession.run: unknown input name(s) {unknown}; the model's inputs are "
                             f"{self._input_names}{hint}")
        missing = [] if complete else [n for n in names if n not in input_feed]
        if missing:
            raise ValueError(f"DeltaSession.run: required input(s) {missing} are missing from input_feed "
                             f"(the model's inputs are {self._input_names})")
        inputs = {}
        for name in self._input_names:  # graph order, so the shape signature does not depend on dict order
            value = input_feed[name]
            if isinstance(value, ort.OrtValue):
                inputs[name] = (value, tuple(value.shape()))
            else:
                array = value if type(value) is np.ndarray and value.flags.c_contiguous \
                    else np.ascontiguousarray(value)  # bound in place: no copy when already contiguous
                inputs[name] = (array, array.shape)
        return inputs

    # ----------------------------------------------------------------- streams and statistics

    def _stream(self, stream: Hashable, create: bool) -> _StreamState | None:
        with self._streams_lock:
            state = self._streams.get(stream)
            if state is None and create:
                state = self._streams[stream] = _StreamState(len(self._map_nodes))
            return state

    def _ran_stream(self, stream: Hashable, caller: str) -> _StreamState:
        state = self._stream(stream, create=False)
        if state is None or state.runs == 0:
            known = self.streams()
            raise KeyError(f"DeltaSession.{caller}: stream {stream!r} has no runs since it was created or reset "
                           f"(streams with runs: {known})")
        return state

    def reset(self, stream: Hashable | None = None) -> None:
        """Drop the state and statistics of `stream`, or of every stream when None.

        The next run of a dropped stream starts from empty state (every pixel recomputed). A run in progress
        on that stream finishes first; its result is returned but its state is dropped. Resetting a stream
        that never ran is a no-op.
        """
        with self._streams_lock:
            if stream is None:
                dropped = list(self._streams.values())
                self._streams.clear()
            else:
                dropped = [self._streams.pop(stream)] if stream in self._streams else []
        for state in dropped:
            with state.lock:
                state.retired = True
                state.drop_state()

    def state(self, stream: Hashable = DEFAULT_STREAM) -> dict[str, ort.OrtValue]:
        """The live state buffers of `stream` (past input name -> OrtValue), for debugging or saving.

        The next run of the stream writes into these buffers: copy what you want to keep.
        """
        state = self._ran_stream(stream, "state")
        with state.lock:
            return {entry.past: state.values[entry.present] for entry in self._state_entries
                    if entry.present in state.values}

    def load_state(self, saved: Mapping[str, Any], stream: Hashable = DEFAULT_STREAM) -> None:
        """Resume `stream` from a state saved with state() (past input name -> array or OrtValue), e.g. one
        moved from another process or kept across a restart of the application.

        The stream is reset first (its statistics too); the arrays are copied now, and its next run feeds them
        as the past state, so it recomputes only what changed since the saved run. Names missing from `saved`
        start empty (those ops recompute everything on that run: exact, only slower). A state saved for
        another input shape counts as no state (rule 1). A Y_prev that does not fit its X_ref makes the run
        fail with the op's error; the stream then starts again from empty state.
        """
        known = {entry.past: entry for entry in self._state_entries}
        unknown = sorted(set(saved) - set(known))
        if unknown:
            raise KeyError(f"DeltaSession.load_state: {unknown} are not state inputs of this model "
                           f"(state inputs: {sorted(known)})")
        loaded = {}
        for name, value in saved.items():
            array = value.numpy() if isinstance(value, ort.OrtValue) else np.asarray(value)
            want = self._empty_state[name].dtype
            if array.ndim != 4 or array.dtype != want:
                raise ValueError(f"DeltaSession.load_state: {name!r} must be a 4-D {want} array, got "
                                 f"{array.dtype} of shape {array.shape}")
            loaded[name] = np.array(array, copy=True, order="C")
        self.reset(stream)
        state = self._stream(stream, create=True)
        with state.lock:
            state.loaded = loaded

    def change_maps(self, stream: Hashable = DEFAULT_STREAM) -> dict[str, np.ndarray]:
        """Node name -> change map of the last run of `stream` (uint8 [N,1,Ho,Wo], 1 where recomputed).

        Copies, taken now (the next run writes into the live buffers). A skipped run's maps are all zero;
        after a switch to the dense twin these are the last delta run's maps; after a failed run, none."""
        state = self._ran_stream(stream, "change_maps")
        with state.lock:
            maps = state.current_maps()
        return dict(zip(self._map_nodes, maps)) if maps is not None else {}

    def stats(self, stream: Hashable = DEFAULT_STREAM) -> dict:
        """Per Delta node: the fraction of its output recomputed in the last run and on average since reset.

        Returns ``{"stream", "runs", "nodes": {node: {"op", "fraction", "fraction_avg", "flops",
        "flops_saved", "flops_saved_avg"}}, "flops", "flops_saved", "flops_saved_avg", "mode", "work_smoothed",
        "dense_runs", "skipped_runs"}``. `fraction` is the mean of the node's change map; `flops` is the node's
        cost per frame (batch item) as the converter recorded it in the metadata or, for a model with dynamic
        input sizes, at the shapes of the last run (None when neither is known), and `flops_saved` = flops *
        (1 - fraction). The totals add up the nodes with known flops. `skipped_runs`: runs since the reset that
        returned the previous outputs without running ORT (identical frames; counted in `runs`, fraction 0).
        """
        state = self._ran_stream(stream, "stats")
        with state.lock:
            runs = state.runs
            last = state.last_fraction.tolist()
            sums = state.fraction_sum.tolist()
            mode, work, dense_runs, skipped = state.mode, state.work, state.dense_runs_total, state.skipped_runs
            run_flops = [0.0] * len(last) if state.node_flops is None else state.node_flops.tolist()
        nodes = {}
        total_flops = total_saved = total_saved_avg = 0.0
        for node, fraction, fraction_sum, at_run_shape in zip(self._map_nodes, last, sums, run_flops):
            info = self._node_info.get(node, {})
            flops = info.get("flops")
            if flops is None and at_run_shape > 0:
                flops = int(at_run_shape)
            fraction_avg = fraction_sum / runs
            saved = saved_avg = None
            if flops is not None:
                saved, saved_avg = flops * (1.0 - fraction), flops * (1.0 - fraction_avg)
                total_flops += flops
                total_saved += saved
                total_saved_avg += saved_avg
            nodes[node] = {"op": info.get("op"), "fraction": fraction, "fraction_avg": fraction_avg,
                           "flops": flops, "flops_saved": saved, "flops_saved_avg": saved_avg}
        return {"stream": stream, "runs": runs, "nodes": nodes, "flops": total_flops,
                "flops_saved": total_saved, "flops_saved_avg": total_saved_avg,
                "mode": mode, "work_smoothed": work, "dense_runs": dense_runs, "skipped_runs": skipped}

    def __repr__(self) -> str:
        return (f"DeltaSession(inputs={self._input_names}, outputs={self._output_names}, "
                f"state={len(self._state_entries)} tensors, providers={self.providers})")


__all__ = ["DeltaSession", "StateEntry", "METADATA_KEY"]

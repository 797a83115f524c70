"""DeltaSession: run a converted model like an onnxruntime.InferenceSession while the state is carried for you.

A converted model (``python -m deltaonnx convert``) has, besides its own inputs and outputs, *state* inputs
(past) and outputs (present) listed in its ``deltaonnx`` metadata (docs/state_protocol.md). DeltaSession
hides them: ``run()`` takes and returns exactly the original model's inputs and outputs, and keeps one state
per *stream* (an independent video source) between runs.

How the state is carried (no copies between runs): the first run of a stream feeds empty state and binds the
present outputs to the state device, so ORT allocates them; from the second run on, each state buffer is
bound with IOBinding as both its past input and its present output, so the ops receive one buffer and write
only the pixels they recompute. A model output that is also a state buffer is copied before it is returned
(the next run writes into it); other outputs are returned as numpy views of the buffers ORT allocated for
this run (``OrtValue.numpy()`` does not copy on CPU; the view keeps the buffer alive), which no later run
touches.

Threads: one ORT session is shared by all streams; every run gets its own IOBinding. Runs on different
streams may proceed at the same time from different threads. Runs on the *same* stream are serialized by a
per-stream lock: a second call waits until the first has finished and then continues from its state.
"""
from __future__ import annotations

import json
import os
import threading
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


@dataclass(frozen=True)
class StateEntry:
    """One carried state tensor: the graph input it is fed through and the graph output it comes back on."""

    node: str
    kind: str
    past: str
    present: str


@dataclass
class _StreamState:
    """Everything one stream carries between runs. Guarded by `lock`; `retired` once reset() dropped it."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    retired: bool = False
    values: dict[str, ort.OrtValue] = field(default_factory=dict)  # present name -> live state buffer
    input_shapes: tuple | None = None  # shapes of the model inputs the state was built for
    runs: int = 0  # runs since the last reset
    last_maps: dict[str, np.ndarray] = field(default_factory=dict)  # node -> map of the last run
    last_fraction: dict[str, float] = field(default_factory=dict)
    fraction_sum: dict[str, float] = field(default_factory=dict)
    # The dense fallback (DeltaSession's dense_fallback): "delta" or "dense", the smoothed FLOP-weighted
    # share of work redone, and the runs in the current mode.
    mode: str = "delta"
    work: float | None = None
    mode_runs: int = 0
    dense_runs_total: int = 0

    def drop_state(self) -> None:
        self.values = {}
        self.input_shapes = None


class DeltaSession:
    """An InferenceSession for a deltaonnx-converted model that carries its state between runs.

    ``model``: path, serialized bytes or onnx.ModelProto of a converted model. ``sess_options`` are copied
    (see `_copy_session_options` for what ORT lets us copy) and the deltaonnx op library is registered on the
    copy. ``providers`` as for InferenceSession; default CPU. With "CUDAExecutionProvider" the CUDA op library
    is registered too when it was built, and the state then lives on the GPU.
    """

    # A stream whose smoothed share of conv work redone exceeds FALLBACK_ENTER runs the dense twin; every
    # `fallback_probe_every` dense frames it tries delta again (from empty state) and stays if, after
    # FALLBACK_SETTLE frames, the share is below FALLBACK_STAY.
    FALLBACK_ENTER = 0.8
    FALLBACK_STAY = 0.65
    FALLBACK_SETTLE = 3

    def __init__(self, model: str | os.PathLike | bytes | Any, sess_options: ort.SessionOptions | None = None,
                 providers: Sequence[str | tuple] | None = None, *, dense_fallback: bool = True,
                 fallback_probe_every: int = 30):
        """dense_fallback: a stream whose frames change almost everywhere (a moving camera) is run through
        the model's dense twin (densify.py), which costs what dense ORT costs, and probed with delta again
        every `fallback_probe_every` frames; stats() says which mode a stream is in. Dense frames are exact
        (no thresholds apply)."""
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
        self._node_info = {n["name"]: n for n in self._metadata.get("nodes", []) if "name" in n}
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

        self._streams: dict[Hashable, _StreamState] = {}
        self._streams_lock = threading.Lock()

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

    def state_names(self) -> list[tuple[str, str]]:
        """(past input, present output) name pairs of every carried state tensor, in metadata order."""
        return [(s.past, s.present) for s in self._state_entries]

    def streams(self) -> list[Hashable]:
        """The streams that currently hold state or statistics."""
        with self._streams_lock:
            return list(self._streams)

    # ----------------------------------------------------------------- running

    def run(self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any],
            run_options: ort.RunOptions | None = None, *, stream: Hashable = DEFAULT_STREAM) -> list[np.ndarray]:
        """Run one frame of `stream`: same call and result as InferenceSession.run (list of numpy arrays).

        The stream's state is fed and updated; a change of any input shape drops it first (every pixel is
        then recomputed). Concurrent calls on the same stream are serialized; on different streams they run
        in parallel. If the run fails, the stream's state is dropped (in-place buffers may be half written).
        """
        requested = self._check_output_names(output_names)
        inputs = self._check_input_feed(input_feed)
        input_shapes = tuple((name, tuple(shape)) for name, (_, shape) in inputs.items())
        while True:
            state = self._stream(stream, create=True)
            with state.lock:
                if state.retired:  # reset() dropped this stream while we waited: use the fresh one
                    continue
                return self._run_locked(state, requested, inputs, input_shapes, run_options)

    def _dense_twin_session(self) -> ort.InferenceSession:
        with self._dense_lock:
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
        if state.mode_runs >= self._probe_every:  # probe: delta again, from empty state
            state.mode, state.mode_runs, state.work = "delta", 0, None
        return outputs

    def _update_fallback(self, state: _StreamState) -> None:
        """After a delta run: smooth the FLOP-weighted share of conv work redone; switch to dense when high."""
        # A node's conv work this run: its FLOPs from the metadata, or, for models with dynamic shapes, its
        # FLOPs per output pixel times the pixels of its map.
        known = {}
        for node in state.last_fraction:
            info = self._node_info.get(node, {})
            flops = info.get("flops") or (info.get("flops_per_output_pixel") or 0) * state.last_maps[node].size
            if flops:
                known[node] = flops
        state.mode_runs += 1
        if not known or state.mode_runs < 2:  # the first frame after a reset is always redone in full
            return
        work = sum(f * state.last_fraction[n] for n, f in known.items()) / sum(known.values())
        state.work = work if state.work is None else 0.5 * state.work + 0.5 * work
        probing = state.dense_runs_total > 0 and state.mode_runs <= self.FALLBACK_SETTLE
        limit = self.FALLBACK_STAY if probing else self.FALLBACK_ENTER
        if state.mode_runs >= self.FALLBACK_SETTLE and state.work > limit:
            state.drop_state()
            state.mode, state.mode_runs = "dense", 0

    def _run_locked(self, state: _StreamState, requested: list[str], inputs: dict, input_shapes: tuple,
                    run_options: ort.RunOptions | None) -> list[np.ndarray]:
        if state.mode == "dense":
            return self._run_dense(state, requested, inputs, run_options)
        if state.input_shapes != input_shapes:
            state.drop_state()
        binding = self._session.io_binding()
        for name, (value, _) in inputs.items():
            if isinstance(value, ort.OrtValue):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, value)

        bound_outputs: list[str] = []
        for entry in self._state_entries:
            buffer = state.values.get(entry.present)
            if buffer is None:  # first run of the stream: empty state in, ORT allocates the present output
                binding.bind_cpu_input(entry.past, self._empty_state[entry.past])
                binding.bind_output(entry.present, self._state_device, self._state_device_id)
            else:  # one buffer as past and present: the op writes only what it recomputes
                binding.bind_ortvalue_input(entry.past, buffer)
                binding.bind_ortvalue_output(entry.present, buffer)
            bound_outputs.append(entry.present)
        for output in self._map_outputs.values():
            binding.bind_output(output, "cpu")
            bound_outputs.append(output)
        for name in dict.fromkeys(requested):
            if name not in self._present_names:
                binding.bind_output(name, "cpu")
                bound_outputs.append(name)

        try:
            self._session.run_with_iobinding(binding, run_options)
        except BaseException:
            state.drop_state()
            raise
        # get_outputs() lists the outputs in the order they were first bound
        results = dict(zip(bound_outputs, binding.get_outputs()))

        state.values = {entry.present: results[entry.present] for entry in self._state_entries}
        state.input_shapes = input_shapes
        self._record_maps(state, results)
        if self._dense_fallback:
            self._update_fallback(state)

        returned = []
        for name in requested:
            value = results[name]
            if name in self._present_names and self._state_device == "cpu":
                returned.append(np.array(value.numpy(), copy=True))  # the next run overwrites this buffer
            else:
                returned.append(value.numpy())  # a view of this run's own buffer (a host copy for GPU values)
        return returned

    def _record_maps(self, state: _StreamState, results: dict[str, ort.OrtValue]) -> None:
        state.runs += 1
        for node, output in self._map_outputs.items():
            change_map = results[output].numpy()  # a fresh buffer each run: kept without a copy
            fraction = float(np.count_nonzero(change_map)) / change_map.size if change_map.size else 0.0
            state.last_maps[node] = change_map
            state.last_fraction[node] = fraction
            state.fraction_sum[node] = state.fraction_sum.get(node, 0.0) + fraction

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

    def _check_input_feed(self, input_feed: Mapping[str, Any]) -> dict[str, tuple[Any, tuple]]:
        if not isinstance(input_feed, Mapping):
            raise TypeError(f"DeltaSession.run: input_feed must be a dict of name -> array, "
                            f"not {type(input_feed).__name__}")
        unknown = [n for n in input_feed if n not in self._input_names]
        if unknown:
            state_inputs = [n for n in unknown if n.startswith(STATE_PREFIX)]
            hint = (f"; state inputs such as {state_inputs[0]!r} are fed by DeltaSession itself"
                    if state_inputs else "")
            raise ValueError(f"DeltaSession.run: unknown input name(s) {unknown}; the model's inputs are "
                             f"{self._input_names}{hint}")
        missing = [n for n in self._input_names if n not in input_feed]
        if missing:
            raise ValueError(f"DeltaSession.run: required input(s) {missing} are missing from input_feed "
                             f"(the model's inputs are {self._input_names})")
        inputs = {}
        for name in self._input_names:  # graph order, so the shape signature does not depend on dict order
            value = input_feed[name]
            if isinstance(value, ort.OrtValue):
                inputs[name] = (value, tuple(value.shape()))
            else:
                array = np.ascontiguousarray(value)  # no copy when already contiguous (bound in place)
                inputs[name] = (array, array.shape)
        return inputs

    # ----------------------------------------------------------------- streams and statistics

    def _stream(self, stream: Hashable, create: bool) -> _StreamState | None:
        with self._streams_lock:
            state = self._streams.get(stream)
            if state is None and create:
                state = self._streams[stream] = _StreamState()
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
                state.last_maps.clear()

    def state(self, stream: Hashable = DEFAULT_STREAM) -> dict[str, ort.OrtValue]:
        """The live state buffers of `stream` (past input name -> OrtValue), for debugging or saving.

        The next run of the stream writes into these buffers: copy what you want to keep.
        """
        state = self._ran_stream(stream, "state")
        with state.lock:
            return {entry.past: state.values[entry.present] for entry in self._state_entries
                    if entry.present in state.values}

    def change_maps(self, stream: Hashable = DEFAULT_STREAM) -> dict[str, np.ndarray]:
        """Node name -> change map of the last run of `stream` (uint8 [N,1,Ho,Wo], 1 where recomputed)."""
        state = self._ran_stream(stream, "change_maps")
        with state.lock:
            return dict(state.last_maps)

    def stats(self, stream: Hashable = DEFAULT_STREAM) -> dict:
        """Per Delta node: the fraction of its output recomputed in the last run and on average since reset.

        Returns ``{"stream", "runs", "nodes": {node: {"op", "fraction", "fraction_avg", "flops",
        "flops_saved", "flops_saved_avg"}}, "flops", "flops_saved", "flops_saved_avg"}``. `fraction` is the
        mean of the node's change map; `flops` is the node's cost as the converter recorded it in the
        metadata (None when absent) and `flops_saved` = flops * (1 - fraction). The totals add up the nodes
        with known flops.
        """
        state = self._ran_stream(stream, "stats")
        with state.lock:
            runs = state.runs
            last = dict(state.last_fraction)
            sums = dict(state.fraction_sum)
        nodes = {}
        total_flops = total_saved = total_saved_avg = 0.0
        for node in self._map_outputs:
            info = self._node_info.get(node, {})
            flops = info.get("flops")
            fraction, fraction_avg = last[node], sums[node] / runs
            saved = saved_avg = None
            if flops is not None:
                saved, saved_avg = flops * (1.0 - fraction), flops * (1.0 - fraction_avg)
                total_flops += flops
                total_saved += saved
                total_saved_avg += saved_avg
            nodes[node] = {"op": info.get("op"), "fraction": fraction, "fraction_avg": fraction_avg,
                           "flops": flops, "flops_saved": saved, "flops_saved_avg": saved_avg}
        with state.lock:
            mode, work, dense_runs = state.mode, state.work, state.dense_runs_total
        return {"stream": stream, "runs": runs, "nodes": nodes, "flops": total_flops,
                "flops_saved": total_saved, "flops_saved_avg": total_saved_avg,
                "mode": mode, "work_smoothed": work, "dense_runs": dense_runs}

    def __repr__(self) -> str:
        return (f"DeltaSession(inputs={self._input_names}, outputs={self._output_names}, "
                f"state={len(self._state_entries)} tensors, providers={self.providers})")


__all__ = ["DeltaSession", "StateEntry", "METADATA_KEY"]

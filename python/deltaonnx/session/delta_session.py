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
(see `IdenticalFramePlan`), so the run returns the previous outputs without calling ORT; its statistics say
nothing was recomputed and its change maps are all zero. For that the session keeps a private copy of the
model outputs of a run whose successor will be tested (one copy of the outputs, into reused buffers) and
returns copies of it. A stream whose frames keep changing is tested on every 16th frame only (after 4 misses
in a row), so it pays the test and the copy rarely; skipping or not never changes a result.

Threads: one ORT session is shared by all streams; each stream has its own IOBinding. Runs on different
streams may proceed at the same time from different threads. Runs on the *same* stream are serialized by a
per-stream lock: a second call waits until the first has finished and then continues from its state.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from .._lib import channel_block, library_path
from ..graph_passes.identical_frames import IdenticalFramePlan, identical_frame_plan
from ..graph_passes.metadata import ConversionMetadata, MetadataError
from ..graph_passes.protocol import CHANNEL_BLOCK_KEY, METADATA_KEY, STATE_PREFIX
from .dense_twin_runner import DenseTwinRunner
from .fallback_policy import FallbackPolicy
from .feeds import FLOAT_DTYPES, checked_change_maps, checked_input_feed, checked_output_names, one_frame
from .identical_run import keep_for_identical_frames, nothing_changes
from .probe_check import probe_check
from .scratch_buffers import StatelessPlan
from .session_options import copy_session_options, provider_name
from .state_binding import StateBinder
from .stream_state import StreamState
from .steady_run import steady_runner
from .stream_stats import LastRun, last_run, stream_stats

DEFAULT_STREAM = "default"

_NO_MAP = np.zeros((0, 1, 0, 0), np.uint8)  # DeltaGate's external change map when the caller gives none


class DeltaSession:
    """An InferenceSession for a deltaonnx-converted model that carries its state between runs.

    ``model``: path, serialized bytes or onnx.ModelProto of a converted model. ``sess_options`` are copied
    (see `copy_session_options` for what ORT lets us copy) and the deltaonnx op library is registered on the
    copy. ``providers`` as for InferenceSession; default CPU. With "CUDAExecutionProvider" the CUDA op library
    is registered too when it was built, and the state then lives on the GPU.
    """

    # When a stream runs its fallback and when it probes delta again (fallback_policy.py); a subclass may give another.
    POLICY = FallbackPolicy
    # The identical-frame test (and the copy of the outputs it needs) runs on every frame until it has failed
    # CHECK_MISSES_BEFORE_SPACING times in a row (a stream that never repeats), then on every CHECK_SPACING-th
    # frame until it succeeds again. Skipping or not never changes a result, only the time taken.
    CHECK_MISSES_BEFORE_SPACING = 4
    CHECK_SPACING = 16

    def __init__(self, model: str | os.PathLike | bytes | Any, sess_options: ort.SessionOptions | None = None,
                 providers: Sequence[str | tuple] | None = None, *, dense_fallback: bool = True,
                 fallback_probe_every: int = 30, skip_identical_frames: bool = True, stateless_runs: bool = True,
                 fallback_clock: bool = True):
        """dense_fallback: a stream whose frames change almost everywhere (a moving camera) is run through
        the model's dense twin (graph_passes/dense_twin.py), which costs what dense ORT costs, and probed with
        delta again after `fallback_probe_every` frames (twice as long after each failed probe, at most 4x);
        stats() says which mode a stream is in. Dense frames are exact (no thresholds apply). The twin is built
        when the session is, in a thread of its own.

        fallback_clock: with the dense fallback, ORT's delta runs are also timed against the twin's (a frame run by
        the twin every few hundred delta frames, its outputs the twin's): a stream whose delta runs take longer
        than the twin's falls back too, whatever share of the work they redo (docs/design.md#the-clock). False:
        the share alone decides, so a stream's modes depend on its frames only.

        stateless_runs: with the dense fallback off, such a stream runs the converted model itself without keeping
        state (docs/design.md#stateless-runs): every Delta op recomputes everything from empty state and writes its
        outputs into a few scratch buffers shared from layer to layer, as ORT shares its own, for the cost of
        the ops at full change without the cost of keeping their outputs; probed like the fallback. On the CPU
        (state on a GPU is kept on every run). False: the state is kept on every run, however much changes.

        skip_identical_frames: a run whose frames leave every Delta op without a change (bitwise identical
        frames; or, when the Delta ops read the model inputs directly, frames within their threshold of the
        reference) returns the previous outputs without running ORT, exactly as the model would
        (`identical_frame_check` says which test applies to this model; see `IdenticalFramePlan`). Only
        streams in delta mode skip; resets, shape changes and the first run after them always run."""
        if fallback_probe_every < 1:
            raise ValueError("fallback_probe_every must be >= 1")
        self._dense_fallback, self._probe_every = bool(dense_fallback), int(fallback_probe_every)
        dense_options = copy_session_options(sess_options)
        model_source = self._model_source(model)
        options = copy_session_options(sess_options)
        providers = list(providers) if providers is not None else ["CPUExecutionProvider"]
        # Both libraries register the domain com.deltaonnx and ORT accepts a domain once per session, so a
        # session takes the CUDA library when the CUDA EP is asked for (and it was built), else the CPU one.
        cuda_library_registered = False
        if "CUDAExecutionProvider" in (provider_name(p) for p in providers):
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
        self._state_entries = list(self._metadata.state)
        self._map_outputs = dict(self._metadata.maps)
        self._map_nodes = list(self._map_outputs)
        self._map_node_names = tuple(self._map_nodes)
        self._node_info = {n["name"]: n for n in self._metadata.nodes if "name" in n}
        # model input (the frame a DeltaGate gates) -> the gate's change-map graph input
        self._change_map_inputs = dict(self._metadata.change_map_inputs)
        self._check_graph_matches_metadata()

        past_names = {s.past for s in self._state_entries}
        self._inputs = [i for i in self._session.get_inputs()
                        if i.name not in past_names and not i.name.startswith(STATE_PREFIX)]
        self._outputs = [o for o in self._session.get_outputs() if not o.name.startswith(STATE_PREFIX)]
        self._input_names = [i.name for i in self._inputs]
        self._output_names = [o.name for o in self._outputs]
        self._present_names = {s.present for s in self._state_entries}
        self._twin = DenseTwinRunner(self._load_model, self._output_names, dense_options, providers)
        past_types = {i.name: i.type for i in self._session.get_inputs()}
        # An empty rank-4 tensor is the "no state" value of every past input (state_protocol.md, step 1): float32,
        # or the element type the graph declares for that input (float16 models).
        self._empty_state = {s.past: np.empty((0, 0, 0, 0), FLOAT_DTYPES.get(past_types[s.past], np.float32))
                             for s in self._state_entries}

        # Blocked state is memory valid only at the op library's channel block (docs/design.md#state).
        self._blocked_state = {s.past for s in self._state_entries if s.layout == "blocked"}
        self._channel_block = channel_block("cuda" if cuda_library_registered else "cpu")
        self._state_device, self._state_device_id = "cpu", 0
        if cuda_library_registered and "CUDAExecutionProvider" in self._session.get_providers():
            cuda_options = self._session.get_provider_options().get("CUDAExecutionProvider", {})
            self._state_device, self._state_device_id = "cuda", int(cuda_options.get("device_id", 0))

        # What a stream whose frames change almost everywhere runs instead of delta (None: delta, keeping state).
        fallback = "dense" if self._dense_fallback else "stateless" if stateless_runs and self._state_device == "cpu" \
            else None
        checks_probes = fallback is not None and len(self._input_names) == 1
        # The identical-frame plan serves the skip and the fallback's check before probes: made once, for either.
        # The tau test reads the gates' X_ref on the host: with the state on a GPU, compare frames instead.
        plan, plan_reason, check = None, None, None
        if skip_identical_frames or checks_probes:
            graph = self._graph(model)  # a path or bytes is parsed: once
            plan, plan_reason = identical_frame_plan(graph, self._input_names, self._state_entries,
                                                     gates_allowed=self._state_device == "cpu")
            if checks_probes:
                check = probe_check(plan, list(self._metadata.nodes), graph)
        self._identical_plan: IdenticalFramePlan | None = plan if skip_identical_frames else None
        self._identical_reason = plan_reason if skip_identical_frames else "skip_identical_frames=False"
        self._policy = self.POLICY(fallback, self._probe_every, check, clock=bool(fallback_clock))
        self._stateless_plan: StatelessPlan | None = None  # built on the first stateless run
        self._binder = StateBinder(self._session, self._state_entries, self._empty_state, self._map_outputs,
                                   self._node_info, self._present_names, self._state_device, self._state_device_id,
                                   self._stateless)

        self._streams: dict[Hashable, StreamState] = {}
        self._streams_lock = threading.Lock()
        if self._dense_fallback and self._map_nodes:
            # The twin takes about three frames' time to build (densify, a session): built beside the first
            # frames, so the first stream to fall back does not stall (a run that needs it sooner waits on the
            # lock). Not a daemon: interpreter exit waits for the build rather than killing it inside ORT.
            threading.Thread(target=self._twin.build, name="deltaonnx-dense-twin").start()

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
    def _parse_metadata(text: str | None) -> ConversionMetadata:
        try:
            return ConversionMetadata.parse(text)
        except MetadataError as error:
            hint = ("; run `python -m deltaonnx convert model.onnx -o converted.onnx` first (or deltaonnx.convert(model))"
                    if text is None else "")
            raise ValueError(f"DeltaSession: {error}{hint}") from None

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
        return self._metadata.entries

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

        change_map: where the frame may have changed since the last run (models converted with the block
        gate, convert's default, at a threshold above 0): uint8 [N,1,H,W] at the frame's resolution or [N,1,ceil(H/k),ceil(W/k)] one cell per
        gate block, nonzero = may have changed. The gate looks only there: pixels left 0 keep their previous
        value (a timestamp overlay, a waving tree), so every output they reach stays as it was. A dict
        {model input name: map} for models with several gated inputs. A frame that changes only where the map
        says nothing did is skipped like an identical one. (A stream in the dense fallback runs the dense twin,
        which sees whole frames.)
        """
        state = self._streams.get(stream)
        if state is not None and state.steady is not None and change_map is None:
            returned = state.steady(output_names, input_feed, run_options)
            if returned is not None:
                return returned
        requested = checked_output_names(output_names, self._output_names)
        inputs = checked_input_feed(input_feed, self._input_names)
        maps = checked_change_maps(change_map, self._change_map_inputs)
        input_shapes = tuple((name, tuple(shape)) for name, (_, shape) in inputs.items())
        while True:
            state = self._stream(stream, create=True)
            with state.lock:
                if state.retired:  # reset() dropped this stream while we waited: use the fresh one
                    continue
                return self._run_locked(state, requested, inputs, input_shapes, run_options, maps,
                                        output_names is None and change_map is None)

    def _load_model(self) -> onnx.ModelProto:
        """The converted model, parsed again (the twin is made from it)."""
        if self._model_bytes is not None:
            return onnx.load_from_string(self._model_bytes)
        return onnx.load(self._model_path)

    def _stateless(self) -> StatelessPlan:
        """What stateless runs need of the graph (scratch_buffers.py), read once, on the first of them."""
        if self._stateless_plan is None:
            self._stateless_plan = StatelessPlan(self._graph(None), self._state_entries, self._input_names,
                                                 self._output_names)
        return self._stateless_plan

    def _run_dense(self, state: StreamState, requested: list[str], inputs: dict,
                   run_options: ort.RunOptions | None, frame: np.ndarray | None) -> list[np.ndarray]:
        """A run of the dense twin, timed: a stream in the fallback, or a delta stream's sample of the twin's time
        (FallbackPolicy's clock), which leaves its state and mode as they were."""
        outputs, seconds = self._twin.run_timed(requested, {name: value for name, (value, _) in inputs.items()},
                                                run_options)
        state.dense_runs_total += 1
        self._policy.after_twin_run(state, seconds, frame)
        return outputs

    def _run_locked(self, state: StreamState, requested: list[str], inputs: dict, input_shapes: tuple,
                    run_options: ort.RunOptions | None, maps: dict | None = None,
                    steady_allowed: bool = False) -> list[np.ndarray]:
        # the frame for the fallback's check before a probe: none where a change map narrows what the gate sees
        frame = None if maps else one_frame(inputs)
        if state.mode == "dense" or (state.twin_sample and state.input_shapes == input_shapes):  # a sample: same shapes
            return self._run_dense(state, requested, inputs, run_options, frame)
        if state.binding is not None and state.input_shapes != input_shapes:
            state.drop_state()
            state.delta_seconds = state.twin_seconds = None  # the clock's times at other shapes compare nothing
        if self._identical_plan is not None and state.binding is not None and state.mode == "delta":
            if state.check_wait > 0:
                state.check_wait -= 1
            elif nothing_changes(state, self._identical_plan, self._present_names, inputs, requested, maps or {}):
                state.check_misses = 0
                return self._skipped_run(state, requested)
            else:
                state.check_misses += 1
                if state.check_misses >= self.CHECK_MISSES_BEFORE_SPACING:
                    state.check_wait = self.CHECK_SPACING - 1
        try:
            results = self._run_delta(state, requested, inputs, input_shapes, run_options, maps or {})
        except BaseException:
            state.drop_state()
            raise
        state.input_shapes = input_shapes
        self._finish_run(state, frame)
        state.steady = steady_runner(self, state, inputs) if steady_allowed else None
        return results

    def _finish_run(self, state: StreamState, frame: np.ndarray | None) -> None:
        """After a run of the converted model: its maps recorded, the fallback policy told (`frame`: the run's one
        host frame, else None)."""
        self._record_maps(state)
        self._tell_policy(state, frame)

    def _tell_policy(self, state: StreamState, frame: np.ndarray | None) -> None:
        """The fallback policy after a run whose maps are recorded (also called by the compiled prepared run,
        steady_frame_run.cc, on the runs the policy may act on)."""
        if state.mode == "stateless":
            state.stateless_runs_total += 1
            self._policy.after_fallback_run(state, frame)
        elif self._policy.mode is not None:
            self._policy.after_delta_run(state)

    def _run_delta(self, state: StreamState, requested: list[str], inputs: dict, input_shapes: tuple,
                   run_options: ort.RunOptions | None, maps: dict) -> list[np.ndarray]:
        first = state.binding is None
        binding = self._binder.bind_new_state(state, input_shapes) if first else state.binding
        for name, (value, _) in inputs.items():
            binding.bind_frame(name, value)
        for name in self._change_map_inputs.values():  # rebound every run: no map is an empty one
            binding.bind_frame(name, maps.get(name, _NO_MAP))
        for name in self._binder.model_outputs_to_bind(state, requested):
            binding.bind_fresh_output(name)
        if state.mode == "stateless" and not first:
            for present, frame_input in self._stateless().frame_references(inputs):
                binding.bind_output_to(present, inputs[frame_input][0])
        start = time.perf_counter()  # FallbackPolicy's clock (the compiled prepared run times the same call)
        binding.run(run_options)
        # a run from empty state redoes everything: not what a delta run costs (the clock leaves it out)
        state.last_seconds = None if first else time.perf_counter() - start
        outputs = binding.outputs()
        index, presents = state.output_index, self._present_names
        # numpy(): a view of this run's own buffer; a state output is copied (the next run writes into its buffer),
        # before a first run moves the state out of the buffers ORT wrote it to
        returned = [self._owned(outputs[index[name]].numpy()) if name in presents else outputs[index[name]].numpy()
                    for name in requested]
        if first:
            self._binder.keep_state_bound(state, outputs)
            state.loaded = {}  # the present buffers hold it now
        if self._identical_plan is not None:
            if state.check_wait == 0 and state.mode == "delta":  # the next run will be tested
                keep_for_identical_frames(state, self._identical_plan, self._present_names, requested, returned,
                                          inputs)
            else:
                state.kept_names = None
        return returned

    def _state_output(self, state: StreamState, name: str) -> np.ndarray:
        return self._owned(state.values[name].numpy())

    def _owned(self, value: np.ndarray) -> np.ndarray:
        """A state buffer's value for the caller: a copy (the next run writes into the buffer); a state on a GPU
        came to the host as a copy already."""
        return np.array(value, copy=True) if self._state_device == "cpu" else value

    def _skipped_run(self, state: StreamState, requested: list[str]) -> list[np.ndarray]:
        """The run ORT would have made: the previous outputs, nothing recomputed, all maps zero."""
        state.runs += 1
        state.skipped_runs += 1
        state.last_fraction[:] = 0.0  # in place: the stream's map buffers record into this array
        state.maps_cleared = True
        state.last_seconds = 0.0
        if self._policy.mode is not None:
            self._policy.after_delta_run(state)
        return [self._state_output(state, name) if name in self._present_names else state.kept_outputs[name].copy()
                for name in requested]

    def _record_maps(self, state: StreamState) -> None:
        state.runs += 1
        state.map_buffers.record()  # state.last_fraction and state.fraction_sum, in place
        state.maps_cleared = False

    # ----------------------------------------------------------------- streams and statistics

    def _stream(self, stream: Hashable, create: bool) -> StreamState | None:
        state = self._streams.get(stream)  # one atomic read; a stream reset meanwhile is retired, and run() retries
        if state is not None or not create:
            return state
        with self._streams_lock:
            state = self._streams.get(stream)
            if state is None and create:
                state = self._streams[stream] = StreamState(len(self._map_nodes))
            return state

    def _ran_stream(self, stream: Hashable, caller: str) -> StreamState:
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
                state.spare_outputs = {}  # a retired stream runs no more

    def state(self, stream: Hashable = DEFAULT_STREAM) -> dict[str, ort.OrtValue]:
        """The live state buffers of `stream` (past input name -> OrtValue), for debugging or saving.

        The next run of the stream writes into these buffers: copy what you want to keep. A model with blocked
        state (convert's layout "blocked") also gets CHANNEL_BLOCK_KEY ("deltaonnx.channel_block"): the op
        library's channel block b that memory is laid out with (-1 where unknown), which load_state checks; a
        padded blocked tensor's (metadata "channels": C, not a multiple of 16) holds roundup(C, b) channels.
        """
        state = self._ran_stream(stream, "state")
        with state.lock:
            kept = state.values if state.mode == "delta" else {}  # a stateless binding's outputs are scratch
            values = {entry.past: kept[entry.present] for entry in self._state_entries if entry.present in kept}
        if self._blocked_state:
            block = -1 if self._channel_block is None else self._channel_block
            values[CHANNEL_BLOCK_KEY] = ort.OrtValue.ortvalue_from_numpy(np.array(block, np.int64))
        return values

    def load_state(self, saved: Mapping[str, Any], stream: Hashable = DEFAULT_STREAM) -> None:
        """Resume `stream` from a state saved with state() (past input name -> array or OrtValue), e.g. one
        moved from another process or kept across a restart of the application.

        The stream is reset first (its statistics too); the arrays are copied now, and its next run feeds them
        as the past state, so it recomputes only what changed since the saved run. Names missing from `saved`
        start empty (those ops recompute everything on that run: exact, only slower). A state saved for
        another input shape counts as no state (rule 1). A Y_prev that does not fit its X_ref makes the run
        fail with the op's error; the stream then starts again from empty state. Blocked state saved under
        another channel block than this session's op library (or without CHANNEL_BLOCK_KEY) starts empty too.
        """
        saved = dict(saved)
        saved_block = saved.pop(CHANNEL_BLOCK_KEY, None)
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
        if self._blocked_state and not self._same_channel_block(saved_block):
            loaded = {name: array for name, array in loaded.items() if name not in self._blocked_state}
        self.reset(stream)
        state = self._stream(stream, create=True)
        with state.lock:
            state.loaded = loaded

    def _same_channel_block(self, saved_block: Any) -> bool:
        if saved_block is None or self._channel_block is None:
            return False
        value = saved_block.numpy() if isinstance(saved_block, ort.OrtValue) else np.asarray(saved_block)
        return value.size == 1 and int(value.reshape(-1)[0]) == self._channel_block

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
        "dense_runs", "stateless_runs", "skipped_runs", "probes_skipped", "twin_samples", "delta_ms_smoothed",
        "twin_ms_smoothed"}``. `mode`: "delta", "dense" (the dense
        twin) or "stateless" (docs/design.md#stateless-runs). `fraction` is the mean of the node's change map;
        `flops` is the node's cost per frame (batch item) as the converter recorded it in the metadata or, for a
        model with dynamic input sizes, at the shapes of the last run (None when neither is known), and
        `flops_saved` = flops * (1 - fraction). The totals add up the nodes with known flops. `skipped_runs`: runs
        since the reset that returned the previous outputs without running ORT (identical frames; counted in `runs`,
        fraction 0).
        `probes_skipped`: probes of delta a check of the frame found not worth making (the fallback's frames moved
        almost everywhere; docs/design.md#dense-fallback).
        `twin_samples`: runs of the dense twin a delta stream made to time it (counted in `dense_runs`);
        `delta_ms_smoothed` and `twin_ms_smoothed`: the smoothed times of ORT's delta runs and of the twin's that the
        fallback compares (docs/design.md#the-clock; None until measured).
        """
        return stream_stats(self._ran_stream(stream, "stats"), stream, self._map_nodes, self._node_info)

    def last_run(self, stream: Hashable = DEFAULT_STREAM) -> LastRun:
        """The last run of `stream` in brief, for a caller that reads every frame: `runs`, `mode`, `dense_runs`,
        `stateless_runs`, `skipped_runs` as stats() gives them, and `fractions`, each map node's `fraction` as a
        float64 array in `nodes` order. A few attribute reads and one small copy (stats() builds a dictionary per
        node: ~10 us of Python whose traces in the caches the stream's next run pays for)."""
        return last_run(self._ran_stream(stream, "last_run"), self._map_node_names)

    def __repr__(self) -> str:
        return (f"DeltaSession(inputs={self._input_names}, outputs={self._output_names}, "
                f"state={len(self._state_entries)} tensors, providers={self.providers})")

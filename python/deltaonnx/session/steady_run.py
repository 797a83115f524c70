"""The run a stream makes most often, prepared: the same single frame input at the same shape, all outputs, no
change map, the state bound. DeltaSession.run's general path spends ~40 us of Python per frame on checks and
lookups whose answers do not change from one such run to the next (cnn1, blocks of 8 frames: 557 -> 510 us, dense
ORT 519 us; docs/results.md#steady-runs); this closure keeps those answers and does only what a run must.

What a run must do is itself costly after ORT's run has emptied the caches: each call into ORT's Python layer
then costs 5-40 us, not 1-3 (yolov8_like at 320, measured after a dense run: binding the frame 43 us, its address
for the stateless frame reference 39 us, the model outputs bound anew, fetched and wrapped 63 us). So the frame
becomes one OrtValue bound to the input and its references, and small model outputs of fixed shape stay bound
to buffers kept here, returned as copies (docs/results.md#sixteenth-session). Where those outputs stay bound and
the compiled module is built, the run is one call into it (ops/pybind/steady_frame_run.cc): every Python line after
ORT's run cost microseconds too (docs/results.md#seventeenth-session); the closure stays for the other cases."""
from __future__ import annotations

from time import perf_counter
from typing import Callable, Optional

import numpy as np

from .stream_state import StreamState

try:  # the prepared run in one call (ops/pybind/steady_frame_run.cc); without the compiled module, the closure
    from .._native import SteadyFrameRun as _SteadyFrameRun
except ImportError:
    _SteadyFrameRun = None

SteadyRun = Callable[[object, object, object], Optional[list]]

# Model outputs up to this many bytes in all, of a shape fixed by the model, are written into buffers kept by the
# prepared run and returned as copies: copying 400 KB (unet_like's mask) cost less than binding, fetching and
# wrapping a buffer ORT allocates anew.
KEPT_OUTPUT_BYTES = 1 << 20


def steady_runner(session, state: StreamState, inputs: dict) -> SteadyRun | None:
    """A closure that runs the next frame of `state` (a stream of `session`, the DeltaSession) like the run just made (None when that run is not one it can
    repeat). It returns None, without running, for any call it is not for (another input, outputs asked by name,
    a stream whose state changed, a frame the identical-frame test is due on), and the general path takes it."""
    binding = state.binding
    if (binding is None or not binding._lean or state.mode not in ("delta", "stateless") or len(inputs) != 1
            or state.map_buffers is None or state.twin_sample):
        return None
    # A gate's change-map input stays bound to the empty map the run just made bound (DeltaSession.run takes this
    # path only for calls without a change map).
    (name, (value, shape)), = inputs.items()
    if type(value) is not np.ndarray:
        return None
    dtype = value.dtype
    c_binding, c_session, cpu, frames = binding._c_binding, binding._c_session, binding._cpu, binding._frames
    value_of = binding._value_of
    if value_of is None:
        return None
    fresh = state.model_outputs
    picks = [(state.output_index[n], n in session._present_names) for n in session._output_names]
    frame_references = [present for present, _ in session._stateless().frame_references(inputs)] \
        if state.mode == "stateless" else []
    kept = _kept_outputs(session, state, fresh, c_binding)
    if kept is not None:
        for output, buffer in kept.items():
            c_binding.bind_output(output, cpu, buffer.dtype, buffer.shape, buffer.ctypes.data)
        fresh = ()
        returned_from = [kept[n] for n in session._output_names]
    bind_input, bind_output = c_binding.bind_ortvalue_input, c_binding.bind_ortvalue_output
    tested = session._identical_plan is not None and state.mode == "delta"
    owned, finish, lock = session._owned, session._finish_run, state.lock
    compiled = _compiled_run(session, state, name, shape, dtype, binding, frame_references, returned_from, tested) \
        if kept is not None else None
    if compiled is not None:
        return compiled

    def run(output_names, input_feed, run_options):
        if output_names is not None or type(input_feed) is not dict or len(input_feed) != 1:
            return None
        frame = input_feed.get(name)
        if type(frame) is not np.ndarray or frame.shape != shape or frame.dtype != dtype \
                or not frame.flags.c_contiguous:
            return None
        with lock:
            if state.steady is not run or (tested and state.check_wait < 2):
                return None  # the state changed meanwhile, or the next run is to be tested: the general path
            try:
                frames[name] = frame  # alive while ORT points at it
                frame_value = value_of(frame, cpu)  # on the frame's memory, no copy
                bind_input(name, frame_value)
                for output in fresh:
                    c_binding.bind_output(output, cpu)
                for present in frame_references:
                    bind_output(present, frame_value)
                start = perf_counter()  # FallbackPolicy's clock, as DeltaSession._run_delta times it
                c_session.run_with_iobinding(c_binding, run_options)
                state.last_seconds = perf_counter() - start
                if kept is not None:
                    returned = [buffer.copy() for buffer in returned_from]
                else:
                    outputs = c_binding.get_outputs()
                    returned = [owned(outputs[i].numpy()) if copy else outputs[i].numpy() for i, copy in picks]
            except BaseException:
                state.drop_state()
                raise
            if tested:
                state.check_wait -= 1  # at least 1 left: the next run is not tested, nothing kept for it
                state.kept_names = None
            finish(state, frame)
            return returned

    return run


def _compiled_run(session, state: StreamState, name: str, shape, dtype, binding, frame_references, returned_from,
                  tested: bool):
    """The same run as steady_runner's closure, its checks, copies and bookkeeping in C++ (steady_frame_run.cc); None
    where the compiled module or its map recorder is missing. The policy is called from there only on the runs it may
    act on: a stateless stream's from the one before a probe is due, a delta stream's on a probe's first runs and where
    the smoothed share of work passes the bound it would leave delta at."""
    recorder = getattr(state.map_buffers, "_recorder", None)
    if _SteadyFrameRun is None or recorder is None:
        return None
    policy = session._policy
    bounds = {}
    if state.mode == "delta":
        enter = policy.STATELESS_ENTER if policy.mode == "stateless" else policy.FALLBACK_ENTER
        bounds = dict(policy_active=policy.mode is not None, settle=policy.SETTLE, enter=enter,
                      node_flops=state.node_flops, flops_total=float(state.flops_total or 0.0),
                      clock=policy.clock, clock_enter=policy.CLOCK_ENTER, smoothing=policy.CLOCK_SMOOTHING,
                      sample_at=policy.TWIN_SAMPLE_AT)
    c_binding = binding._c_binding
    return _SteadyFrameRun(state, name, list(shape), dtype, binding._value_of, binding._cpu,
                           c_binding.bind_ortvalue_input, c_binding.bind_ortvalue_output,
                           binding._c_session.run_with_iobinding, c_binding, frame_references, binding._frames,
                           returned_from, recorder, state.counts, state.smoothed, state.mode == "delta", tested,
                           session._tell_policy, **bounds)


def _kept_outputs(session, state: StreamState, fresh: tuple, c_binding) -> dict | None:
    """Buffers for the model outputs `fresh` (bound anew on every general run), shaped like the run just made,
    when the model fixes every one's shape and they are small (KEPT_OUTPUT_BYTES); else None. A shape the model
    leaves open could change with the data, and a bound buffer of another shape fails the run."""
    if not fresh or any(name not in fresh for name in session._output_names):
        return None  # a model output that is also state comes from ORT's vector, as a copy
    declared = {o.name: o.shape for o in session._outputs}
    outputs = c_binding.get_outputs()
    kept, total = {}, 0
    for name in fresh:
        last = outputs[state.output_index[name]].numpy()
        dims = declared.get(name)
        if dims is None or list(dims) != list(last.shape) or last.dtype.kind not in "biuf":
            return None
        total += last.nbytes
        kept[name] = np.empty_like(last)
    return kept if total <= KEPT_OUTPUT_BYTES else None

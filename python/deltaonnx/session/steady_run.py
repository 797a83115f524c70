"""The run a stream makes most often, prepared: the same single frame input at the same shape, all outputs, no
change map, the state bound. DeltaSession.run's general path spends ~40 us of Python per frame on checks and
lookups whose answers do not change from one such run to the next (cnn1, blocks of 8 frames: 557 -> 510 us, dense
ORT 519 us; docs/results.md#steady-runs); this closure keeps those answers and does only what a run must."""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from .stream_state import StreamState

SteadyRun = Callable[[object, object, object], Optional[list]]


def steady_runner(session, state: StreamState, inputs: dict) -> SteadyRun | None:
    """A closure that runs the next frame of `state` (a stream of `session`, the DeltaSession) like the run just made (None when that run is not one it can
    repeat). It returns None, without running, for any call it is not for (another input, outputs asked by name,
    a stream whose state changed, a frame the identical-frame test is due on), and the general path takes it."""
    binding = state.binding
    if (binding is None or not binding._lean or state.mode not in ("delta", "stateless") or len(inputs) != 1
            or session._change_map_inputs or state.map_buffers is None):
        return None
    (name, (value, shape)), = inputs.items()
    if type(value) is not np.ndarray:
        return None
    dtype = value.dtype
    c_binding, c_session, cpu, frames = binding._c_binding, binding._c_session, binding._cpu, binding._frames
    fresh = state.model_outputs
    picks = [(state.output_index[n], n in session._present_names) for n in session._output_names]
    frame_references = [present for present, _ in session._stateless().frame_references(inputs)] \
        if state.mode == "stateless" else []
    tested = session._identical_plan is not None and state.mode == "delta"
    owned, finish, lock = session._owned, session._finish_run, state.lock

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
                frames[name] = frame
                c_binding.bind_input(name, frame)
                for output in fresh:
                    c_binding.bind_output(output, cpu)
                for present in frame_references:
                    c_binding.bind_output(present, cpu, dtype, shape, frame.ctypes.data)
                c_session.run_with_iobinding(c_binding, run_options)
                outputs = c_binding.get_outputs()
                returned = [owned(outputs[i].numpy()) if copy else outputs[i].numpy() for i, copy in picks]
            except BaseException:
                state.drop_state()
                raise
            if tested:
                state.check_wait -= 1  # at least 1 left: the next run is not tested, nothing kept for it
                state.kept_names = None
            finish(state)
            return returned

    return run

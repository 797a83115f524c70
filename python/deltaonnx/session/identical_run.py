"""A run that provably changes nothing (the identical-frame plan, graph_passes/identical_frames.py): what a
run keeps so its successor can be tested, and the test."""
from __future__ import annotations

import numpy as np

from ..graph_passes.identical_frames import IdenticalFramePlan
from .frame_compare import all_finite, bitwise_equal, gate_sees_nothing, host_array
from .stream_state import StreamState


def keep_for_identical_frames(state: StreamState, plan: IdenticalFramePlan, present_names: set[str],
                              requested: list[str], returned: list[np.ndarray], inputs: dict) -> None:
    """What the next run needs to be skipped: private copies of the outputs (the caller may write into
    theirs), in buffers reused from run to run; in bitwise mode, of the frames too."""
    kept, names = state.kept_outputs, []
    for name, array in zip(requested, returned):
        if name in present_names or name in names:
            continue
        names.append(name)
        buffer = kept.get(name)
        if buffer is not None and buffer.shape == array.shape and buffer.dtype == array.dtype:
            np.copyto(buffer, array)
        else:
            kept[name] = array.copy()
    state.kept_names = frozenset(names)
    state.finite_state = None
    if plan.mode == "bitwise":
        for name, (value, _) in inputs.items():
            frame = host_array(value)
            if frame is None:
                state.previous_frames.pop(name, None)
                continue
            buffer = state.previous_frames.get(name)
            if buffer is not None and buffer.shape == frame.shape and buffer.dtype == frame.dtype:
                np.copyto(buffer, frame)
            else:
                state.previous_frames[name] = frame.copy()

def nothing_changes(state: StreamState, plan: IdenticalFramePlan, present_names: set[str], inputs: dict,
                    requested: list[str], maps: dict) -> bool:
    """Whether this run provably recomputes nothing anywhere (see IdenticalFramePlan); `maps`: the run's
    change maps, {change-map graph input: map}."""
    kept = state.kept_names
    if kept is None or any(name not in kept and name not in present_names for name in requested):
        return False
    if plan.mode == "tau":
        for gate in plan.gates:
            frame = host_array(inputs[gate.input][0])
            reference = state.values[gate.present].numpy()
            if frame is not None and gate.perm is not None:
                # compare in the reference's layout: it is the larger read, and contiguous that way
                frame = frame.transpose(gate.perm) if frame.ndim == len(gate.perm) else None
            if (frame is None or frame.shape != reference.shape or frame.dtype != reference.dtype
                    or not gate_sees_nothing(gate, frame, reference, maps.get(gate.change_map))):
                return False
    else:
        for name, (value, _) in inputs.items():
            frame, previous = host_array(value), state.previous_frames.get(name)
            if frame is None or previous is None or not bitwise_equal(frame, previous):
                return False
    if state.finite_state is None:
        state.finite_state = all(all_finite(state.values[present].numpy()) for present in plan.finite_checks)
    return state.finite_state

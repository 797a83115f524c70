"""Checking what a caller gives DeltaSession.run: the output names, the input feed, the change maps."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import onnxruntime as ort

from ..graph_passes.protocol import STATE_PREFIX

# numpy dtypes of the float tensor types ONNX names (an empty state's, a warm-up run's zeros)
FLOAT_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def checked_output_names(output_names: Sequence[str] | None, model_outputs: list[str]) -> list[str]:
    """The outputs asked for (None: all the model's own), each one of them."""
    if output_names is None:
        return list(model_outputs)
    if isinstance(output_names, str):
        raise TypeError("DeltaSession.run: output_names must be a list of names or None, not a string")
    requested = list(output_names)
    unknown = [n for n in requested if n not in model_outputs]
    if unknown:
        raise ValueError(f"DeltaSession.run: unknown output name(s) {unknown}; the model's outputs are "
                         f"{model_outputs} (state outputs are carried internally)")
    return requested

def checked_change_maps(change_map: Any, gates: Mapping[str, str]) -> dict[str, np.ndarray]:
    """change_map as {change-map graph input: contiguous uint8 array} (the gate checks its shape)."""
    if change_map is None:
        return {}
    if not gates:
        raise ValueError("DeltaSession.run: change_map needs a model converted with the block gate (gate='block', "
                         "convert's default, and a threshold above 0); it has no DeltaGate to take it")
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

def checked_input_feed(input_feed: Mapping[str, Any], names: list[str]) -> dict[str, tuple[Any, tuple]]:
    """{model input: (contiguous array or OrtValue, shape)} in graph order; every input given, none unknown."""
    if type(input_feed) is not dict and not isinstance(input_feed, Mapping):
        raise TypeError(f"DeltaSession.run: input_feed must be a dict of name -> array, "
                        f"not {type(input_feed).__name__}")
    complete = len(input_feed) == len(names) and all(n in input_feed for n in names)
    unknown = [] if complete else [n for n in input_feed if n not in names]
    if unknown:
        state_inputs = [n for n in unknown if n.startswith(STATE_PREFIX)]
        hint = (f"; state inputs such as {state_inputs[0]!r} are fed by DeltaSession itself"
                if state_inputs else "")
        raise ValueError(f"DeltaSession.run: unknown input name(s) {unknown}; the model's inputs are "
                         f"{names}{hint}")
    missing = [] if complete else [n for n in names if n not in input_feed]
    if missing:
        raise ValueError(f"DeltaSession.run: required input(s) {missing} are missing from input_feed "
                         f"(the model's inputs are {names})")
    inputs = {}
    for name in names:  # graph order, so the shape signature does not depend on dict order
        value = input_feed[name]
        if isinstance(value, ort.OrtValue):
            inputs[name] = (value, tuple(value.shape()))
        else:
            array = value if type(value) is np.ndarray and value.flags.c_contiguous \
                else np.ascontiguousarray(value)  # bound in place: no copy when already contiguous
            inputs[name] = (array, array.shape)
    return inputs


def one_frame(inputs: dict) -> np.ndarray | None:
    """The run's frame (`inputs` as checked_input_feed returns them) when it has one input given as a host array:
    what the fallback's check before a probe reads (probe_check.py)."""
    if len(inputs) != 1:
        return None
    (value, _), = inputs.values()
    return value if isinstance(value, np.ndarray) else None

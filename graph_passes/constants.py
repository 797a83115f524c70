"""Recognising constants: initializers and Constant nodes, and values that never change between runs."""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx_ir as ir

# Ops whose output depends only on their input's shape, not its values: between two runs of one
# stream the shape changes only on a resolution change, when every Delta op recomputes everything.
SHAPE_ONLY_OPS = frozenset({"Shape", "Size"})
# Ops that produce a different value on every run even from constant inputs.
NONDETERMINISTIC_OPS = frozenset(
    {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike", "Multinomial", "Bernoulli"}
)


def constant_array(value: Optional[ir.Value]) -> Optional[np.ndarray]:
    """The value's data if it is a constant (an initializer that cannot be overridden, or a Constant
    node's output), else None."""
    if value is None:
        return None
    if value.is_graph_input():  # an initializer listed as a graph input may be fed at run time
        return None
    try:
        tensor = ir.convenience.get_const_tensor(value)
    except ValueError:  # a malformed Constant node: not a constant we can use
        return None
    if tensor is None:
        return None
    try:
        return tensor.numpy()
    except Exception:  # noqa: BLE001 - e.g. external data that cannot be read: not usable as a constant
        return None


def constant_floats(value: Optional[ir.Value]) -> Optional[np.ndarray]:
    """The constant as a flat float64 array, or None."""
    array = constant_array(value)
    if array is None or array.dtype.kind not in "fiu":
        return None
    return np.asarray(array, dtype=np.float64).reshape(-1)


def constant_scalar(value: Optional[ir.Value]) -> Optional[float]:
    """The constant if it holds exactly one number, else None."""
    floats = constant_floats(value)
    if floats is None or floats.size != 1:
        return None
    return float(floats[0])


def constant_ints(value: Optional[ir.Value]) -> Optional[list[int]]:
    array = constant_array(value)
    if array is None or array.dtype.kind not in "iu":
        return None
    return [int(v) for v in array.reshape(-1)]


class FrameInvariance:
    """Decides which values are the same on every run of a stream (at a fixed resolution):
    constants, shapes, and anything computed only from them. Memoised; build one per graph state."""

    def __init__(self) -> None:
        self._memo: dict[ir.Value, bool] = {}

    def __call__(self, value: Optional[ir.Value]) -> bool:
        if value is None:
            return True
        known = self._memo.get(value)
        if known is not None:
            return known
        # Walk up iteratively (deep graphs would overflow recursion), then settle bottom-up.
        stack = [value]
        while stack:
            current = stack[-1]
            if current in self._memo:
                stack.pop()
                continue
            producer = current.producer()
            if current.is_graph_input():
                self._memo[current] = False
                stack.pop()
                continue
            if producer is None:  # an initializer (or a dangling value, treated as constant)
                self._memo[current] = current.const_value is not None or current.is_initializer()
                stack.pop()
                continue
            if producer.domain not in ("", "ai.onnx") or producer.op_type in NONDETERMINISTIC_OPS:
                self._memo[current] = False
                stack.pop()
                continue
            if producer.op_type in SHAPE_ONLY_OPS or producer.op_type == "Constant":
                self._memo[current] = True
                stack.pop()
                continue
            if _has_subgraph(producer):  # If/Loop bodies may read anything: assume they vary
                self._memo[current] = False
                stack.pop()
                continue
            pending = [v for v in producer.inputs if v is not None and v not in self._memo]
            if pending:
                stack.extend(pending)
                continue
            self._memo[current] = all(v is None or self._memo[v] for v in producer.inputs)
            stack.pop()
        return self._memo[value]


def _has_subgraph(node: ir.Node) -> bool:
    return any(
        attr.type in (ir.AttributeType.GRAPH, ir.AttributeType.GRAPHS) for attr in node.attributes.values()
    )

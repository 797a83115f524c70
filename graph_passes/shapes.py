"""Reading the (possibly partial, possibly symbolic) shapes that ONNX shape inference leaves on values."""
from __future__ import annotations

import re
from typing import Optional, Union

import onnx_ir as ir

Dim = Union[int, ir.SymbolicDim]


def rank(value: Optional[ir.Value]) -> Optional[int]:
    if value is None or value.shape is None:
        return None
    return value.shape.rank()


def dims(value: Optional[ir.Value]) -> Optional[list[Dim]]:
    if value is None or value.shape is None:
        return None
    return list(value.shape.dims)


def static_dim(dim: Dim) -> Optional[int]:
    return dim if isinstance(dim, int) else None


def static_dims(value: Optional[ir.Value]) -> Optional[list[Optional[int]]]:
    """The dims with unknown/symbolic ones as None; None if even the rank is unknown."""
    found = dims(value)
    return None if found is None else [static_dim(d) for d in found]


def dims_provably_equal(a: Dim, b: Dim) -> bool:
    """True only when a and b are known to be equal: the same number, or the same named symbol."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if isinstance(a, ir.SymbolicDim) and isinstance(b, ir.SymbolicDim):
        return a.value is not None and a.value == b.value
    return False


def dim_is_one(dim: Dim) -> bool:
    return isinstance(dim, int) and dim == 1


_SHORT_SYMBOL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,15}$")


def shape_text(value: Optional[ir.Value]) -> str:
    """e.g. '1x64x56x56', 'batchx64x?x?' (named dims shown, inferred expressions and unknowns as '?'),
    or '?' when even the rank is unknown."""
    found = dims(value)
    if found is None:
        return "?"
    parts = []
    for d in found:
        if isinstance(d, int):
            parts.append(str(d))
        elif isinstance(d.value, str) and _SHORT_SYMBOL.match(d.value) and not d.value.startswith("unk__"):
            parts.append(d.value)
        else:
            parts.append("?")
    return "x".join(parts) if parts else "scalar"


def map_shape_of(value: Optional[ir.Value]) -> ir.Shape:
    """Shape of the change map of an NCHW tensor: [N, 1, H, W] (dims unknown where the tensor's are)."""
    found = dims(value)
    if found is None or len(found) != 4:
        return ir.Shape([None, 1, None, None])
    return ir.Shape([found[0], 1, found[2], found[3]])

"""A nearest Resize by integer factors inside a blocked region becomes DeltaResize(layout = "blocked")
(docs/ops.md#deltaresize): the region is not left and re-entered around it (a DeltaReorder to NCHW, ORT's Resize of
the whole tensor and a DeltaReorder back, plus a Resize of the change map, before), it redoes only the outputs of
marked pixels, and its map_out is the change map of its output.

Which Resizes: opset 11+, mode nearest, a geometry where output pixel (y, x) reads input pixel (y // fh, x // fw)
exactly at integer scales (asymmetric with floor, as PyTorch's nn.Upsample exports; half_pixel or
pytorch_half_pixel with round_prefer_floor or round_prefer_ceil, whose source coordinate (y + 0.5) / f - 0.5 lies
within half a pixel of y // f), and constant scales [1, 1, fh, fw] (or [fh, fw] with axes [2, 3]) or constant sizes
that are the input's static dims times integers. tests/ops/test_resize.py checks each geometry against ORT's Resize."""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx_ir as ir

from .constants import constant_array
from .delta_ops import DELTA_RESIZE, LAYOUT_BLOCKED
from .graph_edits import NameScope, attribute, numbered_name, remove_unused_constants, substitute
from .protocol import DOMAIN
from .shapes import map_shape_of, static_dims

# (coordinate_transformation_mode, nearest_mode) pairs whose output pixel y reads y // f at integer factors f.
_EXACT_GEOMETRIES = frozenset({("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"),
                               ("half_pixel", "round_prefer_ceil"), ("pytorch_half_pixel", "round_prefer_floor"),
                               ("pytorch_half_pixel", "round_prefer_ceil")})


def nearest_factors(node: ir.Node, opset: int) -> Optional[tuple[int, int]]:
    """(fh, fw) when `node` is a Resize that DeltaResize computes bit for bit (above), else None."""
    if node.op_type != "Resize" or node.domain not in ("", "ai.onnx") or opset < 11:
        return None
    if attribute(node, "mode", "nearest") != "nearest":
        return None
    geometry = (attribute(node, "coordinate_transformation_mode", "half_pixel"),
                attribute(node, "nearest_mode", "round_prefer_floor"))
    if geometry not in _EXACT_GEOMETRIES or attribute(node, "keep_aspect_ratio_policy", "stretch") != "stretch":
        return None
    axes = attribute(node, "axes")
    if axes is not None and [a + 4 if a < 0 else a for a in axes] != [2, 3]:
        return None
    scales = constant_array(node.inputs[2]) if len(node.inputs) > 2 else None
    sizes = constant_array(node.inputs[3]) if len(node.inputs) > 3 else None
    if scales is not None and scales.size > 0:
        factors = _integers(scales.reshape(-1).astype(np.float64))
        prefix = (1, 1) if axes is None else ()
        if factors is None or len(factors) != len(prefix) + 2 or tuple(factors[:len(prefix)]) != prefix:
            return None
        fh, fw = factors[-2:]
    elif sizes is not None and sizes.size == (2 if axes is not None else 4):
        source = static_dims(node.inputs[0])
        if source is None or len(source) != 4 or 0 in source:
            return None
        wanted = [int(s) for s in sizes.reshape(-1)]
        if axes is None and wanted[:2] != source[:2]:
            return None
        height, width = wanted[-2:]
        if height % source[2] or width % source[3]:
            return None
        fh, fw = height // source[2], width // source[3]
    else:
        return None
    return (fh, fw) if fh >= 1 and fw >= 1 else None


def _integers(values: np.ndarray) -> Optional[list[int]]:
    if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
        return None
    return [int(v) for v in values]


def replace_with_delta_resize(graph: ir.Graph, scope: NameScope, node: ir.Node, factors: tuple[int, int]) -> ir.Node:
    """`node` (a Resize reading a blocked tensor) replaced by DeltaResize(X) -> (Y, map_out) with layout "blocked";
    Y takes the Resize output's readers (and its name, were it a model output). Y_prev and map_in come later
    (state_io.py, wire_maps.py)."""
    old = node.outputs[0]
    y = ir.Value(name=scope.take(f"deltaonnx.resized.{old.name}"), type=old.type,
                 shape=ir.Shape(old.shape.dims) if old.shape is not None else None)
    map_out = ir.Value(name=scope.take(f"deltaonnx.map_of.{old.name}"), type=ir.TensorType(ir.DataType.UINT8),
                       shape=map_shape_of(old))
    attributes = {"factors": ir.AttrInt64s("factors", list(factors)), "layout": ir.AttrString("layout", LAYOUT_BLOCKED)}
    resize = ir.Node(DOMAIN, DELTA_RESIZE, [node.inputs[0]], attributes, outputs=[y, map_out],
                     name=numbered_name(scope, DELTA_RESIZE))
    graph.insert_before(node, resize)
    substitute(old, y)
    parameters = [v for v in node.inputs[1:] if v is not None]
    graph.remove(node, safe=True)
    remove_unused_constants(graph, parameters)
    return resize

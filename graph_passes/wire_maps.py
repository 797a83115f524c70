"""Connect each Delta op's (and DeltaReorder's, DeltaResize's) optional change-map input to the map of its data input, building the
maps in between (locality.py has the rules): DeltaMapUnion where maps of equal shape meet, or where the others
are one value per batch item (a squeeze-excite gate's [N,1,1,1] beside the feature map's); where their
shapes may differ otherwise (broadcasting, or shapes inference could not prove equal) a broadcasting uint8 Max
(Cast/Or/Cast before opset 12); and a nearest Resize/Upsample of the map where the tensor is resized (or upsampled by a
ConvTranspose whose kernel is its stride)."""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx_ir as ir

from .protocol import DOMAIN

from .constants import constant_array
from .conversion_context import PLAN_META_KEY
from .delta_ops import (CONV_INPUTS, DELTA_MAP_UNION, MAP_OUT, Y, input_positions, is_channel_gate, is_delta_op,
                        keeps_last_output, sum_input)
from .errors import ConversionError
from .graph_edits import NameScope, add_initializer, attribute
from .locality import ChangeMapPropagation
from .normalize import onnx_opset
from .shapes import dims, dims_provably_equal, map_shape_of, static_dim


def _output_or_per_item(maps: list[ir.Value], output: ir.Value) -> bool:
    """Each map provably of `output`'s shape [N,1,H,W] or of one value per batch item [N,1,1,1] (DeltaMapUnion
    broadcasts those over the item; docs/ops.md#deltamapunion)."""
    wanted = dims(output)
    if wanted is None or len(wanted) != 4:
        return False
    for value in maps:
        found = dims(value)
        if found is None or len(found) != 4 or not dims_provably_equal(found[0], wanted[0]):
            return False
        if not (all(map(dims_provably_equal, found[1:], wanted[1:])) or all(static_dim(d) == 1 for d in found[1:])):
            return False
    return True


class BuiltMaps:
    """The MapAlgebra that creates nodes: each new map is inserted right before the node it serves."""

    def __init__(self, graph: ir.Graph, scope: NameScope, opset: int) -> None:
        self.graph = graph
        self.scope = scope
        self.opset = opset

    def _map_value(self, like: ir.Value) -> ir.Value:
        return ir.Value(
            name=self.scope.take(f"deltaonnx.map_of.{like.name}"),
            type=ir.TensorType(ir.DataType.UINT8),
            shape=map_shape_of(like),
        )

    def _insert(self, at: ir.Node, node: ir.Node) -> None:
        self.graph.insert_before(at, node)

    def union(self, maps: list[ir.Value], *, shapes_equal: bool, like: ir.Value, at: ir.Node) -> ir.Value:
        output = self._map_value(like)
        if shapes_equal or _output_or_per_item(maps, output):
            node = ir.node(DELTA_MAP_UNION, maps, domain=DOMAIN, outputs=[output], name=self.scope.take(f"deltaonnx.union.{at.name}"))
            self._insert(at, node)
        elif self.opset >= 12:  # maps of tensors that broadcast: their broadcasting max is the union
            node = ir.node("Max", maps, outputs=[output], name=self.scope.take(f"deltaonnx.union.{at.name}"))
            self._insert(at, node)
        else:  # uint8 Max needs opset 12; Or broadcasts from opset 7, on bool
            flags = [self._cast(m, ir.DataType.BOOL, at) for m in maps]
            union = flags[0]
            for flag in flags[1:]:
                combined = ir.node("Or", [union, flag], name=self.scope.take(f"deltaonnx.union_or.{at.name}"))
                combined.outputs[0].name = self.scope.take(f"deltaonnx.map_or.{like.name}")
                combined.outputs[0].type = ir.TensorType(ir.DataType.BOOL)
                combined.outputs[0].shape = map_shape_of(like)
                self._insert(at, combined)
                union = combined.outputs[0]
            node = ir.node("Cast", [union], {"to": int(ir.DataType.UINT8)}, outputs=[output],
                           name=self.scope.take(f"deltaonnx.union_cast.{at.name}"))
            self._insert(at, node)
        return output

    def _cast(self, value: ir.Value, dtype: ir.DataType, at: ir.Node) -> ir.Value:
        node = ir.node("Cast", [value], {"to": int(dtype)}, name=self.scope.take(f"deltaonnx.cast.{value.name}"))
        node.outputs[0].name = self.scope.take(f"deltaonnx.as_bool.{value.name}")
        node.outputs[0].type = ir.TensorType(dtype)
        node.outputs[0].shape = value.shape
        self._insert(at, node)
        return node.outputs[0]

    def resize(self, source: ir.Value, *, resize_node: ir.Node, like: ir.Value) -> Optional[ir.Value]:
        op = resize_node.op_type
        attributes = {name: ir.Attr(name, attr.type, attr.value) for name, attr in resize_node.attributes.items()}
        inputs: list[Optional[ir.Value]] = [source]
        has_axes = "axes" in attributes
        if op == "Upsample" and self.opset < 9:
            scales = attribute(resize_node, "scales")
            if scales is None or len(scales) != 4:
                return None
            map_scales = [float(scales[0]), 1.0, float(scales[2]), float(scales[3])]
            attributes["scales"] = ir.AttrFloat32s("scales", map_scales)
        elif op == "Upsample" or (op == "Resize" and self.opset < 11):
            scales = self._map_sizing(resize_node.inputs[1], np.float32, at=resize_node)
            if scales is None:
                return None
            inputs.append(scales)
        else:
            roi = resize_node.inputs[1] if len(resize_node.inputs) > 1 else None
            scales = resize_node.inputs[2] if len(resize_node.inputs) > 2 else None
            sizes = resize_node.inputs[3] if len(resize_node.inputs) > 3 else None
            scale_array = constant_array(scales)
            if scales is not None and not (scale_array is not None and scale_array.size == 0):
                scales = scales if has_axes else self._map_sizing(scales, np.float32, at=resize_node)
                if scales is None:
                    return None
            elif sizes is not None:
                sizes = sizes if has_axes else self._map_sizing(sizes, np.int64, at=resize_node)
                if sizes is None:
                    return None
            else:
                return None
            inputs.extend([roi, scales, sizes] if sizes is not None else [roi, scales])
        output = self._map_value(like)
        node = ir.Node("", op, inputs, attributes, outputs=[output], name=self.scope.take(f"deltaonnx.resize_map.{resize_node.name}"))
        self._insert(resize_node, node)
        return output

    def upsample(self, source: ir.Value, *, factors: tuple[int, int], like: ir.Value, at: ir.Node) -> ir.Value:
        """A nearest Resize (opset 11+) by integer factors: asymmetric coordinates and floor make output pixel
        (y, x) read (y // fh, x // fw) exactly, whatever the factor."""
        roi = add_initializer(self.graph, self.scope.take(f"deltaonnx.map_roi.{at.name}"), np.zeros(0, np.float32))
        scales = add_initializer(self.graph, self.scope.take(f"deltaonnx.map_scales.{at.name}"),
                                 np.array([1.0, 1.0, factors[0], factors[1]], np.float32))
        attributes = {"mode": ir.AttrString("mode", "nearest"),
                      "coordinate_transformation_mode": ir.AttrString("coordinate_transformation_mode", "asymmetric"),
                      "nearest_mode": ir.AttrString("nearest_mode", "floor")}
        output = self._map_value(like)
        node = ir.Node("", "Resize", [source, roi, scales], attributes, outputs=[output],
                       name=self.scope.take(f"deltaonnx.upsample_map.{at.name}"))
        self._insert(at, node)
        return output

    def _map_sizing(self, value: Optional[ir.Value], dtype, *, at: ir.Node) -> Optional[ir.Value]:
        """The 4-entry scales or sizes of an NCHW resize, with the channel entry made 1 for the map."""
        if value is None:
            return None
        array = constant_array(value)
        if array is not None:
            if array.size != 4:
                return None
            mapped = np.asarray(array, dtype=dtype).reshape(-1).copy()
            mapped[1] = 1
            return add_initializer(self.graph, self.scope.take(f"deltaonnx.map_sizing.{at.name}"), mapped)
        # Computed per resolution (e.g. from Shape): value * [1,0,1,1] + [0,1,0,0].
        keep = add_initializer(self.graph, self.scope.take(f"deltaonnx.map_sizing_keep.{at.name}"), np.array([1, 0, 1, 1], dtype=dtype))
        one = add_initializer(self.graph, self.scope.take(f"deltaonnx.map_sizing_one.{at.name}"), np.array([0, 1, 0, 0], dtype=dtype))
        masked = ir.node("Mul", [value, keep], name=self.scope.take(f"deltaonnx.map_sizing_mul.{at.name}"))
        masked.outputs[0].name = self.scope.take(f"deltaonnx.map_sizing_masked.{at.name}")
        result = ir.node("Add", [masked.outputs[0], one], name=self.scope.take(f"deltaonnx.map_sizing_add.{at.name}"))
        result.outputs[0].name = self.scope.take(f"deltaonnx.map_sizing.{at.name}")
        for produced in (masked.outputs[0], result.outputs[0]):
            produced.type = ir.TensorType(ir.DataType.FLOAT if dtype == np.float32 else ir.DataType.INT64)
            produced.shape = ir.Shape([4])
        self._insert(at, masked)
        self._insert(at, result)
        return result.outputs[0]


class WireChangeMaps(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        graph = model.graph
        opset = onnx_opset(model)
        algebra = BuiltMaps(graph, NameScope(graph), opset)
        propagation = ChangeMapPropagation(graph, opset, algebra)
        delta_nodes = [node for node in graph if is_delta_op(node)]
        seeds = {node.outputs[Y]: node.outputs[MAP_OUT] for node in delta_nodes}
        wired = 0

        def connect(node: ir.Node, maps: dict) -> None:
            nonlocal wired
            if not is_delta_op(node) and not keeps_last_output(node) and not is_channel_gate(node):
                return
            z = sum_input(node)
            if z is not None:
                # the sum's map (fuse_residual_sum.py fused only where Z has one): required by the op
                z_map = maps.get(z)
                if z_map is None:
                    raise ConversionError(f"{node.name}: the sum input {z.name} has no change map")
                node.replace_input_with(CONV_INPUTS["map_z"], z_map)
                wired += 1
            change_map = maps.get(node.inputs[0])
            if change_map is None:
                return
            position = input_positions(node.op_type)["map_in"]
            if len(node.inputs) <= position:
                node.resize_inputs(position + 1)
            node.replace_input_with(position, change_map)
            plan = node.meta.get(PLAN_META_KEY)
            if plan is not None:
                plan.has_map_input = True
            wired += 1

        propagation.run(seeds, visit=connect)
        return ir.passes.PassResult(model, modified=bool(wired))

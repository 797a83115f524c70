"""Small, careful edits of an onnx_ir graph: unique names, new initializers and values, replacing a
value by another while keeping the model's output names."""
from __future__ import annotations

import itertools
from typing import Optional

import numpy as np
import onnx_ir as ir


class NameScope:
    """Hands out value and node names that no existing value, initializer, input or node uses."""

    def __init__(self, graph: ir.Graph) -> None:
        self._used: set[str] = set()
        for value in itertools.chain(graph.inputs, graph.outputs, graph.initializers.values()):
            if value.name:
                self._used.add(value.name)
        for node in ir.traversal.RecursiveGraphIterator(graph):
            if node.name:
                self._used.add(node.name)
            for value in node.outputs:
                if value.name:
                    self._used.add(value.name)
            for value in node.inputs:  # values of outer scopes read by subgraphs
                if value is not None and value.name:
                    self._used.add(value.name)

    def take(self, base: str) -> str:
        """`base` itself if free, else `base_1`, `base_2`, ..."""
        name = base
        for i in itertools.count(1):
            if name not in self._used:
                break
            name = f"{base}_{i}"
        self._used.add(name)
        return name

    def reserve(self, name: str) -> None:
        self._used.add(name)

    def is_used(self, name: str) -> bool:
        return name in self._used


def numbered_name(scope: NameScope, prefix: str) -> str:
    """`prefix`_0, `prefix`_1, ...: the first free one (the names a node's state is listed under, like DeltaConv_0)."""
    index = 0
    while scope.is_used(f"{prefix}_{index}"):
        index += 1
    return scope.take(f"{prefix}_{index}")


def add_initializer(graph: ir.Graph, name: str, array: np.ndarray) -> ir.Value:
    """Register a new initializer holding `array` (name must be unique, see NameScope)."""
    tensor = ir.tensor(np.ascontiguousarray(array), name=name)
    value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)
    graph.register_initializer(value)
    return value


def substitute(old: ir.Value, new: ir.Value) -> None:
    """Make every reader of `old` (nodes and graph outputs) read `new`. When `old` is a graph output,
    `new` takes its name and position, so the model's outputs keep their names and order."""
    if old is new:
        return
    if old.is_graph_output():
        if new.is_graph_output():
            raise ValueError(f"cannot merge two graph outputs {old.name!r} and {new.name!r}")
        name = old.name
        old.name = None  # `old` leaves the graph; its name passes to `new`
        old.replace_all_uses_with(new, replace_graph_outputs=True)
        new.name = name
    else:
        old.replace_all_uses_with(new)


def copy_type_and_shape(source: ir.Value, target: ir.Value) -> None:
    if source.type is not None:
        target.type = source.type
    if source.shape is not None:
        target.shape = ir.Shape(source.shape.dims)


def sole_consumer(value: ir.Value) -> Optional[ir.Node]:
    """The one node reading `value` once, if that is its only use and it is not a graph output."""
    if value.is_graph_output():
        return None
    uses = list(value.uses())
    if len(uses) != 1:
        return None
    return uses[0].node


def consumers_are(value: ir.Value, nodes: set) -> bool:
    """True when every use of `value` is by one of `nodes` and it is not a graph output."""
    if value.is_graph_output():
        return False
    return all(use.node in nodes for use in value.uses())


def remove_unused_initializers(graph: ir.Graph, candidates) -> None:
    """Drop the given initializers if nothing reads them any more (e.g. the weights BN folding replaced)."""
    for value in candidates:
        if value is None or not value.is_initializer() or value.is_graph_input() or value.is_graph_output():
            continue
        if not value.uses() and value.name in graph.initializers and graph.initializers[value.name] is value:
            del graph.initializers[value.name]


def remove_unused_constants(graph: ir.Graph, candidates) -> None:
    """Drop initializers and Constant nodes among `candidates` that nothing reads any more."""
    for value in candidates:
        if value is None or value.uses() or value.is_graph_output():
            continue
        producer = value.producer()
        if producer is not None and producer.op_type == "Constant" and producer.graph is graph:
            graph.remove(producer, safe=True)
    remove_unused_initializers(graph, candidates)


def attribute(node: ir.Node, name: str, default=None):
    """A node attribute as a Python value, or `default` when absent."""
    attr = node.attributes.get(name)
    if attr is None:
        return default
    return attr.value

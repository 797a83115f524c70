"""Which state outputs may share one scratch buffer in a run that keeps no state (docs/design.md#stateless-runs).

A run that keeps no state still has every Delta op write its outputs (Y, X_ref_next) into graph outputs, and ORT
gives every graph output memory of its own. When the caller binds those outputs itself, several may point at one
buffer, as ORT's planner lets its own intermediate tensors share memory once they are dead. Two values may share
when one is provably dead before the other is written, whatever order ORT runs the nodes in:

    u and v share (v written by node m) only if u's producer and every node that reads u are ancestors of m.

Every topological order runs the ancestors of m before m, so u is written and read before m writes v. One more
pair may share, in place: v written by a DeltaConv m that reads u as its sum Z (and no other way), every other reader
of u an ancestor of m. m is then u's last reader, and the op adds its convolution onto Z where Z lies (ORT's NCHWc
Conv skips its copy of Z into Y; any other path of the op copies Z aside first, docs/ops.md#the-sum-input). A node
"reads" u when u is its input, when a subgraph of it names u, or when it reads a tensor that may alias u's memory
(ORT lets Reshape, Flatten, Squeeze, Unsqueeze, Identity and Dropout return their input's buffer): those readers are
followed to the end. A value the caller is given (a model output, itself or through such aliases) shares nothing:
a later writer would change it before the run returns.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

import onnx

from .protocol import DELTA_CONV_SUM_INPUT, DOMAIN

# ORT kernels that may return their input's buffer as their output (no copy).
MAY_ALIAS_INPUT = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout"})


def _names_in_subgraphs(node: onnx.NodeProto) -> set[str]:
    """Every value name a node's subgraphs read (their outer-scope values among them)."""
    names: set[str] = set()
    for attribute in node.attribute:
        for graph in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
            for inner in graph.node:
                names.update(i for i in inner.input if i)
                names.update(_names_in_subgraphs(inner))
    return names


class ScratchSharing:
    """The liveness facts of one converted graph for `values` (state outputs), computed once; `groups()` assigns
    them to buffers."""

    def __init__(self, graph: onnx.GraphProto, values: Sequence[str], returned: Iterable[str] | None = None):
        """`returned`: the outputs the caller is given (default: the graph outputs that are not among `values`)."""
        nodes = list(graph.node)
        producer: dict[str, int] = {}
        readers_of: dict[str, set[int]] = {}
        for index, node in enumerate(nodes):
            for name in node.output:
                if name:
                    producer[name] = index
            for name in set(i for i in node.input if i) | _names_in_subgraphs(node):
                readers_of.setdefault(name, set()).add(index)
        self._ancestors = self._all_ancestors(nodes, producer)
        self.values = [v for v in values if v in producer]
        returned = set(returned) if returned is not None else {o.name for o in graph.output} - set(values)
        self._producer = {v: producer[v] for v in self.values}
        self._readers: dict[str, frozenset[int]] = {}
        self.exclusive: set[str] = set()  # values that may be returned to the caller through an alias
        for value in self.values:
            seen, todo, readers = {value}, [value], set()
            while todo:
                for reader in readers_of.get(todo.pop(), ()):
                    readers.add(reader)
                    if nodes[reader].op_type in MAY_ALIAS_INPUT:
                        for out in nodes[reader].output:
                            if out and out not in seen:
                                seen.add(out)
                                todo.append(out)
            self._readers[value] = frozenset(readers)
            if seen & returned:
                self.exclusive.add(value)
        # value -> the value its producer may write in place of: the DeltaConv's sum Z, read by it alone that way
        self._sum_of: dict[str, str] = {}
        for value in self.values:
            node = nodes[self._producer[value]]
            if (node.domain == DOMAIN and node.op_type == "DeltaConv" and node.output[0] == value
                    and len(node.input) > DELTA_CONV_SUM_INPUT and node.input[DELTA_CONV_SUM_INPUT] in self._producer
                    and list(node.input).count(node.input[DELTA_CONV_SUM_INPUT]) == 1):
                self._sum_of[value] = node.input[DELTA_CONV_SUM_INPUT]

    @staticmethod
    def _all_ancestors(nodes: list[onnx.NodeProto], producer: Mapping[str, int]) -> list[frozenset[int]]:
        """Per node, the nodes it depends on, in a topological order found by Kahn's algorithm (no recursion)."""
        parents = [{producer[name] for name in set(n.input) | _names_in_subgraphs(n) if name in producer} - {i}
                   for i, n in enumerate(nodes)]
        children: list[list[int]] = [[] for _ in nodes]
        waiting = [len(p) for p in parents]
        for index, node_parents in enumerate(parents):
            for parent in node_parents:
                children[parent].append(index)
        ready = [i for i, count in enumerate(waiting) if count == 0]
        ancestors: list[frozenset[int]] = [frozenset()] * len(nodes)
        done = 0
        while ready:
            index = ready.pop()
            done += 1
            found: set[int] = set(parents[index])
            for parent in parents[index]:
                found |= ancestors[parent]
            ancestors[index] = frozenset(found)
            for child in children[index]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    ready.append(child)
        if done != len(nodes):
            raise ValueError("the graph has a cycle")
        return ancestors

    def dead_before(self, earlier: str, later: str) -> bool:
        """Whether `earlier` is written and read in full before `later` is written, in every order ORT may run."""
        before = self._ancestors[self._producer[later]]
        return self._producer[earlier] in before and self._readers[earlier] <= before

    def in_place(self, earlier: str, later: str) -> bool:
        """Whether `later` may be written over `earlier` by its producer: `later` is a DeltaConv's Y, `earlier` its
        sum Z, and every other reader of `earlier` runs before that DeltaConv in every order."""
        if self._sum_of.get(later) != earlier:
            return False
        producer = self._producer[later]
        return self._readers[earlier] - {producer} <= self._ancestors[producer]

    def may_share(self, earlier: str, later: str) -> bool:
        """Whether `later` may be written into `earlier`'s buffer (dead before, or written over it in place)."""
        return self.dead_before(earlier, later) or self.in_place(earlier, later)

    def groups(self, sizes: Mapping[str, int]) -> list[list[str]]:
        """The values (those with a size) assigned to buffers: each group's members may share its buffer, whose
        size is the largest member's. In order of writing; each value goes to the free group that fits it most
        tightly (else the largest free one, which grows), or to a new group; a DeltaConv's Y goes to its sum Z's group
        when it may be written there in place, so the op adds its convolution onto Z where Z lies."""
        # by the number of ancestors: a topological order whatever order the graph lists its nodes in
        order = sorted((v for v in self.values if v in sizes), key=lambda v: len(self._ancestors[self._producer[v]]))
        groups: list[list[str]] = []
        capacity: list[int] = []
        for value in order:
            size = sizes[value]
            free = [] if value in self.exclusive else [
                g for g, members in enumerate(groups)
                if members[0] not in self.exclusive and all(self.may_share(m, value) for m in members)]
            fitting = [g for g in free if capacity[g] >= size]
            in_place = [g for g in fitting if self._sum_of.get(value) in groups[g]]
            if in_place:
                chosen = in_place[0]
            elif fitting:
                chosen = min(fitting, key=lambda g: capacity[g])
            elif free:
                chosen = max(free, key=lambda g: capacity[g])
            else:
                groups.append([])
                capacity.append(0)
                chosen = len(groups) - 1
            groups[chosen].append(value)
            capacity[chosen] = max(capacity[chosen], size)
        return groups


def check_groups(sharing: ScratchSharing, groups: Iterable[Sequence[str]]) -> None:
    """Raises if two members of a group may be live at once (a plan edited by hand, or a bug)."""
    for members in groups:
        for i, one in enumerate(members):
            for other in members[:i]:
                if not (sharing.may_share(one, other) or sharing.may_share(other, one)):
                    raise ValueError(f"{other!r} and {one!r} may be live at once")

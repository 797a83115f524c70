"""The check a stream in the fallback makes before it probes delta again (FallbackPolicy.after_fallback_run).

A probe costs two frames at the Delta ops' full cost (mobilenetv3_like on bikes: 2.6 ms where dense ORT takes
1.4). Before one, the frame is compared with the frame before it in bands of rows around every 32nd row. An element
past the gate's bound marks its pixel; the gate marks every output whose window holds it (its kernel's reach, or
the block rule's aligned block), and with every op behind the gate exact, each later op marks every output a
change reaches. So the pixels within each op's reach of a change, weighed by the ops' shares of the conv work, are
(up to the sampling) a floor under the share of work a delta run would redo. Where it exceeds the bound the probe
must stay under, the probe would fail: it is not made. An op behind a global reduction of what the gate passes
(a squeeze-excite block's GlobalAveragePool) reads every pixel through it: it redoes everything whenever the gate
marks anything (mobilenetv3_like: 39% of its conv work before its first such block, 61% behind it).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import onnx
import onnx.numpy_helper

from ..graph_passes.identical_frames import IdenticalFramePlan
from ..graph_passes.protocol import DOMAIN
from .frame_compare import SAMPLE_ROW_STEP

try:  # one pass in the compiled module: numpy's ufuncs took 350-1000 us a check on the caches a run had emptied
    from .._native import probe_marked_shares as _native_marked_shares
except ImportError:  # built without the pybind module: numpy
    _native_marked_shares = None


# Reaches past this many pixels are counted at it: the kept bands stay at most 2 x 15 + 1 rows in every 32.
MAX_REACH = 15
# Ops that pass a change on to the same pixel: the chain from the gate goes on through them.
_POINTWISE = ("DeltaReorder", "Identity")
# Ops whose every output reads every pixel of their input (ONNX domain): a change anywhere changes all they give.
_GLOBAL_POOLS = ("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
_REDUCTIONS = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceL1", "ReduceL2", "ReduceLogSumExp",
               "ReduceSumSquare", "ReduceProd", "ReduceLogSum")


@dataclass(frozen=True)
class ProbeCheck:
    bound: float  # an element further than this from the frame before is marked by the gate
    # Per level of the chain of ops from the gate: the frame pixels (rows, columns) either side of a change whose
    # outputs it marks there, and the level's share of the model's conv work (the shares add up to 1; the last
    # level stands for every op after the chain).
    reaches: tuple[tuple[int, int], ...]
    weights: tuple[float, ...]
    block: int = 0  # the block rule: a marked pixel marks its aligned block of block x block pixels instead
    axes: tuple[int, int] = (2, 3)  # the frame's row and column axes (NCHW; (1, 2) for an NHWC frame)
    # The share of the conv work behind a global reduction of what the gate passes: redone everywhere when the gate
    # marks anything (the weights and it add up to 1).
    everywhere: float = 0.0

    def keep(self, frame: np.ndarray) -> np.ndarray | None:
        """The bands of the frame before the probe (a copy), None for a frame that is not 4-D."""
        return self._bands(frame)[0]

    def work_floor(self, frame: np.ndarray, kept: np.ndarray) -> float:
        """The share of the model's conv work a delta run would redo at least, from the pixels each level marks in
        the sampled rows between `kept` (from keep()) and this frame; 0.0 (the probe is made) for a frame of another
        shape."""
        bands, index = self._bands(frame)
        if bands is None or bands.shape != kept.shape:
            return 0.0
        marked = self.marked_shares if _native_marked_shares is None else self.native_marked_shares
        shares = marked(bands, kept, index.shape)
        floor = sum(weight * share for weight, share in zip(self.weights, shares))
        return float(floor + (self.everywhere if any(share > 0 for share in shares) else 0.0))

    def native_marked_shares(self, bands: np.ndarray, kept: np.ndarray, index_shape: tuple) -> list[float]:
        """marked_shares in one pass of the compiled module (ops/pybind/probe_marks.cc)."""
        return _native_marked_shares(bands, kept, self.bound, self.axes[0], self.axes[1], index_shape[0],
                                     index_shape[1], list(self.reaches), self.block)

    def marked_shares(self, bands: np.ndarray, kept: np.ndarray, index_shape: tuple) -> list[float]:
        """Per level, the share of the sampled rows' pixels it marks (numpy: the reference)."""
        with np.errstate(invalid="ignore", over="ignore"):
            moved = ~(np.abs(np.subtract(bands, kept, dtype=np.float32)) <= np.float32(self.bound))  # NaN moved
        # (batch items, sampled rows, band rows, columns): any channel moved
        moved = np.moveaxis(moved, self.axes, (-2, -1))
        items, width = moved.shape[0], moved.shape[-1]
        moved = moved.reshape(items, -1, moved.shape[-2], width).any(axis=1)
        moved = moved.reshape(items, index_shape[0], index_shape[1], width)
        if self.block:
            rows = moved.any(axis=2)
            padded = -width % self.block
            blocks = np.pad(rows, ((0, 0), (0, 0), (0, padded))).reshape(items, index_shape[0], -1, self.block)
            marked = np.repeat(blocks.any(axis=-1), self.block, axis=-1)[..., :width]
            return [float(np.count_nonzero(marked)) / marked.size]
        middle, shares = index_shape[1] // 2, []  # the band's sampled row
        for reach_rows, reach_columns in self.reaches:
            rows = moved[:, :, middle - reach_rows:middle + reach_rows + 1].any(axis=2)
            marked = rows.copy()
            for step in range(1, reach_columns + 1):
                marked[..., step:] |= rows[..., :-step]
                marked[..., :-step] |= rows[..., step:]
            shares.append(float(np.count_nonzero(marked)) / marked.size)
        return shares

    def _bands(self, frame: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The frame's sampled bands (a copy) and their row indices [sampled row, band offset]; (None, None) for a
        frame that is not 4-D."""
        if frame.ndim != 4:
            return None, None
        index = self._band_rows(frame.shape[self.axes[0]])
        return np.take(frame, index.ravel(), axis=self.axes[0]), index

    def _band_rows(self, height: int) -> np.ndarray:
        """Row indices [sampled row, band offset] of a frame of `height` rows (clipped to the frame)."""
        if self.block:
            return _band_rows(height, SAMPLE_ROW_STEP - SAMPLE_ROW_STEP % self.block or self.block, 0, self.block - 1)
        most = max(rows for rows, _ in self.reaches)
        return _band_rows(height, SAMPLE_ROW_STEP, -most, most)


@functools.lru_cache(maxsize=16)
def _band_rows(height: int, step: int, first: int, last: int) -> np.ndarray:
    """Rows first..last (offsets) around every step-th row of `height`, clipped to the frame (made once a shape)."""
    centers = np.arange(0, height, step)
    rows = np.clip(centers[:, None] + np.arange(first, last + 1)[None, :], 0, height - 1)
    rows.flags.writeable = False
    return rows


def probe_check(plan: IdenticalFramePlan | None, nodes: list[dict], graph: onnx.GraphProto) -> ProbeCheck | None:
    """The check for a converted model, or None where it bounds nothing. It needs a single gate reading the frame
    (the identical-frame plan's tau mode; a run given a change map is not checked) and every converted op exact
    behind it (threshold 0, no inner gate; an op reading the gate's map at most the gate's bound). The gate's bound
    is its tau (rule 2) or the block rule's gate_hard (an element past it marks its block).

    Behind a window gate the change spreads: an op marks every output whose window holds a marked input, so each op
    of the chain from the gate (each the one reader of the one before, a dominator of all after it) marks the frame
    pixels within its receptive field's reach of a change, and every op after the chain at least what its end does.
    The floor weighs each level by its share of the conv work, as the fallback weighs the maps (FLOPs recorded in
    the metadata; without them, the gate alone counts, for all)."""
    if plan is None or plan.mode != "tau" or len(plan.gates) != 1:
        return None
    gate = plan.gates[0]
    bound = float(gate.tau) if gate.block_rule is None else float(gate.block_rule.get("gate_hard", -1.0))
    if not bound >= 0:
        return None
    for node in nodes:
        if node.get("decision") != "converted" or node.get("name") == gate.node:
            continue
        threshold = float(node.get("threshold") or 0.0)
        behind_gate = node.get("gate") == gate.node
        if node.get("inner_gate") is not None or threshold > (bound if behind_gate else 0.0):
            return None
    perm = None if gate.perm is None else list(gate.perm)
    if perm not in (None, [0, 1, 2, 3], [0, 3, 1, 2]):
        return None  # a Transpose that moves the frame's rows or columns elsewhere
    axes = (1, 2) if perm == [0, 3, 1, 2] else (2, 3)  # an NHWC frame read as NCHW, or NCHW as it is
    flops = {n["name"]: n.get("flops") for n in nodes if n.get("decision") == "converted"}
    weighed = all(flops.values())
    readers = _readers(graph)
    if gate.block_rule is not None:
        block = int(gate.block_rule.get("gate_block", 0))
        if block <= 0:
            return None
        everywhere = _share_behind_global_reductions(gate.node, graph, readers, flops, set()) if weighed else 0.0
        return ProbeCheck(bound, ((0, 0),), (1.0 - everywhere,), block, axes, everywhere)
    chain = _chain_from(gate.node, graph, readers)
    if not chain:
        return None
    if not weighed or any(name not in flops for name, _ in chain):
        return ProbeCheck(bound, (chain[0][1],), (1.0,), 0, axes)
    everywhere = _share_behind_global_reductions(gate.node, graph, readers, flops, {name for name, _ in chain})
    total = float(sum(flops.values()))
    weights = [flops[name] / total for name, _ in chain]
    weights[-1] += 1.0 - everywhere - sum(weights)  # every other op after the chain marks at least what its end does
    return ProbeCheck(bound, tuple(reach for _, reach in chain), tuple(weights), 0, axes, everywhere)


def _readers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    """Tensor name -> the nodes that read it."""
    readers: dict[str, list[onnx.NodeProto]] = {}
    for n in graph.node:
        for name in set(n.input):
            if name:
                readers.setdefault(name, []).append(n)
    return readers


def _share_behind_global_reductions(gate_name: str, graph: onnx.GraphProto, readers: dict, flops: dict[str, float],
                                    chain: set[str]) -> float:
    """The share of the conv work (`flops`, all known) of the converted ops behind a global reduction of what the
    gate passes, the chain's ops left out."""
    behind = (_behind_global_reductions(gate_name, graph, readers) & set(flops)) - chain
    return sum(flops[name] for name in behind) / float(sum(flops.values())) if behind else 0.0


def _behind_global_reductions(gate_name: str, graph: onnx.GraphProto, readers: dict) -> set[str]:
    """The nodes downstream of a global reduction (_is_global_reduction) that is itself downstream of the gate."""
    initializers = {t.name: t for t in graph.initializer}
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in [*graph.value_info, *graph.input, *graph.output]
             if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}

    def downstream(starts: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
        seen, order, todo = set(), [], list(starts)
        while todo:
            node = todo.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            order.append(node)
            todo.extend(reader for name in node.output if name for reader in readers.get(name, []))
        return order

    gate = [n for n in graph.node if n.name == gate_name]
    reductions = [n for n in downstream(gate) if _is_global_reduction(n, initializers, ranks)]
    return {n.name for n in downstream([r for reduction in reductions for name in reduction.output if name
                                         for r in readers.get(name, [])])}


def _is_global_reduction(node: onnx.NodeProto, initializers: dict, ranks: dict[str, int]) -> bool:
    """A global pool, or a Reduce* over both of a 4-D tensor's spatial axes (x.mean((2, 3)) of a squeeze-excite
    block): every output reads every pixel. Reduce axes given as a constant only; an unknown rank counts as 4."""
    if node.domain == DOMAIN and node.op_type in ("DeltaGlobalAveragePool", "DeltaChannelGate"):  # squeeze-excite pools
        return True
    if node.domain not in ("", "ai.onnx"):
        return False
    if node.op_type in _GLOBAL_POOLS:
        return True
    if node.op_type not in _REDUCTIONS or not node.input:
        return False
    rank = ranks.get(node.input[0], 4)
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    axes = attributes.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        if node.input[1] not in initializers:
            return False  # computed axes: unknown
        axes = onnx.numpy_helper.to_array(initializers[node.input[1]]).ravel().tolist()
    if axes is None or len(axes) == 0:
        return not attributes.get("noop_with_empty_axes", 0)  # every axis
    return rank == 4 and {int(a) % 4 for a in axes} >= {2, 3}


def _chain_from(gate_name: str, graph: onnx.GraphProto, readers: dict) -> list[tuple[str, tuple[int, int]]]:
    """(node, (rows, columns) reach in frame pixels) for the gate and each Delta op after it that is the one reader
    of the last one's output, through ops that keep pixels where they are; [] when the graph has no such gate."""
    by_name = {n.name: n for n in graph.node}
    chain: list[tuple[str, tuple[int, int]]] = []
    reach, stride = [0, 0], [1, 1]
    node = by_name.get(gate_name)
    while node is not None:
        if node.op_type not in _POINTWISE:
            attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            kernel = list(attributes.get("kernel_shape", [1, 1]))[-2:]
            dilations = list(attributes.get("dilations", [1, 1]))[-2:]
            strides = list(attributes.get("strides", [1, 1]))[-2:]
            if len(kernel) != 2 or len(dilations) != 2 or len(strides) != 2:
                break
            for axis in range(2):
                reach[axis] = min(MAX_REACH, reach[axis] + stride[axis] * ((kernel[axis] - 1) * dilations[axis] // 2))
                stride[axis] *= strides[axis]
            chain.append((node.name, (reach[0], reach[1])))
        following = readers.get(node.output[0], []) if node.output else []
        if len(following) != 1 or not following[0].input or following[0].input[0] != node.output[0]:
            break  # read twice (a residual, a split), or not as the next op's X: the chain ends here
        node = following[0]
        if node.op_type not in _POINTWISE + ("DeltaConv", "DeltaPool") or \
                (node.op_type != "Identity" and node.domain != DOMAIN):
            break
    return chain

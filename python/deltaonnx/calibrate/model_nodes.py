"""The model as calibration sees it: its Delta nodes, the scale of each node's input, the conv work redone."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Container, Iterable, Optional, Sequence

import numpy as np
import onnx
import onnx_ir as ir
import onnxruntime as ort

from ..bench import session_options
from ..graph_passes.plan import reads_model_input
from .levels import GATE_LEVELS, INNER_LEVELS


@dataclass
class NodeCalibration:
    """One Delta node: what it is, its scale and the level chosen for it."""

    name: str  # the Delta node (DeltaConv_3)
    source: str  # the Conv/MaxPool it replaces, the key of the thresholds file
    op: str
    gate: bool  # reads the model input
    scale: float  # input range (gate) or input standard deviation (inner)
    flops: float  # conv FLOPs per frame at the calibration size (0 for pools)
    level: int = 0
    tau: float = 0.0
    fraction: Optional[float] = None  # mean recomputed fraction on the calibration frames

    @property
    def factor(self) -> float:
        return (GATE_LEVELS if self.gate else INNER_LEVELS)[self.level]


def gate_source_nodes(original: onnx.ModelProto, sources: Iterable[str]) -> set[str]:
    """Which source nodes read a model input (possibly through layout-only ops): the converter's own rule."""
    wanted = set(sources)
    model_ir = ir.serde.deserialize_model(original)
    return {node.name for node in model_ir.graph if node.name in wanted and reads_model_input(node)}


def measure_scales(original: onnx.ModelProto, tensors: dict[str, str], gate_tensors: set[str], feeds: list[dict],
                    threads: int) -> dict[str, float]:
    """Scale of each tensor on dense ORT: value range for gate inputs, standard deviation for the others."""
    probe = onnx.ModelProto()
    probe.CopyFrom(original)
    graph_inputs = {i.name for i in probe.graph.input}
    declared = {o.name for o in probe.graph.output}
    for tensor in dict.fromkeys(tensors.values()):
        if tensor not in declared and tensor not in graph_inputs:
            probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(tensor))
            declared.add(tensor)
    session = ort.InferenceSession(probe.SerializeToString(), session_options(threads),
                                   providers=["CPUExecutionProvider"])
    fetched = [t for t in dict.fromkeys(tensors.values()) if t not in graph_inputs]
    moments: dict[str, list] = {t: [] for t in dict.fromkeys(tensors.values())}
    for feed in feeds:
        values = dict(zip(fetched, session.run(fetched, feed))) if fetched else {}
        values.update({name: feed[name] for name in graph_inputs if name in feed})
        for tensor in moments:
            moments[tensor].append(np.asarray(values[tensor], np.float64))
    scales = {}
    for tensor, arrays in moments.items():
        stacked = np.concatenate([a.ravel() for a in arrays])
        stacked = stacked[np.isfinite(stacked)]
        if stacked.size == 0:
            scale = 1.0
        elif tensor in gate_tensors:
            scale = float(stacked.max() - stacked.min())
        else:
            scale = float(stacked.std())
        scales[tensor] = scale if scale > 0 else 1.0  # a constant input: its threshold never matters
    return scales


def work_redone(fractions: dict[str, float], nodes: Sequence[NodeCalibration], dense_flops: float,
                 total_flops: float, uncounted: Container[str] = ()) -> float:
    """FLOP-weighted share of the model's conv work redone: converted convs by their recomputed fraction,
    convs kept dense in full; nodes named in `uncounted` count nothing (a lower bound when their fractions
    are not known)."""
    if total_flops <= 0:
        return float(np.mean(list(fractions.values()))) if fractions else 1.0
    redone = dense_flops + sum(n.flops * fractions.get(n.name, 1.0) for n in nodes if n.name not in uncounted)
    return redone / total_flops


def nodes_below(original: onnx.ModelProto, nodes: Sequence[NodeCalibration]) -> Optional[dict[str, set[str]]]:
    """Delta node -> itself and the Delta nodes that read what it computes, directly or through other nodes (by
    their source nodes in the dense graph): all whose results a change of its threshold can alter. None when the
    graph has subgraphs (If, Loop: they read outer tensors without listing them as inputs)."""
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
           for node in original.graph.node for a in node.attribute):
        return None
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in original.graph.node:
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(node)
    by_source = {n.source: n.name for n in nodes}
    sources = {node.name: node for node in original.graph.node if node.name in by_source}
    below = {}
    for n in nodes:
        reached, seen, pending = {n.source}, set(), list(sources[n.source].output)
        while pending:
            tensor = pending.pop()
            if tensor in seen:
                continue
            seen.add(tensor)
            for consumer in consumers.get(tensor, []):
                reached.add(consumer.name)
                pending.extend(consumer.output)
        below[n.name] = {by_source[name] for name in reached if name in by_source}
    return below

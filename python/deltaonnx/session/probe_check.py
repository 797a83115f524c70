"""The check a stream in the fallback makes before it probes delta again (FallbackPolicy.after_fallback_run).

A probe costs two frames at the Delta ops' full cost (mobilenetv3_like on bikes: 2.6 ms where dense ORT takes
1.4). Before one, the frame is compared with the frame before it in bands of rows around every 32nd row, and the
share of those rows' pixels the gate would mark is counted: an element past the gate's bound marks its pixel,
which marks every output of the gate whose window holds it (a window gate: its kernel's reach; the block rule: the
aligned block). That share is a floor under the share of the gate's output a delta run would redo, and, with every
op behind the gate exact, under the share of every later map (each marks every output a change reaches). Where it
exceeds the bound the probe must stay under, the probe would fail: it is not made."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from ..graph_passes.identical_frames import IdenticalFramePlan
from .frame_compare import SAMPLE_ROW_STEP


@dataclass(frozen=True)
class ProbeCheck:
    bound: float  # an element further than this from the frame before is marked by the gate
    rows: tuple[int, int]  # the band of rows around each sampled row whose changes reach it (offsets, inclusive)
    reach: int  # a window gate: a marked pixel reaches this many columns either side
    block: int  # the block rule: a marked pixel marks its aligned block of columns (0: a window gate)
    axes: tuple[int, int] = (2, 3)  # the frame's row and column axes (NCHW; (1, 2) for an NHWC frame)

    def keep(self, frame: np.ndarray) -> np.ndarray | None:
        """The bands of the frame before the probe (a copy), None for a frame that is not 4-D."""
        if frame.ndim != 4:
            return None
        return np.take(frame, self._band_rows(frame.shape[self.axes[0]]).ravel(), axis=self.axes[0])

    def marked_share(self, frame: np.ndarray, kept: np.ndarray) -> float:
        """The share of the sampled rows' pixels the gate marks between `kept` (from keep()) and this frame; 0.0 (the
        probe is made) for a frame of another shape."""
        if frame.ndim != 4:
            return 0.0
        index = self._band_rows(frame.shape[self.axes[0]])
        bands = np.take(frame, index.ravel(), axis=self.axes[0])
        if bands.shape != kept.shape:
            return 0.0
        with np.errstate(invalid="ignore", over="ignore"):
            moved = ~(np.abs(np.subtract(bands, kept, dtype=np.float32)) <= np.float32(self.bound))  # NaN moved
        # (batch items, band rows, columns): any channel moved
        moved = np.moveaxis(moved, self.axes, (-2, -1))
        items = moved.shape[0]
        moved = moved.reshape(items, -1, *moved.shape[-2:]).any(axis=1)
        width = moved.shape[-1]
        moved = moved.reshape(items, index.shape[0], index.shape[1], width).any(axis=2)  # per sampled row
        if self.block:
            padded = -width % self.block
            blocks = np.pad(moved, ((0, 0), (0, 0), (0, padded))).reshape(items, index.shape[0], -1, self.block)
            marked = np.repeat(blocks.any(axis=-1), self.block, axis=-1)[..., :width]
        else:
            marked = moved.copy()
            for step in range(1, self.reach + 1):
                marked[..., step:] |= moved[..., :-step]
                marked[..., :-step] |= moved[..., step:]
        return float(np.count_nonzero(marked)) / marked.size

    def _band_rows(self, height: int) -> np.ndarray:
        """Row indices [sampled row, band offset] of a frame of `height` rows (clipped to the frame)."""
        step = SAMPLE_ROW_STEP - SAMPLE_ROW_STEP % self.block if self.block else SAMPLE_ROW_STEP
        centers = np.arange(0, height, max(step, 1))
        offsets = np.arange(self.rows[0], self.rows[1] + 1)
        return np.clip(centers[:, None] + offsets[None, :], 0, height - 1)


def probe_check(plan: IdenticalFramePlan | None, nodes: list[dict], graph: onnx.GraphProto) -> ProbeCheck | None:
    """The check for a converted model, or None where it bounds nothing: it needs a single gate reading the frame
    (the identical-frame plan's tau mode; a run given a change map is not checked) and every converted op exact
    behind it (threshold 0, no inner gate; an op reading the gate's map at most the gate's bound). The gate's bound
    is its tau (rule 2) or the block rule's gate_hard (an element past it marks its block)."""
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
    if gate.block_rule is not None:
        block = int(gate.block_rule.get("gate_block", 0))
        return ProbeCheck(bound, (0, block - 1), 0, block, axes) if block > 0 else None
    gate_node = next((n for n in graph.node if n.name == gate.node), None)
    if gate_node is None:
        return None
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in gate_node.attribute}
    kernel = list(attributes.get("kernel_shape", [1, 1]))[-2:]
    dilations = list(attributes.get("dilations", [1, 1]))[-2:]
    if len(kernel) != 2 or len(dilations) != 2:
        return None
    reach_rows, reach_columns = ((k - 1) * d // 2 for k, d in zip(kernel, dilations))
    return ProbeCheck(bound, (-reach_rows, reach_rows), reach_columns, 0, axes)

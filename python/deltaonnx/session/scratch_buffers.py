"""The outputs a run that keeps no state writes its state into: scratch buffers shared as the graph allows
(graph_passes/scratch_sharing.py, docs/design.md#stateless-runs)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from ..graph_passes.metadata import StateEntry
from ..graph_passes.protocol import DOMAIN
from ..graph_passes.scratch_sharing import ScratchSharing
from .state_arena import StateArena

# A frame smaller than this is copied faster than an output is bound to it (see frame_references).
FRAME_REFERENCE_MIN_BYTES = 128 << 10


class StatelessPlan:
    """What stateless runs need of a converted graph, read once: which state outputs may share a buffer, and which
    x_ref outputs may be bound to the frame itself."""

    def __init__(self, graph: onnx.GraphProto, entries: Sequence[StateEntry], input_names: Sequence[str],
                 output_names: Sequence[str]):
        self.sharing = ScratchSharing(graph, [entry.present for entry in entries], returned=output_names)
        x_ref = {entry.node: entry.present for entry in entries if entry.kind == "x_ref"}
        self._frame_readers = [(x_ref[node.name], node.input[0]) for node in graph.node
                               if node.domain == DOMAIN and node.op_type in ("DeltaConv", "DeltaPool")
                               and node.name in x_ref and node.input and node.input[0] in input_names]

    def frame_references(self, inputs: dict) -> list[tuple[str, str]]:
        """(x_ref present, model input) of each DeltaConv/DeltaPool that reads a frame of at least
        FRAME_REFERENCE_MIN_BYTES as X: bound to the frame's own memory, where rule 1 copies nothing
        (ops/common/delta_state.cc skips the copy onto X), X_ref_next costs no copy of the frame, which a stateless
        run would throw away (0.6 MB at 3x224x224)."""
        return [(present, name) for present, name in self._frame_readers
                if not isinstance(inputs[name][0], ort.OrtValue)
                and inputs[name][0].nbytes >= FRAME_REFERENCE_MIN_BYTES]


class ScratchBuffers:
    """One OrtValue per state output, views of a few buffers of one block: the outputs the sharing puts in one
    group are views of the same buffer (the group's largest member's size)."""

    def __init__(self, sharing: ScratchSharing, outputs: Mapping[str, np.ndarray]):
        """`outputs`: each state output as a run wrote it (its shape and dtype are what is kept). A switch back at the
        same input shapes binds the buffers of before (SpareOutputs), so nothing here is reused."""
        sizes = {name: int(array.nbytes) for name, array in outputs.items()}
        groups = sharing.groups(sizes)
        grouped = {name for members in groups for name in members}
        groups += [[name] for name in outputs if name not in grouped]  # outputs the sharing does not know
        layouts = [((max(sizes[name] for name in members),), np.dtype(np.uint8)) for members in groups]
        self.arena = StateArena(layouts)
        self.groups = groups
        self.values: dict[str, ort.OrtValue] = {}
        for members, buffer in zip(groups, self.arena.views):
            for name in members:
                array = outputs[name]
                view = buffer[:sizes[name]].view(array.dtype).reshape(array.shape)
                self.values[name] = ort.OrtValue.ortvalue_from_numpy(view)

    @property
    def nbytes(self) -> int:
        return self.arena.nbytes

"""The outputs a run that keeps no state writes its state into: scratch buffers shared as the graph allows
(graph_passes/scratch_sharing.py, docs/design.md#stateless-runs)."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import onnxruntime as ort

from ..graph_passes.scratch_sharing import ScratchSharing
from .state_arena import StateArena


class ScratchBuffers:
    """One OrtValue per state output, views of a few buffers of one block: the outputs the sharing puts in one
    group are views of the same buffer (the group's largest member's size)."""

    def __init__(self, sharing: ScratchSharing, outputs: Mapping[str, np.ndarray], reuse: "ScratchBuffers | None" = None):
        """`outputs`: each state output as a run wrote it (its shape and dtype are what is kept)."""
        sizes = {name: int(array.nbytes) for name, array in outputs.items()}
        groups = sharing.groups(sizes)
        grouped = {name for members in groups for name in members}
        groups += [[name] for name in outputs if name not in grouped]  # outputs the sharing does not know
        layouts = [((max(sizes[name] for name in members),), np.dtype(np.uint8)) for members in groups]
        self.arena = reuse.arena if reuse is not None and reuse.arena.layouts == layouts else StateArena(layouts)
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

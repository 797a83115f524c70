"""The change maps of one stream in one host buffer, so that counting their marks after a run is one call however
many Delta nodes the model has."""
from __future__ import annotations

import numpy as np
import onnxruntime as ort

from .state_arena import StateArena

try:
    from .._native import MarkRecorder as _MarkRecorder
except ImportError:  # the compiled module is optional: a count_nonzero per map then
    _MarkRecorder = None

class ChangeMapBuffers:
    """Every map output of a stream bound to its own slice of one uint8 buffer. `record()` counts each map's
    nonzero pixels in one call to the compiled module: a `count_nonzero` per map right after a run, on cold
    caches, cost 0.12 ms per frame on yolov8_like's 52 maps, 0.03 ms on cnn1's 4 (benchmarks/session_overhead.py)."""

    def __init__(self, first: list[np.ndarray]):
        """`first`: the maps of the state's first run (ORT allocated them), copied into the buffer."""
        arena = StateArena.holding(first)  # each map on a cache line of one block, as the state's buffers
        self.buffer = arena.block
        self.views = arena.views
        self.values = [ort.OrtValue.ortvalue_from_numpy(view) for view in self.views]
        self._starts = np.array(arena.offsets, dtype=np.int64)
        self._lengths = np.array([array.size for array in first], dtype=np.int64)
        self.sizes = np.maximum(self._lengths, 1).astype(np.float64)  # divisors of marked(): an empty map is 0 of 1

    def record_into(self, last: np.ndarray, sums: np.ndarray) -> None:
        """After every run `record()` sets last[i] to the share of map i marked (0 for an empty map) and adds it to
        sums[i], in place: one call to the compiled module, no numpy operation (each cost ~10 us right after a run
        whose state pushed Python out of the caches)."""
        self._last, self._sums = last, sums
        self._recorder = None if _MarkRecorder is None else _MarkRecorder(
            self.buffer, self._starts, self._lengths, last, sums)

    def record(self) -> None:
        if self._recorder is not None:
            self._recorder.record()
            return
        np.divide(self.marked(), self.sizes, out=self._last)  # an empty map: 0 of 1
        self._sums += self._last

    def marked(self) -> np.ndarray:
        """Per map, the number of its pixels the last run marked (nonzero); numpy (record() counts in the compiled
        module where it is built)."""
        return np.array([np.count_nonzero(view) for view in self.views], dtype=np.int64)

"""One stream's host state in one block of memory, backed by transparent huge pages where the OS offers them.

Every Delta op writes its Y into its own state buffer on every run, and a model holds tens of them (mobilenetv2_like
at 224 px: 15 MB in 31 buffers). ORT allocates those buffers on the first run, on 4 KB pages scattered over its
arena: a frame then walks ~4000 pages, more than the TLB holds, where dense ORT reuses a few buffers. Measured (one
thread, bikes, everything changing, DeltaSession against dense ORT in the same rounds; docs/results.md#state-arena):
resnet18_like 0.80-0.82x -> 0.86-0.88x, mobilenetv2_like 0.75-0.80x -> 0.82-0.83x with the state in 2 MB pages.
"""
from __future__ import annotations

import mmap
import sys

import numpy as np

HUGE_PAGE = 2 << 20  # x86-64's and aarch64's (4 KB granule) transparent huge page
_ALIGN = 64  # each buffer starts on a cache line


def huge_pages_available() -> bool:
    """Whether this process can ask for transparent huge pages (Linux with THP not "never", Python's madvise)."""
    if not sys.platform.startswith("linux") or not hasattr(mmap, "MADV_HUGEPAGE"):
        return False
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


class StateArena:
    """Host buffers of the given shapes and dtypes, each a numpy view of one block: an anonymous mapping aligned to
    HUGE_PAGE with madvise(MADV_HUGEPAGE) when huge pages are available and the block spans at least one, else one
    numpy allocation. The views live as long as the arena (each holds a reference to the block)."""

    def __init__(self, layouts: list[tuple[tuple[int, ...], np.dtype]]):
        self.layouts = [(tuple(shape), np.dtype(dtype)) for shape, dtype in layouts]
        offsets, end = [], 0
        for shape, dtype in layouts:
            offsets.append(end)
            end += -(-int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize // _ALIGN) * _ALIGN
        self.nbytes = end
        self.huge_pages = huge_pages_available() and end >= HUGE_PAGE
        self._mapping = None
        if self.huge_pages:
            # Over-map by one huge page so the block can start on a huge-page boundary (the kernel backs only
            # aligned 2 MB ranges with huge pages); the slack is never touched, so it costs no memory.
            size = -(-end // HUGE_PAGE) * HUGE_PAGE + HUGE_PAGE
            self._mapping = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            raw = np.frombuffer(self._mapping, np.uint8)
            start = -raw.ctypes.data % HUGE_PAGE
            self._mapping.madvise(mmap.MADV_HUGEPAGE, start, size - start)
            block = raw[start:start + end]
        else:
            raw = np.empty(end + _ALIGN, np.uint8)
            start = -raw.ctypes.data % _ALIGN
            block = raw[start:start + end]
        self.block = block
        self.offsets = offsets  # each view's first byte in block
        self.views = [block[offset:offset + int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize]
                      .view(dtype).reshape(shape) for offset, (shape, dtype) in zip(offsets, layouts)]

    @classmethod
    def holding(cls, arrays: list[np.ndarray]) -> "StateArena":
        """A new arena whose views are copies of `arrays`. (A state dropped and rebuilt at the same shapes, as the
        fallback's probes do, binds its old block again instead: SpareOutputs, stream_state.py.)"""
        arena = cls([(tuple(a.shape), a.dtype) for a in arrays])
        for view, array in zip(arena.views, arrays):
            np.copyto(view, array)
        return arena

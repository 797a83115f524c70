"""StateArena (python/deltaonnx/session/state_arena.py): a stream's host state in one block, on huge pages where the
OS offers them, and DeltaSession keeping its state there."""
from __future__ import annotations

import numpy as np
import pytest

from deltaonnx.graph_passes.protocol import CHANNEL_BLOCK_KEY
from deltaonnx.session.state_arena import HUGE_PAGE, StateArena, huge_pages_available


def _mapping_flags(address: int) -> list[str]:
    """The VmFlags of the mapping of this process that holds `address` (Linux /proc/self/smaps)."""
    flags, inside = None, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                low, high = (int(x, 16) for x in head.split("-"))
                inside = low <= address < high
            elif inside and head == "VmFlags:":
                flags = line.split()[1:]
    assert flags is not None, "no mapping holds the arena"
    return flags


def test_views_are_aligned_disjoint_and_in_one_block():
    layouts = [((1, 16, 7, 5), np.float32), ((1, 1, 9, 9), np.uint8), ((0, 0, 0, 0), np.float32),
               ((2, 3, 4, 5), np.float32)]
    arena = StateArena(layouts)
    base, end = arena.block.ctypes.data, arena.block.ctypes.data + arena.block.nbytes
    spans = []
    for view, (shape, dtype) in zip(arena.views, layouts):
        assert view.shape == shape and view.dtype == dtype and view.flags.c_contiguous
        assert view.ctypes.data % 64 == 0
        assert base <= view.ctypes.data and view.ctypes.data + view.nbytes <= end
        spans.append((view.ctypes.data, view.ctypes.data + view.nbytes))
    for (a0, a1), (b0, b1) in zip(sorted(spans), sorted(spans)[1:]):
        assert a1 <= b0, "two state buffers overlap"
    for i, view in enumerate(arena.views):  # writing one leaves the others as they were
        view[...] = i + 1
    for i, view in enumerate(arena.views):
        assert np.all(view == i + 1)


def test_holding_copies_the_arrays():
    arrays = [np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4), np.ones((1, 1, 5, 5), np.uint8)]
    arena = StateArena.holding(arrays)
    for view, array in zip(arena.views, arrays):
        np.testing.assert_array_equal(view, array)
        assert not np.shares_memory(view, array)


@pytest.mark.skipif(not huge_pages_available(), reason="no transparent huge pages on this machine")
def test_a_large_arena_asks_for_huge_pages_on_a_huge_page_boundary():
    arena = StateArena([((1, 64, 112, 112), np.float32), ((1, 16, 56, 56), np.float32)])
    assert arena.huge_pages
    assert arena.block.ctypes.data % HUGE_PAGE == 0
    assert "hg" in _mapping_flags(arena.block.ctypes.data), "madvise(MADV_HUGEPAGE) was not applied to the block"
    small = StateArena([((1, 8, 8, 8), np.float32)])
    assert not small.huge_pages  # under one huge page: a plain allocation


def test_the_session_keeps_every_state_buffer_in_its_arena(cpu_op_library):
    import deltaonnx
    from deltaonnx import DeltaSession
    from zoo import BUILDERS

    session = DeltaSession(deltaonnx.convert(BUILDERS["resnet18_like"]((64, 64)), threshold=0), dense_fallback=False, stateless_runs=False)
    frame = np.random.default_rng(3).random((1, 3, 64, 64), dtype=np.float32)
    for step in range(3):
        session.run(None, {"input": frame + step})
        arena = session._streams["default"].arena  # noqa: SLF001 - where the state lives is the point
        assert arena is not None
        low, high = arena.block.ctypes.data, arena.block.ctypes.data + arena.block.nbytes
        state = {name: value for name, value in session.state().items() if name != CHANNEL_BLOCK_KEY}
        assert len(state) > 1
        for name, value in state.items():
            assert low <= value.data_ptr() < high, f"{name} is not in the stream's arena"


def test_a_dropped_state_leaves_its_block_for_the_next_state_of_the_same_shapes(cpu_op_library):
    """The dense fallback drops a stream's state and probes from empty state at the same shapes: the new state
    goes into the old block (no new mapping to fault in); a state of other shapes gets a block of its own."""
    import deltaonnx
    from deltaonnx import DeltaSession
    from zoo import BUILDERS

    session = DeltaSession(deltaonnx.convert(BUILDERS["resnet18_like"](), threshold=0), dense_fallback=False, stateless_runs=False)
    rng = np.random.default_rng(5)
    frame = rng.random((1, 3, 64, 64), dtype=np.float32)
    session.run(None, {"input": frame})
    stream = session._streams["default"]  # noqa: SLF001
    block = stream.arena
    stream.drop_state()  # as the fallback does
    assert stream.arena is None and stream.spare_outputs["delta"].arena is block
    session.run(None, {"input": frame})
    assert stream.arena is block and "delta" not in stream.spare_outputs
    session.reset()
    assert stream.spare_outputs == {} and stream.arena is None


def test_a_state_of_other_shapes_gets_a_block_of_its_own(cpu_op_library):
    from test_session import converted_model  # the hand-written converted model, free sizes

    from deltaonnx import DeltaSession

    session = DeltaSession(converted_model(), dense_fallback=False, stateless_runs=False)
    rng = np.random.default_rng(6)
    session.run(None, {"image": rng.random((1, 3, 16, 20), dtype=np.float32)})
    stream = session._streams["default"]  # noqa: SLF001
    block = stream.arena
    session.run(None, {"image": rng.random((1, 3, 24, 12), dtype=np.float32)})  # a new resolution drops the state
    other = stream.arena
    assert other is not None and other is not block
    session.run(None, {"image": rng.random((1, 3, 16, 20), dtype=np.float32)})  # back: the spare is the other's
    assert stream.arena is not None and stream.arena is not other

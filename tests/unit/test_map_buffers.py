"""DeltaSession's change maps in one buffer (session/map_buffers.py): each map its own aligned slice, and the marks
counted per map, by the compiled module and by its numpy fallback alike."""
from __future__ import annotations

import numpy as np
import pytest

from deltaonnx.session import map_buffers
from deltaonnx.session.map_buffers import ChangeMapBuffers

# Sizes a model's maps take: a tail under a word (7), empty, one word, one cache line and one past, several lines.
SHAPES = [(1, 1, 3, 7), (1, 1, 0, 5), (1, 1, 2, 4), (2, 1, 4, 8), (1, 1, 5, 13), (1, 1, 40, 40)]


def _maps(rng):
    # every nonzero byte counts, whatever its value (1 is what the ops write)
    return [rng.choice(np.array([0, 0, 1, 2, 255], np.uint8), size=shape) for shape in SHAPES]


@pytest.fixture(params=["compiled", "numpy"])
def counting(request, monkeypatch):
    if request.param == "numpy":
        monkeypatch.setattr(map_buffers, "_count_marks", None)
    elif map_buffers._count_marks is None:
        pytest.skip("the compiled module is not built")
    return request.param


def test_each_map_counts_its_own_marks(rng, counting):
    first = _maps(rng)
    maps = ChangeMapBuffers(first)
    assert [v.shape for v in maps.views] == SHAPES
    assert all(np.array_equal(view, array) for view, array in zip(maps.views, first))  # the first run's maps kept
    assert maps.marked().tolist() == [np.count_nonzero(a) for a in first]
    for view, value in zip(maps.views, maps.values):  # what ORT writes through the bound values, the views show
        assert value.numpy().ctypes.data == view.ctypes.data
        view[...] = rng.integers(0, 2, view.shape, dtype=np.uint8)
    assert maps.marked().tolist() == [np.count_nonzero(v) for v in maps.views]
    assert maps.sizes.tolist() == [max(int(np.prod(s)), 1) for s in SHAPES]


def test_maps_start_on_cache_lines_and_never_share_bytes(rng):
    maps = ChangeMapBuffers(_maps(rng))
    filled = [v for v in maps.views if v.size]
    assert all(v.ctypes.data % 64 == 0 for v in filled)
    for view in filled:  # a map written in full leaves every other map as it was
        others = [v.copy() for v in maps.views if v is not view]
        view[...] = 7
        assert all(np.array_equal(a, v) for a, v in zip(others, [v for v in maps.views if v is not view]))


def test_count_marks_refuses_a_slice_outside_the_buffer():
    if map_buffers._count_marks is None:
        pytest.skip("the compiled module is not built")
    buffer = np.ones(16, np.uint8)
    assert map_buffers._count_marks(buffer, np.array([0, 8]), np.array([8, 8])).tolist() == [8, 8]
    with pytest.raises(ValueError, match="leaves the buffer of 16 bytes"):
        map_buffers._count_marks(buffer, np.array([8]), np.array([9]))

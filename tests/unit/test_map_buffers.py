"""DeltaSession's change maps in one buffer (session/map_buffers.py): each map its own aligned slice, and the marks
recorded per map, by the compiled module (MarkRecorder) and by its numpy fallback alike."""
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
        monkeypatch.setattr(map_buffers, "_MarkRecorder", None)
    elif map_buffers._MarkRecorder is None:
        pytest.skip("the compiled module is not built")
    return request.param


def test_each_map_counts_its_own_marks(rng):
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


@pytest.mark.parametrize("size", [8159, 8160, 8192, 8193, 16384, 20000])
def test_count_marks_past_the_counting_lanes_limit(size):
    """The compiled count adds in byte lanes and sums them before any could pass 255 (ops/common/change_map.cc):
    a map marked everywhere, around and past that stretch (32 lanes x 255 steps = 8160 bytes), counts every byte
    (the recorded share is exactly 1)."""
    if map_buffers._MarkRecorder is None:
        pytest.skip("the compiled module is not built")
    buffer = np.full(size + 3, 255, np.uint8)
    for start in (0, 3):  # aligned and not
        last, sums = np.zeros(1), np.zeros(1)
        map_buffers._MarkRecorder(buffer, np.array([start]), np.array([size]), last, sums).record()
        assert last.tolist() == [1.0]


def test_record_writes_each_maps_share_in_place_and_adds_it_up(rng, counting):
    """record() after each run: last[i] = the marked share of map i (an empty map: 0), sums[i] += last[i], both
    written into the arrays given once (the stream's statistics), by the compiled recorder and by numpy alike."""
    first = _maps(rng)
    maps = ChangeMapBuffers(first)
    maps.record_into(last := np.zeros(len(SHAPES)), sums := np.zeros(len(SHAPES)))  # `counting` chose the recorder
    expected_sums = np.zeros(len(SHAPES))
    for _ in range(3):
        for view in maps.views:
            view[...] = rng.choice(np.array([0, 1, 7], np.uint8), size=view.shape)
        maps.record()
        shares = np.array([np.count_nonzero(v) / v.size if v.size else 0.0 for v in maps.views])
        expected_sums += shares
        np.testing.assert_allclose(last, shares)
        np.testing.assert_allclose(sums, expected_sums)


def test_recorder_refuses_arrays_it_would_have_to_copy():
    """A float32 (or strided) statistics array would be converted to a copy, which would take the writes."""
    if map_buffers._MarkRecorder is None:
        pytest.skip("the compiled module is not built")
    buffer, starts, sizes = np.ones(16, np.uint8), np.array([0, 8]), np.array([8, 8])
    with pytest.raises(TypeError):
        map_buffers._MarkRecorder(buffer, starts, sizes, np.zeros(2, np.float32), np.zeros(2))
    with pytest.raises(TypeError):
        map_buffers._MarkRecorder(buffer, starts, sizes, np.zeros(4)[::2], np.zeros(2))
    with pytest.raises(ValueError, match="leaves the buffer of 16 bytes"):
        map_buffers._MarkRecorder(buffer, starts, np.array([8, 9]), np.zeros(2), np.zeros(2))


def test_a_run_marking_everything_is_recorded_as_counting_would(rng):
    """record_all_marked(), the record of a stateless run (every map marks all its pixels; the compiled prepared run,
    ops/pybind/steady_frame_run.cc), writes what record() counts on maps marked everywhere: 1 per map, 0 for an empty
    one, added to the sums; it reads no map, so a map left unmarked does not change it."""
    if map_buffers._MarkRecorder is None:
        pytest.skip("the compiled module is not built")
    maps = ChangeMapBuffers(_maps(rng))
    counted_last, counted_sums = np.zeros(len(SHAPES)), np.zeros(len(SHAPES))
    maps.record_into(counted_last, counted_sums)
    for view in maps.views:
        view[...] = 1
    maps.record()
    maps.record()
    all_last, all_sums = np.zeros(len(SHAPES)), np.zeros(len(SHAPES))
    recorder = map_buffers._MarkRecorder(maps.buffer, maps._starts, maps._lengths, all_last, all_sums)
    recorder.record_all_marked()
    recorder.record_all_marked()
    assert all_last.tolist() == counted_last.tolist() == [1.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    assert all_sums.tolist() == counted_sums.tolist()

"""The identical-frame test's sampled look (session/frame_compare.py): the native pass answers as numpy's."""
import numpy as np
import pytest

from deltaonnx.session import frame_compare
from deltaonnx.session.frame_compare import _block_exceeds, _blocks, sampled_rows_exceed

native = pytest.importorskip("deltaonnx._native")


def setup_module():
    assert frame_compare._native_sampled_rows_exceed is not None  # else the tests below compare numpy with itself


def test_native_sampled_look_agrees_with_numpy():
    """Random shapes with and without a long axis (>= 64 entries: every 32nd index of the first is read), one element
    changed by 0.2, made NaN or Inf, or none, anywhere (on a sampled row or not), at bounds 0, 0.1 and 0.5."""
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(2000):
        shape = (224,) * 4
        while np.prod(shape) > 200_000:
            shape = tuple(int(n) for n in rng.choice([1, 2, 3, 7, 33, 64, 65, 100, 224], size=rng.integers(1, 5)))
        frame = rng.random(shape, dtype=np.float32)
        reference = frame.copy()
        kind = int(rng.integers(0, 4))
        if kind:
            at = tuple(int(rng.integers(0, n)) for n in shape)
            reference[at] = [np.nan, np.inf, frame[at] + 0.2][kind - 1]
        bound = float(rng.choice([0.0, 0.1, 0.5]))
        want = _block_exceeds(frame, reference, _blocks(frame.shape)[0], bound)
        assert sampled_rows_exceed(frame, reference, bound) == want, (shape, kind, bound)  # the native pass
        seen.add(want)
    assert seen == {True, False}


def test_a_change_off_the_sampled_rows_is_left_to_the_full_test():
    frame = np.zeros((1, 3, 224, 224), np.float32)
    reference = frame.copy()
    reference[0, 1, 33, 5] = np.nan  # row 33: not a multiple of 32
    assert not sampled_rows_exceed(frame, reference, 0.0)
    reference[0, 1, 64, 5] = 1.0
    assert sampled_rows_exceed(frame, reference, 0.0)
    assert not sampled_rows_exceed(frame, reference, 1.0)
    assert native.sampled_rows_exceed(frame, reference, 0.0, -1, 32)  # every element: row 33's NaN too

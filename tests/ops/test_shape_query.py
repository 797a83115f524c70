"""The ops read tensor shapes through ORT's GetTensorElementTypeAndShapeDataReference (C API 24) when the running
ORT serves it, else through the allocating GetTensorTypeAndShape (ops/op_definition/shape_reference.h). Both
ways must read the same shapes: the same outputs, the same rule 1 on state of another shape, the same errors
naming the shape. The way is decided once per process, so each runs in a process of its own."""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap

import onnxruntime as ort
import pytest

import deltaonnx

HERE = os.path.dirname(os.path.abspath(__file__))

# Runs in a fresh process: a DeltaConv with state over three frames, a state of another shape, a state of 9
# dimensions, a wrong X and a wrong map; prints the way shapes were read.
CHECK = textwrap.dedent("""
    import ctypes, sys
    import numpy as np
    sys.path.insert(0, {helpers!r})
    import deltaonnx
    from deltaonnx import reference as ref
    from builders import EMPTY, conv_model, op_session
    rng = np.random.default_rng(0)
    W = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    sess = op_session(conv_model(dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), W=W), deltaonnx.library_path())
    x_ref, y_prev = EMPTY, EMPTY
    for i in range(3):
        x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
        if i == 2:
            x[:, :, 1:3, 2:4] += 1.0
        y, x_ref, map_out = sess.run(None, {{"X": x, "X_ref": x_ref, "Y_prev": y_prev}})
        np.testing.assert_allclose(y, ref.conv2d(x, W, None, pads=[1, 1, 1, 1]), rtol=1e-4, atol=1e-5)
        y_prev = y
    assert map_out.all()  # a fresh random frame changes everywhere
    x = x_ref.copy(); x[0, 0, 4, 5] += 1.0  # one pixel: only its window is marked
    y, _, map_out = sess.run(None, {{"X": x, "X_ref": x_ref, "Y_prev": y_prev}})
    np.testing.assert_allclose(y, ref.conv2d(x, W, None, pads=[1, 1, 1, 1]), rtol=1e-4, atol=1e-5)
    assert map_out.sum() == 4 and map_out[0, 0, 3:, 4:].all(), map_out
    other = np.zeros((1, 2, 5, 7), np.float32)  # state of another shape: rule 1, everything
    _, _, map_out = sess.run(None, {{"X": x, "X_ref": other, "Y_prev": np.zeros((1, 3, 5, 7), np.float32)}})
    assert map_out.all()
    for feed, text in [({{"X": np.zeros((1, 2, 5, 6, 1, 1, 1, 1, 1), np.float32), "X_ref": EMPTY, "Y_prev": EMPTY}},
                        "X must be 4-D NCHW, got shape [1,2,5,6,1,1,1,1,... (9 dimensions)]"),
                       ({{"X": np.zeros((1, 2, 7), np.float32), "X_ref": EMPTY, "Y_prev": EMPTY}},
                        "X must be 4-D NCHW, got shape [1,2,7]")]:
        try:
            sess.run(None, feed)
        except Exception as e:
            assert text in str(e), str(e)
        else:
            raise AssertionError("no error for " + text)
    print(ctypes.CDLL(deltaonnx.library_path()).DeltaonnxShapesByReference())
""")


def _run_check(env_value: str | None) -> str:
    env = dict(os.environ)
    env.pop("DELTAONNX_SHAPE_QUERY", None)
    if env_value is not None:
        env["DELTAONNX_SHAPE_QUERY"] = env_value
    script = CHECK.format(helpers=os.path.join(HERE, "..", "helpers"))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def _ort_serves_api_24() -> bool:
    major, minor = (int(p) for p in ort.__version__.split(".")[:2])
    return (major, minor) >= (1, 24)


@pytest.mark.parametrize("way", ["reference", "allocate"])
def test_both_ways_of_reading_shapes_read_the_same(way):
    used = _run_check(None if way == "reference" else "allocate")
    if way == "allocate":
        assert used == "0"
    elif _ort_serves_api_24():
        assert used == "1", "ORT serves C API 24, yet the ops fell back to the allocating shape query"
    else:
        assert used == "0"


def test_the_way_is_reported_only_after_registration():
    """Before any session registers the library nothing is decided: the query says 0, never a guess."""
    script = ("import ctypes, deltaonnx; "
              "print(ctypes.CDLL(deltaonnx.library_path()).DeltaonnxShapesByReference())")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "0", done.stderr[-2000:]

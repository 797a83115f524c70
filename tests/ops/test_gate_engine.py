"""DeltaGate's C++ engine (ops/delta_gate, through deltaonnx._native) against the numpy reference
(reference.delta_gate), bit for bit, on every SIMD variant of the kernel table."""
from __future__ import annotations

import numpy as np
import pytest

from builders import EMPTY
from deltaonnx import reference as ref

native = pytest.importorskip("deltaonnx._native")
VARIANTS = ["scalar", "avx2", "avx512", "neon"]


def variant(simd: str) -> str:
    if simd not in native.simd_variants():
        pytest.skip(f"{simd} not supported here")
    return simd


def frames(rng, shape, count, noise=0.08):
    """A noisy static scene with a moving bright patch, a NaN now and then, and values right at the edge of
    the thresholds (0.1 exactly) so the rounding order matters."""
    base = rng.uniform(-1, 1, shape).astype(np.float32)
    for i in range(count):
        frame = base + rng.normal(0, noise, shape).astype(np.float32)
        y, x = (3 * i) % shape[2], (5 * i) % shape[3]
        frame[:, :, y:y + 5, x:x + 6] += 0.9
        if i % 3 == 2:
            frame[0, rng.integers(shape[1]), rng.integers(shape[2]), rng.integers(shape[3])] = np.nan
        yield frame


@pytest.mark.parametrize("simd", VARIANTS)
@pytest.mark.parametrize("rule, k, tau, hard", [("pixel", 1, 0.1, None), ("block", 4, 0.1, 0.3), ("block", 3, 0.05, 0.3),
                                                ("block", 8, 0.02, 0.5), ("block", 1, 0.1, 0.2), ("block", 4, 0.0, 0.0)])
@pytest.mark.parametrize("shape", [(1, 3, 29, 37), (2, 1, 16, 24), (1, 5, 7, 70)])
def test_engine_equals_reference_on_sequences(simd, rule, k, tau, hard, shape):
    simd = variant(simd)
    rng = np.random.default_rng(hash((rule, k, shape)) % 2**32)
    state_ref = state_cpp = EMPTY
    for frame in frames(rng, shape, 6):
        want = ref.delta_gate(frame, state_ref, rule=rule, threshold=tau, gate_block=k, gate_hard=hard)
        got = native.delta_gate(frame, state_cpp, rule=rule, threshold=tau, gate_block=k,
                                gate_hard=-1.0 if hard is None else hard, simd=simd)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])  # NaNs in the same places too
        state_ref, state_cpp = want[0], got[0]


@pytest.mark.parametrize("simd", VARIANTS)
@pytest.mark.parametrize("resolution", ["frame", "block"])
def test_engine_with_external_map_equals_reference(simd, resolution):
    simd = variant(simd)
    rng = np.random.default_rng(7)
    shape, k = (2, 3, 21, 35), 4
    state_ref = state_cpp = EMPTY
    for frame in frames(rng, shape, 5):
        # per pixel at frame resolution: blocks partly marked (their unmarked pixels must not count)
        map_in = (rng.random((2, 1, 6, 9) if resolution == "block" else (2, 1, 21, 35)) < 0.5).astype(np.uint8)
        want = ref.delta_gate(frame, state_ref, map_in, threshold=0.05, gate_block=k, gate_hard=0.2)
        got = native.delta_gate(frame, state_cpp, map_in, threshold=0.05, gate_block=k, gate_hard=0.2, simd=simd)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
        state_ref, state_cpp = want[0], got[0]


@pytest.mark.parametrize("simd", VARIANTS)
def test_rounding_order_of_block_sums(simd):
    """Values whose float32 sum depends on the order: the engine must add as the reference does (rows top to
    bottom per column, then columns left to right), or the verdict flips at the threshold."""
    simd = variant(simd)
    X_ref = np.zeros((1, 1, 4, 4), np.float32)
    X = np.array([[1e8, -1e8, 0.75, 0.75]] * 4, np.float32)[None, None]
    X[0, 0, 0] = [1e8, 1.0, -1e8, 0.5]
    want = ref.delta_gate(X, X_ref, threshold=0.1, gate_block=4, gate_hard=3e8)
    got = native.delta_gate(X, X_ref, threshold=0.1, gate_block=4, gate_hard=3e8, simd=simd)
    np.testing.assert_array_equal(got[1], want[1])


def test_in_place_run_writes_only_changed_pixels():
    rng = np.random.default_rng(3)
    X_ref = rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32)
    X = X_ref.copy()
    X[:, :, 4:8, 8:12] += 1.0
    want = ref.delta_gate(X, X_ref.copy(), threshold=0.1, gate_block=4, gate_hard=0.3)
    state = X_ref.copy()
    gated, map_out = native.delta_gate(X, state, threshold=0.1, gate_block=4, gate_hard=0.3, x_gated_out=state)
    assert np.shares_memory(gated, state)
    np.testing.assert_array_equal(state, want[0])
    np.testing.assert_array_equal(map_out, want[1])


@pytest.mark.parametrize("kwargs, message", [
    (dict(rule="tiles"), "rule must be"),
    (dict(threshold=-1.0), "threshold"),
    (dict(threshold=float("nan")), "threshold"),
    (dict(gate_block=0), "gate_block"),
    (dict(threshold=0.2, gate_hard=0.1), "gate_hard"),
    (dict(map_in=np.ones((1, 1, 3, 3), np.uint8)), "change map must be"),
])
def test_bad_arguments_are_clear_errors(kwargs, message):
    X = np.zeros((1, 1, 8, 8), np.float32)
    with pytest.raises(ValueError, match=message):
        native.delta_gate(X, X, **kwargs)


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("rule, k, tau, hard, resolution", [("pixel", 1, 0.1, None, None), ("block", 4, 0.1, 0.3, None),
                                                            ("block", 3, 0.05, 0.3, "frame"), ("block", 4, 0.05, 0.2, "block")])
def test_cuda_kernels_in_host_emulation_equal_reference(rule, k, tau, hard, resolution, in_place):
    host = getattr(native, "cuda_host", None)
    if host is None or not hasattr(host, "gate"):
        pytest.skip("the CUDA host emulation bindings are not built")
    rng = np.random.default_rng(11)
    shape = (2, 3, 21, 35)
    state_ref = state_cuda = None
    for frame in frames(rng, shape, 5):
        map_in = None
        if resolution:
            cells = (2, 1, -(-21 // k), -(-35 // k)) if resolution == "block" else (2, 1, 21, 35)
            map_in = (rng.random(cells) < 0.6).astype(np.uint8)  # frame resolution: blocks partly marked
        if state_ref is None:  # the op copies X without state; the kernels run from the second frame on
            state_ref = state_cuda = frame
            continue
        want = ref.delta_gate(frame, state_ref, map_in, rule=rule, threshold=tau, gate_block=k, gate_hard=hard)
        got = host.gate(frame, state_cuda, map_in, rule=rule, threshold=tau, gate_block=k,
                        gate_hard=-1.0 if hard is None else hard, in_place=in_place)
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[0], want[0])
        state_ref, state_cuda = want[0], got[0]


# --- the C entry point deltaonnx_gate_finds_change (ops/delta_gate/cpu/gate_probe.h): the verdict alone -----

def _finds_change():
    import ctypes

    import deltaonnx

    entry = ctypes.CDLL(deltaonnx.library_path("cpu")).deltaonnx_gate_finds_change
    i64p, f32p, u8p = (ctypes.POINTER(t) for t in (ctypes.c_int64, ctypes.c_float, ctypes.c_uint8))
    entry.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_int64, ctypes.c_float, i64p, f32p, f32p, u8p, i64p,
                      ctypes.c_char_p, ctypes.c_size_t]
    entry.restype = ctypes.c_int

    def call(x, x_ref, map_in=None, *, rule="block", threshold=0.1, gate_block=8, gate_hard=-1.0):
        def pointer(array, kind):
            assert array is None or array.dtype == {f32p: np.float32, u8p: np.uint8, i64p: np.int64}[kind]
            return None if array is None else np.ascontiguousarray(array).ctypes.data_as(kind)
        shape = np.array(x.shape, np.int64)
        map_shape = None if map_in is None else np.array(map_in.shape, np.int64)
        error = ctypes.create_string_buffer(200)
        found = entry(rule.encode(), threshold, gate_block, gate_hard, pointer(shape, i64p), pointer(x, f32p),
                      pointer(x_ref, f32p), pointer(map_in, u8p), pointer(map_shape, i64p), error, len(error))
        return found, error.value.decode()
    return call


@pytest.mark.sanitizer
@pytest.mark.parametrize("rule, k, tau, hard", [("pixel", 1, 0.1, -1.0), ("block", 4, 0.1, 0.3), ("block", 8, 0.05, -1.0)])
@pytest.mark.parametrize("resolution", [None, "frame", "block"])
def test_finds_change_is_the_engines_verdict_and_writes_nothing(rule, k, tau, hard, resolution):
    """Whether the gate would mark any pixel, exactly as the engine run in full says, with and without maps;
    the frames it is given stay as they were. Quiet frames (noise within the gate) give 0 as well as 1."""
    if resolution == "block" and rule == "pixel":
        pytest.skip("the pixel rule takes maps at frame resolution only")
    finds_change = _finds_change()
    rng = np.random.default_rng(21)
    shape = (2, 3, 21, 35)
    answers = set()
    for _ in range(12):
        reference = rng.uniform(-1, 1, shape).astype(np.float32)
        frame = (reference + rng.uniform(-0.6, 0.6, shape) * rng.choice([0.02, 0.2, 1.0])).astype(np.float32)
        cells = (-(-shape[2] // k), -(-shape[3] // k)) if resolution == "block" else shape[2:]
        map_in = None if resolution is None else (rng.random((2, 1, *cells)) < 0.2).astype(np.uint8)
        kept = frame.copy(), reference.copy()
        found, error = finds_change(frame, reference, map_in, rule=rule, threshold=tau, gate_block=k, gate_hard=hard)
        _, changed = native.delta_gate(frame, reference, map_in, rule=rule, threshold=tau, gate_block=k, gate_hard=hard)
        assert found == int(changed.any()), error
        answers.add(found)
        np.testing.assert_array_equal(frame, kept[0])
        np.testing.assert_array_equal(reference, kept[1])
        if map_in is not None:  # a change only where the map says nothing changed: not looked at
            marked = map_in.repeat(k, axis=2).repeat(k, axis=3)[:, :, :shape[2], :shape[3]] if resolution == "block" \
                else map_in
            hidden = np.where(marked != 0, reference, reference + 1.0).astype(np.float32)
            assert finds_change(hidden, reference, map_in, rule=rule, threshold=tau, gate_block=k, gate_hard=hard)[0] == 0
            assert finds_change(hidden, reference, rule=rule, threshold=tau, gate_block=k, gate_hard=hard)[0] == 1
    assert answers == {0, 1}


@pytest.mark.sanitizer
def test_finds_change_refuses_bad_arguments_with_a_reason():
    finds_change = _finds_change()
    x = np.zeros((1, 3, 16, 16), np.float32)
    assert finds_change(x, x, rule="tiles") == (-1, 'rule must be "pixel" or "block", got "tiles"')
    found, error = finds_change(x, x, np.ones((1, 1, 5, 5), np.uint8))
    assert found == -1 and "the change map must be [N,1,16,16]" in error
    found, error = finds_change(x, x, threshold=0.2, gate_hard=0.1)
    assert found == -1 and "gate_hard" in error
    assert finds_change(x, x)[0] == 0 and finds_change(x + 1, x)[0] == 1

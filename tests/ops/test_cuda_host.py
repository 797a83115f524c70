"""The CUDA op library without a GPU.

1. Build: cmake/cuda.cmake builds libdeltaonnx_ops_cuda.so with nvcc for every default architecture (one build,
   about a minute on 2 cores; every architecture is listed in the fat binaries), exporting only
   RegisterCustomOps, and ORT accepts its registration.
2. Kernels: deltaonnx._native.cuda_host runs each CUDA kernel's per-thread code on the host (the same DELTA_HD
   functions, the grid looped in C++, barrier phases and warp votes emulated). Compared with the numpy
   reference (python/deltaonnx/reference/) on random cases with NaN/Inf, dilation, groups, asymmetric pads,
   auto_pad and ceil_mode; the gather-GEMM equals the per-element body bit for bit, whatever the list order.
3. Ops: libdeltaonnx_ops_cuda_emulated.so is the CUDA library's own host code (attributes, validation, state
   handling, the launch sequence) with the launchers replaced by the host emulation, registered for ORT's CPU
   provider: whole frame sequences through ORT against the reference and against dense ORT Conv/MaxPool.
"""
from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import cuda_build
from builders import DOMAIN, EMPTY, assert_in_place_equals_copying, conv_model, pool_model
from deltaonnx import reference as ref



# ---------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory) -> cuda_build.CudaBuild:
    try:
        return cuda_build.build(tmp_path_factory.mktemp("cuda_build"))
    except RuntimeError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def cuda_library(built) -> str:
    if built.cuda_library is None:
        pytest.skip("nvcc not found: the CUDA op library is not built here")
    return str(built.cuda_library)


@pytest.fixture(scope="module")
def emulated_library(built) -> str:
    return str(built.emulated_library)


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    """deltaonnx._native.cuda_host, the host emulation bindings; built from this tree when the installed
    module predates them, or when DELTAONNX_CUDA_HOST_FROM_TREE=1 (an editable install not rebuilt since)."""
    try:
        from deltaonnx import _native
    except ImportError:
        _native = None
    if _native is None or not hasattr(_native, "cuda_host") or os.environ.get("DELTAONNX_CUDA_HOST_FROM_TREE") == "1":
        try:
            _native = cuda_build.build_native_module(tmp_path_factory.mktemp("native_build"))
        except RuntimeError as error:
            pytest.fail(f"building deltaonnx._native with the CUDA host bindings failed:\n{error}")
    return _native.cuda_host


# ---------------------------------------------------------------------------------------------------------
# 1. the build
# ---------------------------------------------------------------------------------------------------------

def test_library_exports_only_register_custom_ops(cuda_library, emulated_library):
    # The static CUDA runtime stays inside: nothing but ORT's entry point is visible to the dynamic linker.
    assert cuda_build.exported_symbols(cuda_library) == {"RegisterCustomOps"}
    assert cuda_build.exported_symbols(emulated_library) == {"RegisterCustomOps"}


def test_device_code_for_every_architecture(built, cuda_library):
    from pathlib import Path

    binaries = cuda_build.fatbin_entries(Path(cuda_library))
    assert len(binaries) == len(cuda_build.CUDA_SOURCES), binaries
    archs = sorted(int(a) for a in built.archs)
    for entries in binaries:
        assert sorted(sm for kind, sm in entries if kind == "elf") == archs
        assert [sm for kind, sm in entries if kind == "ptx"] == [archs[-1]]  # PTX for the newest only

    cuobjdump = cuda_build.find_cuobjdump()
    if cuobjdump is None:
        return  # the fat binary parser above is the whole check
    listing = cuda_build.cuobjdump_listing(cuobjdump, Path(cuda_library))
    assert sorted(listing["elf"]) == sorted(sm for entries in binaries for kind, sm in entries if kind == "elf")
    assert listing["ptx"] == [archs[-1]] * len(binaries)
    for sm in built.archs:
        symbols = cuda_build.cuobjdump_kernels(cuobjdump, Path(cuda_library), sm)
        for kernel in cuda_build.KERNEL_NAMES:
            assert kernel in symbols, f"{kernel} has no sm_{sm} code"


def test_ort_registers_the_ops_for_the_cuda_provider_only(cuda_library):
    # ORT loads the library and knows the op's schema; on the CPU provider there is no kernel for it, which is
    # what a CUDA-only registration looks like (the session fails at kernel lookup, not at model checking).
    options = ort.SessionOptions()
    options.register_custom_ops_library(cuda_library)
    model = conv_model({}, W=np.ones((1, 1, 1, 1), np.float32))
    with pytest.raises(Exception, match=r"(?i)(implementation|kernel).*DeltaConv|DeltaConv.*(implementation|kernel)"):
        ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------------------------
# case generators
# ---------------------------------------------------------------------------------------------------------

def random_window(rng, *, pool: bool):
    kernel = [int(rng.integers(1, 4)), int(rng.integers(1, 4))]
    strides = [int(rng.integers(1, 4)), int(rng.integers(1, 3))]
    dilations = [int(rng.integers(1, 3)), int(rng.integers(1, 3))]
    if pool:  # ORT's MaxPool wants pads below the kernel
        pads = [int(rng.integers(0, kernel[a % 2])) for a in range(4)]
    else:
        pads = [int(rng.integers(0, 3)) for _ in range(4)]
    auto_pad = str(rng.choice(["NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    ceil_mode = bool(pool and rng.integers(0, 2))
    reach = [(kernel[a] - 1) * dilations[a] + 1 for a in range(2)]
    hw = (int(rng.integers(reach[0], reach[0] + 10)), int(rng.integers(reach[1], reach[1] + 10)))
    return dict(kernel_shape=kernel, strides=strides, pads=pads, dilations=dilations, auto_pad=auto_pad,
                ceil_mode=ceil_mode, hw=hw)


def with_special_values(rng, x: np.ndarray, count: int = 3) -> np.ndarray:
    x = x.copy()
    flat = x.reshape(-1)
    for value in (np.nan, np.inf, -np.inf)[: max(0, count)]:
        flat[rng.integers(0, flat.size)] = value
    return x


ACTIVATIONS = [("", []), ("Relu", []), ("LeakyRelu", [0.1]), ("Clip", [-0.5, 1.5]), ("Relu6", []), ("Sigmoid", []),
               ("SiLU", []), ("HardSigmoid", [0.3, 0.4]), ("HardSwish", []), ("PRelu", [0.25]), ("Tanh", []),
               ("Softmax", [])]


def random_conv(rng, *, activation=None):
    win = random_window(rng, pool=False)
    group = int(rng.choice([1, 1, 2, 3]))
    c = group * int(rng.integers(1, 4))
    m = group * int(rng.choice([1, 2, 5, 7, 23]))  # 23 per group: the wide GEMM tile
    n = int(rng.integers(1, 3))
    x = rng.standard_normal((n, c) + win["hw"]).astype(np.float32)
    w = rng.standard_normal((m, c // group) + tuple(win["kernel_shape"])).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32) if rng.integers(0, 2) else None
    name, params = activation if activation is not None else ACTIVATIONS[int(rng.integers(0, len(ACTIVATIONS)))]
    if name == "PRelu" and rng.integers(0, 2):
        params = list(rng.uniform(0, 0.5, m).astype(np.float32))
    return win, group, x, w, b, name, params


def ref_activation(y, name, params):
    return ref.activation(y, name, params, channel_axis=1)


# ---------------------------------------------------------------------------------------------------------
# 2. each kernel, emulated on the host, against the reference
# ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(40))
def test_window_resolution_matches_reference(host, seed):
    rng = np.random.default_rng(seed)
    pool = bool(seed % 2)
    win = random_window(rng, pool=pool)
    got = host.window(list(win["hw"]), win["kernel_shape"], win["strides"], win["pads"], win["dilations"],
                      win["auto_pad"], win["ceil_mode"])
    pads = ref.resolve_pads(win["hw"], win["kernel_shape"], win["strides"], win["dilations"], win["pads"], win["auto_pad"])
    want = ref._Window.resolve(win["hw"], win["kernel_shape"], win["strides"], pads, win["dilations"],
                               ceil_mode=win["ceil_mode"])
    assert tuple(got["pads"]) == tuple(pads)
    assert tuple(got["out_hw"]) == tuple(want.out_hw)


@pytest.mark.parametrize("seed", range(30))
def test_change_step_matches_reference(host, seed):
    rng = np.random.default_rng(seed)
    n, c, h, w = int(rng.integers(1, 4)), int(rng.integers(1, 5)), int(rng.integers(1, 9)), int(rng.integers(1, 9))
    x_ref = with_special_values(rng, rng.standard_normal((n, c, h, w)).astype(np.float32), seed % 4)
    x = x_ref + rng.uniform(-0.2, 0.2, x_ref.shape).astype(np.float32) * (rng.random(x_ref.shape) < 0.3)
    x = with_special_values(rng, x, (seed // 4) % 4)
    tau = float(rng.choice([0.0, 0.05, 0.1, 1.0]))
    map_in = (rng.random((n, 1, h, w)) < 0.5).astype(np.uint8) if seed % 3 == 0 else None

    want_changed = ref.changed_pixels(x, x_ref, tau, map_in)
    want_next = np.where(want_changed[:, None], x, x_ref)
    for in_place in (False, True):
        changed, x_ref_next = host.change_step(x, x_ref, tau, map_in, in_place)
        np.testing.assert_array_equal(changed[:, 0].astype(bool), want_changed)
        np.testing.assert_array_equal(x_ref_next, want_next)  # bitwise, NaNs in place
    np.testing.assert_array_equal(host.detect_changes(x, x_ref, tau, map_in)[:, 0].astype(bool), want_changed)
    mask = want_changed[:, None].astype(np.uint8)
    np.testing.assert_array_equal(host.update_reference(x, x_ref, mask, False), want_next)
    np.testing.assert_array_equal(host.update_reference(x, x_ref, mask, True), want_next)


def test_change_step_never_hides_nan(host):
    x_ref = np.zeros((1, 2, 2, 2), np.float32)
    x = x_ref.copy()
    x[0, 1, 0, 1] = np.nan  # NaN in X
    x_ref[0, 0, 1, 1] = np.inf  # Inf in X_ref, X finite
    changed, _ = host.change_step(x, x_ref, 1e30)
    assert changed[0, 0].tolist() == [[0, 1], [0, 1]]


@pytest.mark.parametrize("seed", range(40))
def test_recompute_step_and_compaction_match_reference(host, seed):
    rng = np.random.default_rng(seed)
    win = random_window(rng, pool=bool(seed % 2))
    n = int(rng.integers(1, 4))
    density = float(rng.choice([0.0, 0.02, 0.2, 0.9]))
    changed = (rng.random((n, 1) + win["hw"]) < density).astype(np.uint8)
    map_out, counts, pixel_list = host.recompute_step(changed, win["kernel_shape"], win["strides"], win["pads"],
                                                      win["dilations"], win["auto_pad"], win["ceil_mode"])
    pads = ref.resolve_pads(win["hw"], win["kernel_shape"], win["strides"], win["dilations"], win["pads"], win["auto_pad"])
    want = ref.output_recompute_mask(changed[:, 0].astype(bool), win["hw"], map_out.shape[2:], win["kernel_shape"],
                                     win["strides"], pads, win["dilations"], win["ceil_mode"])
    np.testing.assert_array_equal(map_out[:, 0].astype(bool), want)
    total = map_out.shape[2] * map_out.shape[3]
    for item in range(n):
        marked = np.flatnonzero(want[item])
        assert counts[item] == marked.size
        listed = pixel_list[item, : counts[item]]
        assert sorted(listed.tolist()) == marked.tolist()  # each marked pixel exactly once
        assert (pixel_list[item, counts[item]:] == -1).all() and total == pixel_list.shape[1]


def test_compaction_spans_warps_and_blocks(host):
    # 600 output pixels: several 32-lane warps and 256-thread blocks reserve slots from the same counter.
    changed = np.zeros((2, 1, 20, 30), np.uint8)
    changed[0, 0, ::3, ::2] = 1
    changed[1, 0, 19, 29] = 1
    map_out, counts, pixel_list = host.recompute_step(changed, [1, 1])
    assert counts.tolist() == [changed[0].sum(), 1]
    assert pixel_list[0, : counts[0]].tolist() == np.flatnonzero(changed[0]).tolist()
    assert pixel_list[1, 0] == 599


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.25, 0.5, 1.0])
def test_densify_step_matches_reference(host, fraction):
    rng = np.random.default_rng(7)
    map_out = (rng.random((4, 1, 6, 5)) < np.array([0.0, 0.1, 0.3, 0.8])[:, None, None, None]).astype(np.uint8)
    counts = map_out.reshape(4, -1).sum(axis=1).astype(np.int32)
    got = host.densify_step(map_out, counts, fraction)
    np.testing.assert_array_equal(got[:, 0].astype(bool), ref.apply_dense_fraction(map_out[:, 0].astype(bool), fraction))


def test_keep_step_copies_only_unrecomputed_pixels(host):
    rng = np.random.default_rng(3)
    y_prev = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    y = np.full_like(y_prev, 99.0)
    map_out = (rng.random((2, 1, 4, 5)) < 0.5).astype(np.uint8)
    got = host.keep_step(y_prev, y, map_out)
    np.testing.assert_array_equal(got, np.where(map_out.astype(bool), y, y_prev))


def random_pixel_list(rng, n, total, *, fraction):
    """Per item a random subset of output pixels in random order (the device's atomics give any order)."""
    pixel_list = np.full((n, total), -1, np.int32)
    counts = np.zeros(n, np.int32)
    for item in range(n):
        chosen = rng.permutation(total)[: int(round(fraction * total))]
        pixel_list[item, : chosen.size] = chosen
        counts[item] = chosen.size
    return pixel_list, counts


def listed_mask(pixel_list, counts, n, ho, wo):
    """bool [n, 1, ho, wo]: True at the pixels each item's list names."""
    listed = np.zeros((n, ho * wo), bool)
    for item in range(n):
        listed[item, pixel_list[item, : counts[item]]] = True
    return listed.reshape(n, 1, ho, wo)


@pytest.mark.parametrize("seed", range(30))
def test_gather_gemm_equals_per_element_body_bit_for_bit(host, seed):
    rng = np.random.default_rng(seed)
    win, group, x, w, b, act, params = random_conv(rng)
    x = with_special_values(rng, x, seed % 3)
    kwargs = dict(strides=win["strides"], pads=win["pads"], dilations=win["dilations"], auto_pad=win["auto_pad"],
                  group=group, activation=act, activation_params=params)
    direct = host.conv_direct(x, w, b, **kwargs)
    n, _, ho, wo = direct.shape
    pixel_list, counts = random_pixel_list(rng, n, ho * wo, fraction=float(rng.choice([0.0, 0.1, 0.4])))
    y_init = rng.standard_normal(direct.shape).astype(np.float32)
    listed = listed_mask(pixel_list, counts, n, ho, wo)
    for tile in ("wide", "narrow"):
        # dense_fraction 1: the lists are used as given, never replaced by a dense pass
        got = host.gather_gemm(x, w, b, pixel_list, counts, y_init, dense_fraction=1.0, tile=tile, **kwargs)
        np.testing.assert_array_equal(got, np.where(listed, direct, y_init))
        dense = host.gather_gemm(x, w, b, pixel_list, counts, y_init, all_dense=True, tile=tile, **kwargs)
        np.testing.assert_array_equal(dense, direct)


@pytest.mark.parametrize("seed, groups", [(seed, groups) for seed in range(6) for groups in (False, True)])
def test_gather_gemm_normalises_the_channels_of_listed_pixels_only(host, seed, groups):
    """activation Softmax: after the GEMM blocks, one thread per listed pixel normalises its M channels (or each
    group of G of them, activation_params [G]); the result equals the numpy reference there, and unlisted
    pixels keep y_init (normalising them would not)."""
    rng = np.random.default_rng(500 + seed)
    win, group, x, w, b, act, params = random_conv(rng, activation=("Softmax", []))
    if groups:  # M = group * G * k output channels, softmax over each G
        size = int(rng.choice([2, 3, 16]))
        m = group * size * int(rng.integers(1, 4))
        w = rng.standard_normal((m,) + w.shape[1:]).astype(np.float32)
        b = rng.standard_normal(m).astype(np.float32) if b is not None else None
        params = [float(size)]
    kwargs = dict(strides=win["strides"], pads=win["pads"], dilations=win["dilations"], auto_pad=win["auto_pad"],
                  group=group, activation=act, activation_params=params)
    pads = ref.resolve_pads(win["hw"], win["kernel_shape"], win["strides"], win["dilations"], win["pads"], win["auto_pad"])
    want = ref_activation(ref.conv2d(x, w, b, strides=win["strides"], pads=pads, dilations=win["dilations"],
                                     group=group), act, params)
    n, _, ho, wo = want.shape
    pixel_list, counts = random_pixel_list(rng, n, ho * wo, fraction=0.3)
    y_init = rng.uniform(0, 1, want.shape).astype(np.float32)
    listed = np.broadcast_to(listed_mask(pixel_list, counts, n, ho, wo), want.shape)
    got = host.gather_gemm(x, w, b, pixel_list, counts, y_init, dense_fraction=1.0, **kwargs)
    np.testing.assert_allclose(got[listed], want[listed], rtol=2e-5, atol=2e-6)
    np.testing.assert_array_equal(got[~listed], y_init[~listed])
    dense = host.gather_gemm(x, w, b, pixel_list, counts, y_init, all_dense=True, **kwargs)
    np.testing.assert_allclose(dense, want, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(host.conv_direct(x, w, b, **kwargs), want, rtol=2e-5, atol=2e-6)


def test_gather_gemm_dense_rule_switches_per_item(host):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    direct = host.conv_direct(x, w, None, pads=[1, 1, 1, 1])
    pixel_list = np.full((2, 64), -1, np.int32)
    pixel_list[0, :40] = np.arange(40)  # 62.5% > 0.5: item 0 is recomputed whole
    pixel_list[1, :3] = [5, 9, 63]
    counts = np.array([40, 3], np.int32)
    y_init = np.zeros_like(direct)
    got = host.gather_gemm(x, w, None, pixel_list, counts, y_init, pads=[1, 1, 1, 1], dense_fraction=0.5)
    np.testing.assert_array_equal(got[0], direct[0])
    expected_1 = np.zeros_like(direct[1]).reshape(4, 64)
    expected_1[:, [5, 9, 63]] = direct[1].reshape(4, 64)[:, [5, 9, 63]]
    np.testing.assert_array_equal(got[1], expected_1.reshape(4, 8, 8))


@pytest.mark.parametrize("seed", range(30))
def test_conv_per_element_body_matches_reference(host, seed):
    rng = np.random.default_rng(100 + seed)
    act = ACTIVATIONS[seed % len(ACTIVATIONS)]
    win, group, x, w, b, act, params = random_conv(rng, activation=act)
    got = host.conv_direct(x, w, b, strides=win["strides"], pads=win["pads"], dilations=win["dilations"],
                           auto_pad=win["auto_pad"], group=group, activation=act, activation_params=params)
    pads = ref.resolve_pads(win["hw"], win["kernel_shape"], win["strides"], win["dilations"], win["pads"], win["auto_pad"])
    want = ref_activation(ref.conv2d(x, w, b, strides=win["strides"], pads=pads, dilations=win["dilations"],
                                     group=group), act, params)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("seed", range(30))
def test_max_pool_kernel_matches_reference(host, seed):
    rng = np.random.default_rng(200 + seed)
    win = random_window(rng, pool=True)
    x = with_special_values(rng, rng.standard_normal((2, 3) + win["hw"]).astype(np.float32), seed % 4)
    pads = ref.resolve_pads(win["hw"], win["kernel_shape"], win["strides"], win["dilations"], win["pads"], win["auto_pad"])
    want = ref.maxpool2d(x, kernel_shape=win["kernel_shape"], strides=win["strides"], pads=pads,
                         dilations=win["dilations"], ceil_mode=int(win["ceil_mode"]))
    n, c, ho, wo = want.shape
    pixel_list, counts = random_pixel_list(rng, n, ho * wo, fraction=0.3)
    y_init = np.full(want.shape, 7.0, np.float32)
    kwargs = dict(kernel_shape=win["kernel_shape"], strides=win["strides"], pads=win["pads"],
                  dilations=win["dilations"], auto_pad=win["auto_pad"], ceil_mode=win["ceil_mode"])
    got = host.max_pool(x, pixel_list, counts, y_init, dense_fraction=1.0, **kwargs)
    np.testing.assert_array_equal(got, np.where(listed_mask(pixel_list, counts, n, ho, wo), want, y_init))
    np.testing.assert_array_equal(host.max_pool(x, pixel_list, counts, y_init, all_dense=True, **kwargs), want)


def test_max_pool_window_in_padding_gives_lowest_float(host):
    x = np.arange(12, dtype=np.float32).reshape(1, 1, 3, 4)
    want = ref.maxpool2d(x, kernel_shape=[2, 2], pads=[3, 0, 0, 0], strides=[2, 2])
    got = host.max_pool(x, np.zeros((1, 1), np.int32), np.zeros(1, np.int32), np.zeros_like(want),
                        kernel_shape=[2, 2], pads=[3, 0, 0, 0], strides=[2, 2], all_dense=True)
    np.testing.assert_array_equal(got, want)
    assert got[0, 0, 0, 0] == np.finfo(np.float32).min


@pytest.mark.parametrize("count", [1, 2, 8, 9, 17])
def test_map_union_kernel_matches_reference(host, count):
    rng = np.random.default_rng(count)
    maps = [(rng.random((2, 1, 5, 7)) < 0.1).astype(np.uint8) * rng.integers(1, 255) for _ in range(count)]
    maps = [m.astype(np.uint8) for m in maps]
    np.testing.assert_array_equal(host.map_union(maps), ref.map_union(*maps))


# ---------------------------------------------------------------------------------------------------------
# 3. the CUDA library's op code through ORT, kernels emulated on the host (CPU provider)
# ---------------------------------------------------------------------------------------------------------

def session(library: str, model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def frames(rng, shape, count):
    """A sequence mixing no change, sub-threshold noise, a moved patch, NaN/Inf and isolated large changes."""
    x = rng.standard_normal(shape).astype(np.float32)
    out = [x]
    n, c, h, w = shape
    for t in range(1, count):
        x = x.copy()
        kind = t % 5
        if kind == 1:
            x += np.where(rng.random((n, 1, h, w)) < 0.5, rng.uniform(-0.05, 0.05, shape), 0).astype(np.float32)
        elif kind == 2:
            y0, x0 = int(rng.integers(0, h)), int(rng.integers(0, w))
            x[:, :, y0:y0 + 3, x0:x0 + 2] = rng.standard_normal(x[:, :, y0:y0 + 3, x0:x0 + 2].shape)
        elif kind == 3:
            x[int(rng.integers(0, n)), int(rng.integers(0, c)), int(rng.integers(0, h)), int(rng.integers(0, w))] = np.nan
        elif kind == 4:
            x[np.isnan(x)] = 0.5  # the NaN goes away again
            x[0, int(rng.integers(0, c)), int(rng.integers(0, h)), int(rng.integers(0, w))] += 4.0
        out.append(x)
    return out


CONV_CASES = [
    dict(c=3, m=8, kernel=(3, 3), attrs=dict(pads=[1, 1, 1, 1], activation="Relu")),
    dict(c=4, m=6, kernel=(3, 2), group=2, attrs=dict(strides=[2, 1], pads=[0, 1, 2, 0], dilations=[2, 1],
                                                      activation="LeakyRelu", activation_params=[0.1])),
    dict(c=5, m=5, kernel=(3, 3), group=5, attrs=dict(auto_pad="SAME_UPPER", strides=[2, 2], activation="HardSwish")),
    dict(c=2, m=40, kernel=(1, 1), attrs=dict(activation="SiLU", dense_fraction=0.3)),
    dict(c=3, m=4, kernel=(3, 3), prelu_per_channel=True,
         attrs=dict(auto_pad="SAME_LOWER", dilations=[2, 2], activation="PRelu")),
    dict(c=2, m=3, kernel=(5, 5), bias=False, attrs=dict(pads=[2, 2, 2, 2], activation="Relu6", threshold=0.05)),
    dict(c=3, m=3, kernel=(2, 3), attrs=dict(auto_pad="VALID", activation="HardSigmoid",
                                              activation_params=[0.3, 0.4], threshold=0.1, dense_fraction=1.0)),
    dict(c=3, m=2, kernel=(3, 3), map_in=True, attrs=dict(pads=[1, 1, 1, 1], activation="Tanh")),
    dict(c=3, m=5, kernel=(3, 3), map_in=True, attrs=dict(pads=[1, 1, 1, 1], activation="Softmax", threshold=0.05)),
]


def conv_case_setup(case, rng):
    group = case.get("group", 1)
    w = rng.standard_normal((case["m"], case["c"] // group) + case["kernel"]).astype(np.float32)
    b = rng.standard_normal(case["m"]).astype(np.float32) if case.get("bias", True) else None
    attrs = dict(case["attrs"], group=group)
    if case.get("prelu_per_channel"):
        attrs["activation_params"] = [float(v) for v in rng.uniform(0, 0.5, case["m"])]
    ref_kwargs = dict(kernel_shape=case["kernel"], strides=attrs.get("strides"), pads=attrs.get("pads"),
                      dilations=attrs.get("dilations"), group=group, auto_pad=attrs.get("auto_pad", "NOTSET"),
                      activation=attrs.get("activation", ""), activation_params=attrs.get("activation_params", ()),
                      threshold=attrs.get("threshold", 0.0), dense_fraction=attrs.get("dense_fraction", 0.5))
    return w, b, attrs, ref_kwargs


def assert_same_run(got, want, what):
    y, x_ref_next, map_out = got
    ry, rx, rm = want
    np.testing.assert_array_equal(map_out, rm, err_msg=f"{what}: map_out")
    np.testing.assert_array_equal(x_ref_next, rx, err_msg=f"{what}: X_ref_next")
    np.testing.assert_allclose(y, ry, rtol=2e-5, atol=2e-5, equal_nan=True, err_msg=f"{what}: Y")


@pytest.mark.parametrize("case_index", range(len(CONV_CASES)))
def test_emulated_delta_conv_sequence_matches_reference(emulated_library, case_index):
    case = CONV_CASES[case_index]
    rng = np.random.default_rng(case_index)
    w, b, attrs, ref_kwargs = conv_case_setup(case, rng)
    use_map = case.get("map_in", False)
    sess = session(emulated_library, conv_model(attrs, W=w, B=b, with_map=use_map))
    state, ref_state = (EMPTY, EMPTY), (EMPTY, EMPTY)
    previous = None
    for t, x in enumerate(frames(rng, (2, case["c"], 11, 13), 9)):
        feeds = {"X": x, "X_ref": state[0], "Y_prev": state[1]}
        map_in = None
        if use_map:  # an honest producer map: marks a superset of what changed since the last frame
            diff = np.ones(x.shape, bool) if previous is None else ~(x == previous)
            map_in = (diff.any(axis=1, keepdims=True) | (rng.random((2, 1, 11, 13)) < 0.1)).astype(np.uint8)
            feeds["map_in"] = map_in
        got = sess.run(None, feeds)
        want = ref.delta_conv(x, w, b, ref_state[0], ref_state[1], map_in, **ref_kwargs)
        assert_same_run(got, want, f"frame {t}")
        state, ref_state, previous = (got[1], got[0]), (want[1], want[0]), x


def dense_conv_model(attrs, w, b) -> onnx.ModelProto:
    """ORT's own Conv followed by the activation, as the converter's input model has them."""
    conv_attrs = {k: v for k, v in attrs.items() if k in ("strides", "pads", "dilations", "group", "auto_pad")}
    nodes = [helper.make_node("Conv", ["X", "W"] + (["B"] if b is not None else []), ["C"], **conv_attrs),
             helper.make_node("Relu", ["C"], ["Y"])]
    inits = [numpy_helper.from_array(w, "W")] + ([numpy_helper.from_array(b, "B")] if b is not None else [])
    graph = helper.make_graph(nodes, "dense", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


@pytest.mark.parametrize("attrs", [dict(pads=[1, 1, 1, 1]), dict(strides=[2, 2], pads=[0, 1, 1, 0], dilations=[1, 2]),
                                   dict(group=3, auto_pad="SAME_UPPER")])
def test_emulated_delta_conv_tau0_equals_dense_ort_conv_every_frame(emulated_library, attrs):
    rng = np.random.default_rng(5)
    group = attrs.get("group", 1)
    w = rng.standard_normal((6, 6 // group, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    delta = session(emulated_library, conv_model(dict(attrs, activation="Relu", threshold=0.0), W=w, B=b))
    dense = ort.InferenceSession(dense_conv_model(attrs, w, b).SerializeToString(), providers=["CPUExecutionProvider"])
    x_ref, y_prev = EMPTY, EMPTY
    recomputed = []
    for x in frames(rng, (1, 6, 16, 15), 8):
        x = np.nan_to_num(x, nan=0.25)  # ORT's Conv and a NaN: not what this test is about
        y, x_ref, map_out = delta.run(None, {"X": x, "X_ref": x_ref, "Y_prev": y_prev})
        np.testing.assert_allclose(y, dense.run(None, {"X": x})[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(x_ref, x)  # tau 0: the reference is the frame
        recomputed.append(map_out.mean())
        y_prev = y
    assert recomputed[0] == 1.0 and min(recomputed) < 0.5  # it did skip work on some frames


@pytest.mark.parametrize("group, w_shape", [(1, (6, 5, 3, 3)), (5, (5, 1, 3, 3))])  # and depthwise (group = C = M)
def test_emulated_delta_conv_blocked_layout_is_nchw(emulated_library, group, w_shape):
    """The CUDA library's channel block is 1 (docs/ops.md#blocked-layout): layout "blocked" is NCHW memory, run
    by the same kernels as "nchw" (any channel count, a depthwise conv too), and what the CPU library refuses
    (a grouped conv other than depthwise) it refuses too."""
    rng = np.random.default_rng(8)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(w_shape[0]).astype(np.float32)
    attrs = dict(pads=[1, 1, 1, 1], activation="Relu", group=group)
    blocked = session(emulated_library, conv_model(dict(attrs, layout="blocked"), W=w, B=b))
    plain = session(emulated_library, conv_model(attrs, W=w, B=b))
    state_b, state_p = (EMPTY, EMPTY), (EMPTY, EMPTY)
    for t, x in enumerate(frames(rng, (2, 5, 11, 13), 6)):
        got = blocked.run(None, {"X": x, "X_ref": state_b[0], "Y_prev": state_b[1]})
        want = plain.run(None, {"X": x, "X_ref": state_p[0], "Y_prev": state_p[1]})
        for g, v in zip(got, want):
            np.testing.assert_array_equal(g, v, err_msg=f"frame {t}")
        state_b, state_p = (got[1], got[0]), (want[1], want[0])
    multiplier = session(emulated_library, conv_model(dict(attrs, layout="blocked", group=5),
                                                      W=rng.standard_normal((10, 1, 3, 3)).astype(np.float32)))
    with pytest.raises(Exception, match="needs group = 1 or a depthwise conv"):  # W is checked when it runs
        multiplier.run(None, {"X": x, "X_ref": EMPTY, "Y_prev": EMPTY})


POOL_CASES = [
    dict(kernel_shape=[2, 2], strides=[2, 2]),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
    dict(kernel_shape=[3, 2], strides=[2, 1], pads=[2, 0, 0, 1], dilations=[2, 1], ceil_mode=1, threshold=0.05),
    dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER", dense_fraction=0.2),
]


@pytest.mark.parametrize("case_index", range(len(POOL_CASES)))
def test_emulated_delta_pool_sequence_matches_reference_and_ort(emulated_library, case_index):
    attrs = POOL_CASES[case_index]
    rng = np.random.default_rng(50 + case_index)
    sess = session(emulated_library, pool_model(attrs))
    pool_attrs = {k: v for k, v in attrs.items() if k not in ("threshold", "dense_fraction")}
    maxpool = helper.make_model(helper.make_graph(
        [helper.make_node("MaxPool", ["X"], ["Y"], **pool_attrs)], "p",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)]), opset_imports=[helper.make_opsetid("", 17)])
    maxpool.ir_version = 10
    dense = ort.InferenceSession(maxpool.SerializeToString(), providers=["CPUExecutionProvider"])
    state, ref_state = (EMPTY, EMPTY), (EMPTY, EMPTY)
    for t, x in enumerate(frames(rng, (2, 3, 12, 11), 8)):
        got = sess.run(None, {"X": x, "X_ref": state[0], "Y_prev": state[1]})
        want = ref.delta_pool(x, ref_state[0], ref_state[1], None, **attrs)
        np.testing.assert_array_equal(got[2], want[2], err_msg=f"frame {t}: map_out")
        np.testing.assert_array_equal(got[1], want[1], err_msg=f"frame {t}: X_ref_next")
        np.testing.assert_array_equal(got[0], want[0], err_msg=f"frame {t}: Y")  # a max is exact
        if attrs.get("threshold", 0) == 0 and not np.isnan(x).any():
            np.testing.assert_array_equal(got[0], dense.run(None, {"X": x})[0], err_msg=f"frame {t}: vs MaxPool")
        state, ref_state = (got[1], got[0]), (want[1], want[0])


def test_emulated_map_union_matches_reference(emulated_library):
    names = [f"m{i}" for i in range(11)]
    node = helper.make_node("DeltaMapUnion", names, ["U"], domain=DOMAIN, name="union_0")
    graph = helper.make_graph([node], "u", [helper.make_tensor_value_info(n, TensorProto.UINT8, None) for n in names],
                              [helper.make_tensor_value_info("U", TensorProto.UINT8, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 10
    rng = np.random.default_rng(9)
    maps = {n: (rng.random((2, 1, 6, 9)) < 0.05).astype(np.uint8) * 3 for n in names}
    got = session(emulated_library, model).run(None, maps)[0]
    np.testing.assert_array_equal(got, ref.map_union(*maps.values()))
    # per-item maps (one value per batch item), one in the first launch of 8 inputs and one in the second
    maps["m2"] = np.array([0, 1], np.uint8).reshape(2, 1, 1, 1)
    maps["m9"] = np.array([1, 0], np.uint8).reshape(2, 1, 1, 1)
    got = session(emulated_library, model).run(None, maps)[0]
    np.testing.assert_array_equal(got, ref.map_union(*maps.values()))
    assert got.shape == (2, 1, 6, 9) and got.all()


@pytest.mark.parametrize("rule, map_kind", [("block", None), ("block", "cells"), ("pixel", "pixels")])
def test_emulated_gate_matches_reference(emulated_library, rule, map_kind):
    """DeltaGate through the CUDA library's own host code (attributes, inputs, rule 1, scratch) on a sequence."""
    node = helper.make_node("DeltaGate", ["X", "X_ref", "M"], ["G", "map"], domain=DOMAIN, name="gate_0", rule=rule,
                            threshold=0.1, gate_block=4, gate_hard=0.3)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, None),
                                            helper.make_tensor_value_info("X_ref", TensorProto.FLOAT, None),
                                            helper.make_tensor_value_info("M", TensorProto.UINT8, None)],
                              [helper.make_tensor_value_info("G", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("map", TensorProto.UINT8, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    model.ir_version = 10
    run = session(emulated_library, model)
    rng = np.random.default_rng(5)
    want_state = got_state = np.zeros((0, 0, 0, 0), np.float32)
    base = rng.uniform(-1, 1, (2, 3, 13, 18)).astype(np.float32)
    for _ in range(4):
        x = base + rng.normal(0, 0.1, base.shape).astype(np.float32)
        shape = {None: (0, 1, 0, 0), "cells": (2, 1, 4, 5), "pixels": (2, 1, 13, 18)}[map_kind]
        marks = (rng.random(shape) < 0.6).astype(np.uint8)
        got_state, got_map = run.run(None, {"X": x, "X_ref": got_state, "M": marks})
        want_state, want_map = ref.delta_gate(x, want_state, marks, rule=rule, threshold=0.1, gate_block=4,
                                              gate_hard=0.3)
        np.testing.assert_array_equal(got_map, want_map)
        np.testing.assert_array_equal(got_state, want_state)


def test_emulated_in_place_state_binding(emulated_library):
    # docs/state_protocol.md "In place": one OrtValue bound as past and present; the op then writes only what
    # it recomputes. Same results as the copying run, frame by frame.
    rng = np.random.default_rng(21)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    model = conv_model(dict(pads=[1, 1, 1, 1], activation="Relu", threshold=0.02), W=w)
    sess = session(emulated_library, model)
    seq = frames(rng, (1, 3, 10, 10), 7)
    assert_in_place_equals_copying(sess, seq, (1, 4, 10, 10), (1, 3, 10, 10))


def test_emulated_resolution_change_and_reset_recompute_everything(emulated_library):
    rng = np.random.default_rng(4)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    sess = session(emulated_library, conv_model(dict(pads=[1, 1, 1, 1]), W=w))
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    y, x_ref, _ = sess.run(None, {"X": x, "X_ref": EMPTY, "Y_prev": EMPTY})
    _, _, map_same = sess.run(None, {"X": x, "X_ref": x_ref, "Y_prev": y})
    assert map_same.sum() == 0
    bigger = rng.standard_normal((1, 3, 10, 12)).astype(np.float32)
    # X_ref of the old resolution, and a Y_prev of the wrong shape that must not be read
    y2, x_ref2, map2 = sess.run(None, {"X": bigger, "X_ref": x_ref, "Y_prev": y})
    assert map2.shape == (1, 1, 10, 12) and map2.all()
    np.testing.assert_array_equal(x_ref2, bigger)
    np.testing.assert_allclose(y2, ref.delta_conv(bigger, w, pads=[1, 1, 1, 1])[0], rtol=1e-5, atol=1e-5)


def test_emulated_without_map_output(emulated_library):
    rng = np.random.default_rng(8)
    w = rng.standard_normal((2, 1, 3, 3)).astype(np.float32)
    sess = session(emulated_library, conv_model(dict(pads=[1, 1, 1, 1]), W=w, with_map_out=False))
    x = rng.standard_normal((1, 1, 6, 6)).astype(np.float32)
    y, x_ref = sess.run(None, {"X": x, "X_ref": EMPTY, "Y_prev": EMPTY})
    x2 = x.copy()
    x2[0, 0, 0, 0] += 1
    y2, _ = sess.run(None, {"X": x2, "X_ref": x_ref, "Y_prev": y})
    np.testing.assert_allclose(y2, ref.conv2d(x2, w, pads=[1, 1, 1, 1]), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attrs, message", [
    (dict(strides=[0, 1]), "strides"),
    (dict(pads=[1, 1]), "pads"),
    (dict(auto_pad="SAME"), "auto_pad"),
    (dict(activation="Gelu"), "activation"),
    (dict(activation="LeakyRelu", activation_params=[0.1, 0.2]), "activation_params"),
    (dict(activation="PRelu"), "PRelu"),
    (dict(threshold=-0.5), "threshold"),
    (dict(dense_fraction=float("nan")), "dense_fraction"),
    (dict(group=0), "group"),
    (dict(threshold=1), "threshold"),  # an int where a float belongs
])
def test_emulated_invalid_attributes_fail_at_session_creation_naming_the_node(emulated_library, attrs, message):
    model = conv_model(attrs, W=np.ones((2, 2, 3, 3), np.float32), name="bad_conv_7")
    with pytest.raises(Exception, match=f"DeltaConv node 'bad_conv_7'.*{message}"):
        session(emulated_library, model)


def test_emulated_pool_refuses_storage_order_and_missing_kernel(emulated_library):
    with pytest.raises(Exception, match="DeltaPool node 'delta_pool_0'.*storage_order"):
        session(emulated_library, pool_model(dict(kernel_shape=[2, 2], storage_order=1)))
    with pytest.raises(Exception, match="DeltaPool node 'delta_pool_0'.*kernel_shape"):
        session(emulated_library, pool_model(dict(strides=[2, 2])))


def test_emulated_run_time_errors_name_the_node(emulated_library):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    sess = session(emulated_library, conv_model(dict(pads=[1, 1, 1, 1]), W=w, with_map=True, name="conv_a"))
    ok_map = np.ones((1, 1, 8, 8), np.uint8)
    with pytest.raises(Exception, match=r"DeltaConv node 'conv_a'.*Y_prev"):
        sess.run(None, {"X": x, "X_ref": x, "Y_prev": np.zeros((1, 4, 7, 8), np.float32), "map_in": ok_map})
    with pytest.raises(Exception, match=r"DeltaConv node 'conv_a'.*map_in"):
        sess.run(None, {"X": x, "X_ref": EMPTY, "Y_prev": EMPTY, "map_in": np.ones((1, 1, 8, 7), np.uint8)})
    with pytest.raises(Exception, match=r"DeltaConv node 'conv_a'.*kernel_shape|DeltaConv node 'conv_a'.*input channels"):
        sess.run(None, {"X": x[:, :2], "X_ref": EMPTY, "Y_prev": EMPTY, "map_in": ok_map})
    prelu = session(emulated_library, conv_model(dict(activation="PRelu", activation_params=[0.1, 0.2]), W=w, name="conv_b"))
    with pytest.raises(Exception, match=r"DeltaConv node 'conv_b'.*slopes"):
        prelu.run(None, {"X": x, "X_ref": EMPTY, "Y_prev": EMPTY})

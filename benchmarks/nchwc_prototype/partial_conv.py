"""ctypes front of the NCHW16c partial-conv prototype (partial_conv.cc), its numpy reference and layout helpers.

The library is compiled on first use with the system C++ compiler into build/ beside this file (not part of
the op library). `step` runs one DeltaConv step in place on blocked state: X_ref and Y are updated.
"""
from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "partial_conv.cc"
BLOCK = 16
VARIANTS = {"scalar": 0, "avx512": 1, "avx512_indirect": 2}


def build() -> Path:
    """Compiles partial_conv.cc when the library is missing or older than the source; returns its path."""
    out = HERE / "build" / "libnchwc_partial_conv.so"
    if out.exists() and out.stat().st_mtime >= SOURCE.stat().st_mtime:
        return out
    out.parent.mkdir(exist_ok=True)
    cxx = os.environ.get("CXX", "g++")
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run([cxx, "-O3", "-std=c++17", "-fPIC", "-shared", "-o", str(tmp), str(SOURCE)], check=True)
    tmp.replace(out)
    return out


_lib = None


def library():
    global _lib
    if _lib is None:
        _lib = ctypes.CDLL(str(build()))
        f = _lib.nchwc_partial_conv
        p = ctypes.c_void_p
        f.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_int, ctypes.c_int] + [p] * 8
        f.restype = ctypes.c_int
    return _lib


def has_avx512() -> bool:
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return " avx512f" in flags


def to_blocked(x: np.ndarray) -> np.ndarray:
    """[1, C, H, W] -> [C/16, H, W, 16] (C a multiple of 16)."""
    _, C, H, W = x.shape
    return np.ascontiguousarray(x[0].reshape(C // BLOCK, BLOCK, H, W).transpose(0, 2, 3, 1))


def from_blocked(xb: np.ndarray) -> np.ndarray:
    """[C/16, H, W, 16] -> [1, C, H, W]."""
    Cb, H, W, _ = xb.shape
    return np.ascontiguousarray(xb.transpose(0, 3, 1, 2).reshape(1, Cb * BLOCK, H, W))


def block_weights(w: np.ndarray) -> np.ndarray:
    """[M, C, k, k] -> [(C/16) * k*k * 16, M]: row (cb, tap, c) holds input channel cb*16+c at tap for all M."""
    M, C, k, _ = w.shape
    return np.ascontiguousarray(w.reshape(M, C // BLOCK, BLOCK, k * k).transpose(1, 3, 2, 0).reshape(-1, M))


def output_size(H, W, k, s):
    p = k // 2
    return (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1


class PartialConv:
    """One conv (pads k // 2, no group) on NCHW16c state; `step` updates x_ref, y and map_out in place."""

    def __init__(self, w: np.ndarray, b: np.ndarray, H: int, W: int, stride: int, act: bool = False):
        self.M, self.C, self.k, _ = w.shape
        self.H, self.W, self.s, self.act = H, W, stride, act
        self.Ho, self.Wo = output_size(H, W, self.k, stride)
        self.wb = block_weights(w.astype(np.float32))
        self.b = np.ascontiguousarray(b, np.float32)
        self.counts = np.zeros(2, np.int32)
        self._f = library().nchwc_partial_conv

    def new_state(self):
        x_ref = np.zeros((self.C // BLOCK, self.H, self.W, BLOCK), np.float32)
        y = np.zeros((self.M // BLOCK, self.Ho, self.Wo, BLOCK), np.float32)
        return x_ref, y, np.zeros((self.Ho, self.Wo), np.uint8)

    def step(self, xb, x_ref, map_in, y, map_out, tau=0.0, variant="avx512"):
        for a, dt in ((xb, np.float32), (x_ref, np.float32), (map_in, np.uint8), (y, np.float32),
                      (map_out, np.uint8)):
            assert a.dtype == dt and a.flags.c_contiguous
        n = self._f(self.C, self.H, self.W, self.M, self.k, self.s, tau, int(self.act), VARIANTS[variant],
                    xb.ctypes.data, x_ref.ctypes.data, map_in.ctypes.data, self.wb.ctypes.data, self.b.ctypes.data,
                    y.ctypes.data, map_out.ctypes.data, self.counts.ctypes.data)
        if n == -2:
            raise RuntimeError("this CPU has no AVX-512: use variant='scalar'")
        if n < 0:
            raise ValueError("shape not supported by the prototype (C and M multiples of 16)")
        return n


def dense_conv(x, w, b, s, act=False):
    """numpy reference conv of [1, C, H, W] (pads k // 2), optional SiLU."""
    M, C, k, _ = w.shape
    p = k // 2
    _, _, H, W = x.shape
    Ho, Wo = output_size(H, W, k, s)
    xp = np.pad(x[0].astype(np.float64), ((0, 0), (p, p), (p, p)))
    y = np.zeros((M, Ho, Wo))
    for ky in range(k):
        for kx in range(k):
            patch = xp[:, ky:ky + (Ho - 1) * s + 1:s, kx:kx + (Wo - 1) * s + 1:s]
            y += np.einsum("mc,chw->mhw", w[:, :, ky, kx].astype(np.float64), patch)
    y += b[:, None, None]
    if act:
        y = y / (1 + np.exp(-y))
    return y[None].astype(np.float32)


def reference_step(x, x_ref, map_in, y_prev, w, b, s, tau, act=False):
    """The step's semantics in numpy on NCHW arrays: returns (x_ref_next, y, map_out)."""
    M, C, k, _ = w.shape
    p = k // 2
    changed = map_in.astype(bool) & ~(np.abs(x[0] - x_ref[0]) <= tau).all(axis=0)
    x_ref_next = np.where(changed[None, None], x, x_ref)
    H, W = changed.shape
    Ho, Wo = output_size(H, W, k, s)
    padded = np.pad(changed, p)
    map_out = np.zeros((Ho, Wo), bool)
    for ky in range(k):
        for kx in range(k):
            map_out |= padded[ky:ky + (Ho - 1) * s + 1:s, kx:kx + (Wo - 1) * s + 1:s]
    y = np.where(map_out[None, None], dense_conv(x_ref_next, w, b, s, act), y_prev)
    return x_ref_next, y, map_out.astype(np.uint8)

"""Shared pytest fixtures. Keep this small and generic: part-specific helpers belong in the test files."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

# models/ holds scripts (zoo.py, synthetic_video.py, real_material.py), not an installed package.
sys.path.insert(0, str(REPO_ROOT / "models"))
try:  # the editable install; before it exists, the pure-Python parts still import from the tree
    import deltaonnx  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO_ROOT / "python"))


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded generator, fresh per test, so failures reproduce."""
    return np.random.default_rng(20240717)


@pytest.fixture
def empty_state() -> np.ndarray:
    """The empty state a stream starts from (docs/state_protocol.md): float32 [0,0,0,0]."""
    return np.zeros((0, 0, 0, 0), dtype=np.float32)


@pytest.fixture
def cpu_op_library() -> str:
    """Path of the built CPU op library; skips the test when it is not built yet."""
    import deltaonnx

    try:
        return deltaonnx.library_path("cpu")
    except FileNotFoundError as error:
        if os.environ.get("CI"):  # CI builds it: missing there is a failure, not a skip
            pytest.fail(f"op library not built: {error}")
        pytest.skip(f"op library not built: {error}")


def check_under_simd(simd: str, module: str, call: str) -> None:
    """Runs `module.call` (e.g. "check_fixed_cases(seed=11)") in a fresh process with the op library loaded under
    DELTAONNX_SIMD=simd (the table is chosen once per process); skips variants this CPU or build lacks."""
    try:
        from deltaonnx import _native
    except ImportError:
        pytest.skip("deltaonnx._native (which lists the variants this CPU runs) is not built")
    if simd not in set(_native.simd_variants()):
        pytest.skip(f"{simd} not supported here")
    tests_dir = Path(__file__).resolve().parent
    code = (f"import sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; import conftest, {module} as t; t.{call}")
    done = subprocess.run([sys.executable, "-c", code, str(tests_dir), str(tests_dir.parent / "models")],
                          env=dict(os.environ, DELTAONNX_SIMD=simd), cwd=tests_dir, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


@pytest.fixture(scope="session")
def emulated_cuda_library(tmp_path_factory) -> str:
    """libdeltaonnx_ops_cuda_emulated.so: the CUDA library's host code with its kernels run by the host
    emulation, registered for ORT's CPU provider (tests/cuda_build.py); built once per test session."""
    import cuda_build

    try:
        return str(cuda_build.build(tmp_path_factory.mktemp("cuda_emulated"), with_cuda=False).emulated_library)
    except RuntimeError as error:
        pytest.fail(str(error))

"""Shared pytest fixtures and the test layout. Keep this small and generic: builders shared by several test files
live in helpers/ (builders.py, the build and Triton helpers), part-specific ones in their test file.

The tests are in folders by level: unit/ (the numpy reference, the gate's rules, video, decoder maps), ops/ (each
op against ORT and the reference, SIMD variants, fuzzing, the op definition, the CUDA kernels' host emulation),
models/ (the zoo, real material, convert, DeltaSession), tools/ (the CLI, bench, calibrate, demo, Triton, the
docs and the layout), builds/ (the C++ example, portable, cross and edge builds, ORT's headers), gpu/."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
TEST_FOLDERS = ("unit", "ops", "models", "tools", "builds", "gpu")

# What tests import by name, also in the child processes some of them start (pass IMPORT_PATH to them): models/
# holds scripts (zoo.py, synthetic_video.py, real_material.py), not an installed package; helpers/ the shared
# builders; the folders, for the few tests that reuse another test file's helpers; this folder, for conftest.
IMPORT_PATH = [str(REPO_ROOT / "models"), str(TESTS_DIR / "helpers"), *(str(TESTS_DIR / f) for f in TEST_FOLDERS),
               str(TESTS_DIR)]
sys.path[:0] = [p for p in IMPORT_PATH if p not in sys.path]
try:  # the editable install; before it exists, the pure-Python parts still import from the tree
    import deltaonnx  # noqa: F401
except ImportError:
    sys.path.insert(0, str(REPO_ROOT / "python"))


def pytest_sessionstart(session):
    """Under scripts/sanitizer_check.sh, the sanitized build must be the one imported: a run against the
    release build would pass without checking anything."""
    if not os.environ.get("DELTAONNX_SANITIZED"):
        return
    import deltaonnx
    from deltaonnx import _native

    library_dir = Path(os.path.abspath(os.environ["DELTAONNX_LIBRARY_DIR"]))  # links into the build: not resolved
    library = Path(os.path.abspath(deltaonnx.library_path()))
    module_dir = Path(os.path.abspath(_native.__file__)).parent
    if library.parent != library_dir or module_dir != library_dir.parent:
        raise pytest.UsageError(f"DELTAONNX_SANITIZED: imported {library} and {_native.__file__}, "
                                f"not the sanitized build in {library_dir}")


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


@pytest.fixture(scope="module")
def zoo():
    """models/zoo.py, the small models the conversion tests convert (skips where it cannot import)."""
    return pytest.importorskip("zoo")


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


def check_under_simd(simd: str, module: str, call: str, channel_block: str | None = None) -> None:
    """Runs `module.call` (e.g. "check_fixed_cases(seed=11)") in a fresh process with the op library loaded under
    DELTAONNX_SIMD=simd (the table is chosen once per process), and DELTAONNX_CHANNEL_BLOCK=channel_block when given
    (b forced whatever the machine's); skips variants this CPU or build lacks."""
    try:
        from deltaonnx import _native
    except ImportError:
        pytest.skip("deltaonnx._native (which lists the variants this CPU runs) is not built")
    if simd not in set(_native.simd_variants()):
        pytest.skip(f"{simd} not supported here")
    code = f"import os, sys; sys.path[:0] = sys.argv[1].split(os.pathsep); import conftest, {module} as t; t.{call}"
    done = subprocess.run([sys.executable, "-c", code, os.pathsep.join(IMPORT_PATH)],
                          env=dict(os.environ, DELTAONNX_SIMD=simd,
                                   **({"DELTAONNX_CHANNEL_BLOCK": channel_block} if channel_block else {})), cwd=TESTS_DIR, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]


@pytest.fixture(scope="session")
def emulated_cuda_library(tmp_path_factory) -> str:
    """libdeltaonnx_ops_cuda_emulated.so: the CUDA library's host code with its kernels run by the host
    emulation, registered for ORT's CPU provider (helpers/cuda_build.py); built once per test session."""
    import cuda_build

    try:
        return str(cuda_build.build(tmp_path_factory.mktemp("cuda_emulated"), with_cuda=False).emulated_library)
    except RuntimeError as error:
        pytest.fail(str(error))


# Fixtures that compile something with CMake (a minute or more each on 2 cores): the C++ example, the portable
# library, the aarch64 cross build and its example, the CUDA and emulated-CUDA libraries. A test that uses one,
# directly or through another fixture, is marked `slow`, so `pytest -m "not slow"` is the fast loop (README).
BUILD_FIXTURES = frozenset({"example", "portable_library_dir", "cross_build", "aarch64_example", "built", "target",
                            "emulated_cuda_library"})


def pytest_collection_modifyitems(config, items):
    for item in items:
        if BUILD_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)

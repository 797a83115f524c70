"""Shared pytest fixtures. Keep this small and generic: part-specific helpers belong in the test files."""
from __future__ import annotations

import os
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

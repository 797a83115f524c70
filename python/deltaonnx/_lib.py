"""Where the compiled parts of deltaonnx live: the op libraries ORT loads, and the pybind11 module."""
from __future__ import annotations

import os
from pathlib import Path

_LIBRARY_FILES = {
    "cpu": ("libdeltaonnx_ops.so", "libdeltaonnx_ops.dylib", "deltaonnx_ops.dll"),
    "cuda": ("libdeltaonnx_ops_cuda.so", "deltaonnx_ops_cuda.dll"),
}


def _search_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("DELTAONNX_LIBRARY_DIR")
    if env:
        dirs.append(Path(env))
    try:  # the compiled module sits beside lib/, also in editable installs
        from . import _native

        dirs.append(Path(_native.__file__).resolve().parent / "lib")
    except ImportError:
        pass
    dirs.append(Path(__file__).resolve().parent / "lib")
    return dirs


def library_path(kind: str = "cpu") -> str:
    """Path of the op library for `kind` ("cpu" or "cuda"), for SessionOptions.register_custom_ops_library."""
    if kind not in _LIBRARY_FILES:
        raise ValueError(f"unknown library kind {kind!r}: expected one of {sorted(_LIBRARY_FILES)}")
    for d in _search_dirs():
        for name in _LIBRARY_FILES[kind]:
            candidate = d / name
            if candidate.is_file():
                return str(candidate)
    where = ", ".join(str(d) for d in _search_dirs())
    hint = " (it is built only where nvcc was found)" if kind == "cuda" else ""
    raise FileNotFoundError(f"deltaonnx: the {kind} op library was not found in {where}{hint}; reinstall with `pip install .`")


def channel_block(kind: str = "cpu") -> int | None:
    """The channel block b of the op library `kind`: how its blocked tensors lie in memory ([N][C/b][H][W][b],
    docs/ops.md#blocked-layout). The CUDA library's is 1; the CPU library's is MLAS's NCHWc block on this machine
    (or DELTAONNX_CHANNEL_BLOCK), read through the compiled module (None when that is not built)."""
    if kind == "cuda":
        return 1
    try:
        from . import _native
    except ImportError:  # optional: the op libraries work without it
        return None
    return int(_native.channel_block())

"""Helpers shared by the edge-deployment tests (test_cpp_example, test_portable_build, test_cross_build):
finding build tools, configuring and building CMake projects in a temporary directory.

A missing tool skips the test with the reason, except in CI (env CI=true), where .ci/run installs every tool
and a missing one is a failure."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_JOBS = str(max(1, min(os.cpu_count() or 1, 4)))


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(reason: str):
    """Skip for `reason`, or fail in CI where the tools are expected to be installed."""
    if in_ci():
        pytest.fail(f"CI=true but {reason}")
    pytest.skip(reason)


def require_tool(name: str, install_hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"{name} not found ({install_hint})")
    return path


def find_ort_include_dir() -> str | None:
    """ONNX Runtime's C/C++ header directory, where the top-level CMakeLists.txt (cmake/ort_headers.cmake) finds
    it: ORT_INCLUDE_DIR, the system locations, or the copy `pip install .` fetched into its build tree."""
    fetched = sorted(REPO_ROOT.glob("build/*/ort_headers/onnxruntime"))
    candidates = [os.environ.get("ORT_INCLUDE_DIR", ""), "/usr/include/onnxruntime", "/usr/local/include/onnxruntime",
                  "/opt/onnxruntime/include", *map(str, fetched)]
    return next((c for c in candidates if c and (Path(c) / "onnxruntime_cxx_api.h").is_file()), None)


def ort_include_dir() -> str:
    """find_ort_include_dir(), or the test fails (under CI) or skips."""
    found = find_ort_include_dir()
    if found:
        return found
    missing("ONNX Runtime's C++ headers not found: `pip install .` fetches them into build/<wheel tag>/ort_headers, "
            "or bash scripts/fetch_ort_headers.sh DIR")


def run_logged(command: list[str], *, timeout: float, env: dict | None = None, cwd: Path | None = None,
               what: str = "") -> subprocess.CompletedProcess:
    """Runs `command`; on failure, fails the test with the tail of its output."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr)[-6000:]
        pytest.fail(f"{what or command[0]} failed (exit {result.returncode}):\n$ {' '.join(map(str, command))}\n{tail}")
    return result


def cmake_build(source: Path, build: Path, defines: dict[str, str], *, targets: tuple[str, ...] = (),
                timeout: float = 900) -> str:
    """Configures `source` into `build` with -D`defines` and builds `targets` (all by default).
    Returns the configure output (the projects print what they found there)."""
    require_tool("cmake", "apt-get install cmake, or pip install cmake")
    configure = ["cmake", "-S", str(source), "-B", str(build), *(f"-D{k}={v}" for k, v in defines.items())]
    configured = run_logged(configure, timeout=timeout, what="cmake configure")
    build_command = ["cmake", "--build", str(build), "-j", BUILD_JOBS]
    for target in targets:
        build_command += ["--target", target]
    run_logged(build_command, timeout=timeout, what="cmake build")
    return configured.stdout

"""The portable build: the op library configured with -DDELTAONNX_SIMD=OFF holds only the scalar kernels (no AVX
instruction anywhere), and the op and session tests pass against it, so a CPU without AVX gets correct results.

The tests run in a subprocess with DELTAONNX_LIBRARY_DIR pointing at the portable build (deltaonnx.library_path()
looks there first)."""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edge_build import REPO_ROOT, cmake_build, ort_include_dir, require_tool, run_logged

# AVX/AVX-512 code on x86: any ymm/zmm register, an AVX-512 mask register, or a VEX/EVEX-encoded instruction
# (objdump names all of them with a leading "v") on an xmm register.
AVX_INSTRUCTION = re.compile(r"%[yz]mm\d|%k[0-7]\b|^\s*[0-9a-f]+:\s+v[a-z0-9]+\s.*%xmm\d", re.M)
X86 = platform.machine().lower() in ("x86_64", "amd64")


@pytest.fixture(scope="module")
def portable_library_dir(tmp_path_factory) -> Path:
    require_tool("c++", "apt-get install g++")
    build = tmp_path_factory.mktemp("portable_build")
    cmake_build(REPO_ROOT, build, {
        "DELTAONNX_SIMD": "OFF",
        "DELTAONNX_PYTHON": "OFF",
        "DELTAONNX_CUDA": "OFF",
        "ORT_INCLUDE_DIR": ort_include_dir(),
    }, targets=("deltaonnx_ops",))
    assert (build / "libdeltaonnx_ops.so").is_file()
    return build


def avx_lines(library: Path) -> list[str]:
    disassembly = run_logged(["objdump", "-d", "--no-show-raw-insn", str(library)], timeout=120, what="objdump").stdout
    return [m.group(0) for m in AVX_INSTRUCTION.finditer(disassembly)]


@pytest.mark.skipif(not X86, reason="AVX exists only on x86-64")
def test_portable_library_has_no_avx_code(portable_library_dir):
    require_tool("objdump", "apt-get install binutils")
    found = avx_lines(portable_library_dir / "libdeltaonnx_ops.so")
    assert not found, f"{len(found)} AVX instructions in the portable build, e.g. {found[:3]}"


@pytest.mark.skipif(not X86, reason="AVX exists only on x86-64")
def test_the_avx_check_sees_avx_in_the_default_build():
    """The check above can fail: the regular build (SIMD on) is full of AVX code."""
    require_tool("objdump", "apt-get install binutils")
    import deltaonnx

    try:
        library = Path(deltaonnx.library_path("cpu"))
    except FileNotFoundError as error:
        pytest.skip(f"the default op library is not built: {error}")
    if "DELTAONNX_LIBRARY_DIR" in os.environ:
        pytest.skip("DELTAONNX_LIBRARY_DIR points library_path() elsewhere")
    assert len(avx_lines(library)) > 100


def run_tests_against(library_dir: Path, *pytest_args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DELTAONNX_LIBRARY_DIR=str(library_dir))
    env.pop("DELTAONNX_SIMD", None)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *pytest_args]
    return subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_library_dir_override_selects_the_portable_library(portable_library_dir):
    env = dict(os.environ, DELTAONNX_LIBRARY_DIR=str(portable_library_dir))
    result = run_logged([sys.executable, "-c", "import deltaonnx; print(deltaonnx.library_path())"], timeout=60,
                        env=env, cwd=REPO_ROOT)
    assert Path(result.stdout.strip()) == portable_library_dir / "libdeltaonnx_ops.so"


@pytest.mark.parametrize("test_file", ["tests/ops/test_ops.py", "tests/models/test_session.py"])
def test_suite_passes_with_the_portable_library(portable_library_dir, test_file):
    # simd_variant tests drive the installed pybind module's kernels, not the op library: deselected.
    result = run_tests_against(portable_library_dir, test_file, "-k", "not simd_variant")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert re.search(r"\d+ passed", output.strip().splitlines()[-1]), output[-2000:]

"""The `slow` marker (conftest.BUILD_FIXTURES): `pytest -m "not slow"` leaves out exactly the tests that compile
something with CMake, and keeps the rest of those files (the CUDA kernels' host emulation needs no build)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
BUILD_FILES = ("builds/test_cpp_example.py", "builds/test_portable_build.py", "builds/test_cross_build.py",
               "gpu/test_cuda_gpu.py")
HOST_EMULATION = "ops/test_cuda_host.py"


def collected(*args: str) -> set[str]:
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
                          cwd=TESTS.parent, capture_output=True, text=True, timeout=600)
    assert done.returncode in (0, 5), done.stdout[-3000:] + done.stderr[-3000:]  # 5: everything deselected
    return {line for line in done.stdout.splitlines() if "::" in line}


def test_not_slow_leaves_out_the_builds_and_keeps_the_host_emulation():
    files = [f"tests/{name}" for name in (*BUILD_FILES, HOST_EMULATION)]
    fast = collected("-m", "not slow", *files)
    slow = collected("-m", "slow", *files)
    assert fast and slow and not fast & slow

    def names(tests: set[str], file: str) -> set[str]:
        return {test.split("::", 1)[1].split("[", 1)[0] for test in tests if test.startswith(f"tests/{file}::")}

    for name in BUILD_FILES:
        assert names(slow, name), f"{name}: no test marked slow"
    # Tests that compile are slow, wherever the build hides (a fixture of a fixture) ...
    assert "test_portable_library_has_no_avx_code" in names(slow, "builds/test_portable_build.py")
    assert "test_library_exports_only_register_custom_ops" in names(slow, HOST_EMULATION)
    assert "test_emulated_delta_conv_tau0_equals_dense_ort_conv_every_frame" in names(slow, HOST_EMULATION)
    assert names(fast, "builds/test_cpp_example.py") == set() and names(fast, "builds/test_cross_build.py") == set()
    # ... and tests beside them that build nothing stay in the fast loop.
    assert "test_change_step_matches_reference" in names(fast, HOST_EMULATION)
    assert "test_the_avx_check_sees_avx_in_the_default_build" in names(fast, "builds/test_portable_build.py")

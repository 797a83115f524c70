"""How the build finds ONNX Runtime's headers (cmake/ort_headers.cmake): ORT_INCLUDE_DIR first, then the system
locations, then a copy in the build tree, and only then fetched into the build tree without root
(scripts/fetch_ort_headers.sh). The find logic runs in CMake's script mode with the system locations hidden
(replaced by directories of the test's own), so these tests do not depend on what this machine has installed."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from edge_build import REPO_ROOT, require_tool

HEADER = "onnxruntime_cxx_api.h"


def find_headers(tmp_path: Path, *, include_dir: str = "", system: list[Path] = (), fetch: bool = False,
                 fetch_dir: Path | None = None, user: tuple[int, int] | None = None,
                 tree: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    """Runs deltaonnx_find_ort_headers of `tree`'s cmake/ort_headers.cmake in `cmake -P`; the result is in the
    output's `found=` line."""
    require_tool("cmake", "apt-get install cmake")
    driver = tmp_path / "find_ort_headers.cmake"
    driver.write_text(
        f'set(ORT_INCLUDE_DIR "{include_dir}")\n'
        f'set(DELTAONNX_ORT_SYSTEM_DIRS "{";".join(str(s) for s in system) or str(tmp_path / "no_system")}")\n'
        f'set(DELTAONNX_FETCH_ORT_HEADERS {"ON" if fetch else "OFF"})\n'
        f'set(DELTAONNX_ORT_FETCH_DIR "{fetch_dir or tmp_path / "build" / "ort_headers"}")\n'
        f'include("{tree / "cmake" / "ort_headers.cmake"}")\n'
        'deltaonnx_find_ort_headers(found)\n'
        'message(STATUS "found=${found}")\n')
    preexec = None
    if user is not None:
        def preexec():  # the build as an unprivileged user: only the build tree is writable
            os.setgroups([])
            os.setgid(user[1])
            os.setuid(user[0])
    return subprocess.run(["cmake", "-P", str(driver)], capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          preexec_fn=preexec, env=dict(os.environ, HOME=str(tmp_path)))


def said(result: subprocess.CompletedProcess) -> str:
    """CMake's output with its line wrapping undone."""
    return " ".join((result.stdout + result.stderr).split())


def found(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in (result.stdout + result.stderr).splitlines() if "found=" in line]
    return lines[-1].split("found=", 1)[1].strip()


def headers_in(directory: Path) -> Path:
    """A stand-in header directory (the find logic only looks for the file)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / HEADER).write_text("// stand-in\n")
    return directory


def test_ort_include_dir_comes_first(tmp_path):
    mine = headers_in(tmp_path / "mine")
    system = headers_in(tmp_path / "system")
    assert found(find_headers(tmp_path, include_dir=str(mine), system=[system])) == str(mine)
    # the directory above onnxruntime/ works too (an include root such as /usr/include)
    root = tmp_path / "root"
    headers_in(root / "onnxruntime")
    assert found(find_headers(tmp_path, include_dir=str(root), system=[system])) == str(root / "onnxruntime")


def test_an_ort_include_dir_without_the_headers_is_an_error_not_ignored(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = find_headers(tmp_path, include_dir=str(empty), system=[headers_in(tmp_path / "system")], fetch=True)
    assert result.returncode != 0
    assert f"ORT_INCLUDE_DIR={empty} holds no {HEADER}" in said(result)


def test_system_locations_in_order_then_the_build_tree_copy(tmp_path):
    first, second = tmp_path / "first", headers_in(tmp_path / "second")
    assert found(find_headers(tmp_path, system=[first, second], fetch=True)) == str(second)
    fetch_dir = tmp_path / "build" / "ort_headers"
    copy = headers_in(fetch_dir / "onnxruntime")
    assert found(find_headers(tmp_path, system=[first], fetch=True, fetch_dir=fetch_dir)) == str(copy)


def test_nothing_found_and_fetching_off_says_what_to_do(tmp_path):
    result = find_headers(tmp_path, fetch=False)
    assert result.returncode != 0
    for advice in ("fetching them is off", "apt-get install libonnxruntime-dev", "ORT_INCLUDE_DIR"):
        assert advice in said(result), said(result)


@pytest.fixture
def build_parent():
    """A directory the build may write, readable by the user the fetch runs as."""
    directory = Path(tempfile.mkdtemp(prefix="deltaonnx_ort_headers_"))
    directory.chmod(0o777)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow
def test_headers_are_fetched_into_the_build_tree_without_root(build_parent):
    """Network: Debian's libonnxruntime-dev through apt (this system's suite, or trixie on Debian 12). Run as
    nobody when the tests run as root, so the fetch is shown to need no root."""
    require_tool("apt-get", "a Debian system")
    require_tool("dpkg", "a Debian system")
    tmp_path = build_parent
    user = (65534, 65534) if os.geteuid() == 0 else None
    # The module and the script it runs, where that user can read them (a clone may be private to root).
    tree = tmp_path / "tree"
    for part in ("cmake/ort_headers.cmake", "scripts/fetch_ort_headers.sh"):
        (tree / part).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / part, tree / part)
        (tree / part).chmod(0o755)
    fetch_dir = tmp_path / "build" / "ort_headers"
    result = find_headers(tmp_path, fetch=True, fetch_dir=fetch_dir, user=user, tree=tree)
    offline = ("Could not resolve", "Temporary failure resolving", "Failed to fetch")
    if result.returncode != 0 and any(s in result.stderr for s in offline) and not os.environ.get("CI"):
        pytest.skip(f"no network: {result.stderr[-500:]}")
    headers = Path(found(result))
    if headers != fetch_dir / "onnxruntime":  # only when libonnxruntime-dev is installed in /usr/include
        assert headers == Path("/usr/include/onnxruntime"), result.stdout + result.stderr
        pytest.skip("libonnxruntime-dev is installed: the script returns its headers instead of fetching")
    api = (headers / "onnxruntime_c_api.h").read_text()
    version = int(api.split("#define ORT_API_VERSION", 1)[1].split()[0])
    assert version >= 21  # the op library requests API 21
    assert (headers / HEADER).is_file()
    assert "fetching ORT's headers into" in result.stdout + result.stderr
    if user is not None:
        assert (headers / HEADER).stat().st_uid == user[0]

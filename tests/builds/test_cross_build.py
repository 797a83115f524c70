"""aarch64: the op library cross-compiles with Debian's g++-aarch64-linux-gnu (scripts/cross_build_aarch64.sh),
links into a loadable AArch64 library, and -- run under qemu-user with ONNX Runtime's own aarch64 build (PyPI's
wheel) through the C++ example -- gives the outputs the x86 build gives on the zoo models.

Tools: g++-aarch64-linux-gnu (and binutils' readelf); for the qemu run also qemu-user, libc6-arm64-cross and
pip access to PyPI (the onnxruntime aarch64 wheel, cached in the build directory)."""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import deltaonnx
import synthetic_video
import zoo
from edge_build import REPO_ROOT, missing, ort_include_dir, require_tool, run_logged
from test_cpp_example import FRAME_LINE  # the program's per-frame line

CROSS_SCRIPT = REPO_ROOT / "scripts" / "cross_build_aarch64.sh"
QEMU_SCRIPT = REPO_ROOT / "scripts" / "qemu_aarch64.sh"
CROSS_SYSROOT = Path("/usr/aarch64-linux-gnu")
N_FRAMES = 8
GATE = 0.05


@dataclass(frozen=True)
class CrossBuild:
    directory: Path

    @property
    def op_library(self) -> Path:
        return self.directory / "ops" / "libdeltaonnx_ops.so"

    @property
    def example(self) -> Path:
        return self.directory / "example" / "deltaonnx_video"


@pytest.fixture(scope="module")
def cross_build(tmp_path_factory) -> CrossBuild:
    require_tool("aarch64-linux-gnu-g++", "apt-get install g++-aarch64-linux-gnu")
    require_tool("cmake", "apt-get install cmake")
    build = CrossBuild(tmp_path_factory.mktemp("aarch64"))
    run_logged(["bash", str(CROSS_SCRIPT), str(build.directory)], timeout=900, what="cross_build_aarch64.sh",
               env=_env_with_headers())
    return build


def _env_with_headers() -> dict:
    return dict(os.environ, ORT_INCLUDE_DIR=ort_include_dir())


def readelf(*args: str) -> str:
    require_tool("readelf", "apt-get install binutils")
    return run_logged(["readelf", *args], timeout=60, what="readelf").stdout


def test_cross_built_library_is_aarch64_and_exports_the_registration(cross_build):
    library = str(cross_build.op_library)
    assert re.search(r"Machine:\s+AArch64", readelf("-h", library))
    # ORT finds the library's entry point by name: it must be a defined, exported function.
    symbols = readelf("--dyn-syms", "-W", library)
    entry = [line for line in symbols.splitlines() if line.split()[-1:] == ["RegisterCustomOps"]]
    assert entry, "RegisterCustomOps is not exported"
    _, _, _, kind, binding, visibility, section, _ = entry[0].split()
    assert (kind, binding, visibility) == ("FUNC", "GLOBAL", "DEFAULT") and section != "UND", entry[0]
    # The op library resolves ORT's API at load time (OrtApiBase): it links to no libonnxruntime, and to
    # nothing beyond the C/C++ runtime (it was linked with --no-undefined).
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", readelf("-d", library)))
    assert needed <= {"libstdc++.so.6", "libm.so.6", "libgcc_s.so.1", "libc.so.6", "ld-linux-aarch64.so.1"}, needed


def function_bodies(disassembly: str, name_fragment: str) -> list[str]:
    """The disassembled bodies of the functions whose (mangled) names contain `name_fragment`."""
    blocks = re.split(r"\n(?=[0-9a-f]+ <[^>]+>:\n)", disassembly)
    return [b for b in blocks if re.match(rf"[0-9a-f]+ <[^>]*{name_fragment}[^>]*>:", b)]


def test_hot_gemm_loop_uses_neon(cross_build):
    """The GEMM micro tile that DeltaConv spends its time in runs on NEON vectors (fmla on v-registers), whether
    written with intrinsics or left to the compiler's vectoriser."""
    objdump = require_tool("aarch64-linux-gnu-objdump", "apt-get install binutils-aarch64-linux-gnu")
    disassembly = run_logged([objdump, "-d", "--no-show-raw-insn", str(cross_build.op_library)], timeout=120).stdout
    tiles = function_bodies(disassembly, "gemm_tile")
    assert tiles, "no gemm_tile function in the library"
    assert any(re.search(r"\bfmla\s+v\d+\.4s", body) for body in tiles)


# ------------------------------------------------------------------------------------------- qemu-user runs

def require_qemu() -> None:
    require_tool("qemu-aarch64", "apt-get install qemu-user")
    if not (CROSS_SYSROOT / "lib" / "ld-linux-aarch64.so.1").exists():
        missing(f"no aarch64 C library in {CROSS_SYSROOT} (apt-get install libc6-arm64-cross)")


def test_neon_kernels_equal_the_portable_ones_under_qemu(cross_build, tmp_path):
    """tests/builds/cpp/neon_kernel_check.cc against the cross-built kernel library: every NEON kernel gives the portable
    kernel's bits (GEMM: the sequential fused multiply-add sum), and never reads past a B row."""
    require_qemu()
    has_neon_source = (REPO_ROOT / "ops" / "common" / "neon_kernels.cc").is_file()
    program = tmp_path / "neon_kernel_check"
    run_logged(["aarch64-linux-gnu-g++", "-O2", "-std=c++17", f"-I{REPO_ROOT / 'ops'}",
                str(REPO_ROOT / "tests" / "builds" / "cpp" / "neon_kernel_check.cc"),
                str(cross_build.directory / "ops" / "libdeltaonnx_core.a"), "-lpthread", "-o", str(program)],
               timeout=300, what="compiling neon_kernel_check.cc")
    env = {k: v for k, v in os.environ.items() if k != "DELTAONNX_SIMD"}
    result = subprocess.run(["bash", str(QEMU_SCRIPT), str(program)], capture_output=True, text=True, timeout=300,
                            env=env)
    if result.returncode == 77 and not has_neon_source:
        pytest.skip("this tree has no NEON kernels (ops/common/neon_kernels.cc): the portable ones run on aarch64")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("ok (0 failures)"), result.stdout

@pytest.fixture(scope="module")
def aarch64_example(cross_build) -> CrossBuild:
    require_qemu()
    result = subprocess.run(["bash", str(CROSS_SCRIPT), "--example", str(cross_build.directory)],
                            capture_output=True, text=True, timeout=900, env=_env_with_headers())
    output = result.stdout + result.stderr
    if result.returncode == 3:  # the script's "could not download the onnxruntime wheel"
        missing(f"the aarch64 onnxruntime wheel could not be downloaded from PyPI:\n{output[-2000:]}")
    assert result.returncode == 0, f"cross_build_aarch64.sh --example failed:\n{output[-6000:]}"
    assert cross_build.example.is_file()
    return cross_build


@pytest.mark.parametrize("model_name", sorted(zoo.BUILDERS))
def test_aarch64_build_gives_the_x86_outputs_under_qemu(aarch64_example, model_name, tmp_path):
    original = zoo.BUILDERS[model_name]()
    converted = deltaonnx.convert(original, threshold=GATE)
    model_path = tmp_path / f"{model_name}.delta.onnx"
    onnx.save(converted, model_path)
    shape = [d.dim_value for d in original.graph.input[0].type.tensor_type.shape.dim]
    layout = "NHWC" if shape[-1] == 3 and shape[1] != 3 else "NCHW"
    frames = [f.data for f in synthetic_video.sequence(shape, N_FRAMES, seed=11, layout=layout)]
    frames_file = tmp_path / "frames.f32"
    np.stack(frames).astype("<f4").tofile(frames_file)

    # x86 reference: DeltaSession with the installed (SIMD) op library.
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = deltaonnx.DeltaSession(model_path, sess_options=options, dense_fallback=False)  # the delta path, bit for bit
    expected, recomputed_expected = [], []
    for frame in frames:
        expected.append(session.run(None, {original.graph.input[0].name: frame}))
        maps = session.change_maps().values()
        recomputed_expected.append(100.0 * sum(int(np.count_nonzero(m)) for m in maps) / sum(m.size for m in maps))

    dump = tmp_path / "outputs.bin"
    result = subprocess.run(
        ["bash", str(QEMU_SCRIPT), str(aarch64_example.example), "--model", str(model_path), "--ops",
         str(aarch64_example.op_library), "--raw", str(frames_file), "--threads", "1", "--dump", str(dump)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr

    raw, offset = dump.read_bytes(), 0
    for index, outputs in enumerate(expected):
        for name, e in zip([o.name for o in original.graph.output], outputs):
            count = e.size * e.dtype.itemsize
            got = np.frombuffer(raw[offset:offset + count], dtype=e.dtype).reshape(e.shape)
            offset += count
            # Other SIMD kernels and ORT builds sum in other orders: equal to float tolerance, not bit for bit.
            scale = max(1.0, float(np.abs(e).max()))
            np.testing.assert_allclose(got, e, rtol=1e-4, atol=1e-5 * scale, err_msg=f"frame {index}, output {name}")
    assert offset == len(raw)

    # Which pixels the ops recompute follows from the input gate and the graph alone: identical on both machines.
    recomputed = [float(m[2]) for m in FRAME_LINE.findall(result.stdout)]
    assert recomputed == pytest.approx([round(r, 1) for r in recomputed_expected], abs=0.051)

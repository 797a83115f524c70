"""Builds and inspects the CUDA op library for tests/ops/test_cuda_host.py and tests/gpu/test_cuda_gpu.py.

The build goes through the project's own CMakeLists.txt (cmake/cuda.cmake) in a temporary directory, so the
tests prove what `pip install .` builds: libdeltaonnx_ops_cuda.so with nvcc, and the host-emulated variant
libdeltaonnx_ops_cuda_emulated.so (same op code, kernels run on the host) with g++ alone.
"""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edge_build import find_ort_include_dir

REPO_ROOT = Path(__file__).resolve().parents[2]

# What cmake/cuda.cmake builds by default: SASS for each, PTX for the newest.
DEFAULT_ARCHS = ("75", "80", "86", "87", "89", "90")
# One fat binary per .cu file of the library, each with every architecture.
CUDA_SOURCES = ("pipeline_kernels", "gather_gemm_kernel", "max_pool_kernel", "map_union_kernel", "gate_kernel",
                "resize_kernel", "channel_kernels")
KERNEL_NAMES = ("change_step_kernel", "recompute_step_kernel", "densify_step_kernel", "keep_step_kernel",
                "gather_gemm_kernel", "max_pool_kernel", "map_union_kernel", "gate_verdict_kernel",
                "gate_apply_kernel", "resize_kernel", "resize_map_kernel", "global_pool_kernel", "channel_scale_kernel",
                "channel_gate_layer_kernel", "channel_gate_map_kernel")


def find_nvcc() -> str | None:
    for candidate in (os.environ.get("CUDACXX"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def find_cuobjdump() -> str | None:
    """cuobjdump from PATH, the CUDA toolkit, or the pip wheel nvidia-cuda-cuobjdump (nvidia/cu*/bin)."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    candidates = [Path("/usr/local/cuda/bin/cuobjdump")]
    nvcc = find_nvcc()
    if nvcc:
        candidates.append(Path(nvcc).parent / "cuobjdump")
    for site in sys.path:
        candidates.extend(sorted(Path(site).glob("nvidia/cu*/bin/cuobjdump")))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    return None


@dataclass
class CudaBuild:
    build_dir: Path
    cuda_library: Path | None      # None when nvcc is missing
    emulated_library: Path
    archs: tuple[str, ...]
    log: str


def build(build_dir: Path, *, archs: tuple[str, ...] = DEFAULT_ARCHS, with_cuda: bool = True) -> CudaBuild:
    """Configures the top-level project (Python module off) and builds the CUDA library (when nvcc exists
    and with_cuda) and the emulated one. Raises RuntimeError with the log on failure."""
    nvcc = find_nvcc() if with_cuda else None
    configure = [
        "cmake", "-S", str(REPO_ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
        "-DDELTAONNX_PYTHON=OFF", "-DDELTAONNX_CUDA_EMULATION=ON",
        f"-DDELTAONNX_CUDA={'ON' if nvcc else 'OFF'}", f"-DDELTAONNX_CUDA_ARCHS={';'.join(archs)}",
    ]
    if nvcc:
        configure.append(f"-DCMAKE_CUDA_COMPILER={nvcc}")
    headers = find_ort_include_dir()
    if headers:  # else the build fetches them itself
        configure.append(f"-DORT_INCLUDE_DIR={headers}")
    targets = ["deltaonnx_ops_cuda_emulated"] + (["deltaonnx_ops_cuda"] if nvcc else [])
    log = []
    for cmd in (configure, ["cmake", "--build", str(build_dir), "-j", "2", "--target", *targets]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        log.append(f"$ {' '.join(cmd)}\n{proc.stdout}\n{proc.stderr}")
        if proc.returncode != 0:
            raise RuntimeError("CUDA library build failed:\n" + "\n".join(log)[-20000:])
    cuda_library = build_dir / "libdeltaonnx_ops_cuda.so"
    return CudaBuild(build_dir, cuda_library if nvcc else None, build_dir / "libdeltaonnx_ops_cuda_emulated.so",
                     tuple(archs), "\n".join(log))


def exported_symbols(library: Path) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


# ---------------------------------------------------------------------------------------------------------
# Fat binary listing without cuobjdump: the .nv_fatbin ELF section holds fat binaries (magic 0xBA55ED50),
# each a list of entries with a kind (1 = PTX, 2 = ELF/SASS) and the SM number they were compiled for.
# ---------------------------------------------------------------------------------------------------------

FATBIN_MAGIC = 0xBA55ED50


def _elf_section(data: bytes, wanted: str) -> bytes | None:
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError("not a 64-bit ELF file")
    shoff = struct.unpack_from("<Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    sections = []
    for i in range(shnum):
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
        sections.append((name, offset, size))
    names_offset = sections[shstrndx][1]
    for name, offset, size in sections:
        end = data.index(b"\0", names_offset + name)
        if data[names_offset + name:end].decode() == wanted:
            return data[offset:offset + size]
    return None


def fatbin_entries(library: Path) -> list[list[tuple[str, int]]]:
    """[(kind, sm), ...] per fat binary of the library's .nv_fatbin section; kind is 'elf' or 'ptx'."""
    section = _elf_section(library.read_bytes(), ".nv_fatbin")
    if section is None:
        return []
    binaries = []
    pos = 0
    while pos + 16 <= len(section):
        magic, _version, header_size, body_size = struct.unpack_from("<IHHQ", section, pos)
        if magic != FATBIN_MAGIC:
            pos += 8  # fat binaries are 8-byte aligned in the section
            continue
        entries, p, end = [], pos + header_size, pos + header_size + body_size
        while p < end:
            kind, _flags, entry_header, payload = struct.unpack_from("<HHIQ", section, p)
            sm = struct.unpack_from("<I", section, p + 28)[0]
            entries.append(({1: "ptx", 2: "elf"}.get(kind, f"kind{kind}"), sm))
            p += entry_header + payload
        binaries.append(entries)
        pos = end
    return binaries


def cuobjdump_listing(cuobjdump: str, library: Path) -> dict[str, list[int]]:
    """{'elf': [sm, ...], 'ptx': [sm, ...]} from cuobjdump --list-elf / --list-ptx."""
    result = {}
    for kind in ("elf", "ptx"):
        out = subprocess.run([cuobjdump, f"--list-{kind}", str(library)], capture_output=True, text=True, check=True)
        sms = []
        for line in out.stdout.splitlines():
            # "ELF file    1: libdeltaonnx_ops_cuda.1.sm_75.cubin"
            token = line.rsplit(".sm_", 1)
            if len(token) == 2:
                sms.append(int(token[1].split(".")[0]))
        result[kind] = sms
    return result


def cuobjdump_kernels(cuobjdump: str, library: Path, sm: str) -> str:
    """The ELF symbol table of the library's SASS for one architecture (kernel entry points included)."""
    out = subprocess.run([cuobjdump, "-symbols", "-arch", f"sm_{sm}", str(library)], capture_output=True, text=True,
                         check=True)
    return out.stdout


def build_native_module(build_dir: Path):
    """Builds the package's pybind11 module (target _native, with ops/pybind/cuda_host_bindings.cc) and imports
    it from the build directory: for when the installed deltaonnx._native predates the bindings."""
    import importlib.util

    import pybind11

    configure = ["cmake", "-S", str(REPO_ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
                 "-DDELTAONNX_PYTHON=ON", "-DDELTAONNX_CUDA=OFF", f"-DPython_EXECUTABLE={sys.executable}",
                 f"-Dpybind11_DIR={pybind11.get_cmake_dir()}"]
    headers = find_ort_include_dir()
    if headers:
        configure.append(f"-DORT_INCLUDE_DIR={headers}")
    for cmd in (configure, ["cmake", "--build", str(build_dir), "-j", "2", "--target", "_native"]):
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"$ {' '.join(cmd)}\n{proc.stdout[-10000:]}\n{proc.stderr[-10000:]}")
    path = next(build_dir.glob("_native*.so"))
    spec = importlib.util.spec_from_file_location("_native", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

"""Run the Triton Inference Server that the nvidia-pytriton wheel bundles (2.51, CPU, python backend) on a
model repository: for the tests, the benchmark, and anyone who wants a server without a container.

The server runs model.py in the first `python3` on its PATH, and that Python needs numpy < 2 (with numpy 2
every output comes back empty) and deltaonnx: `prepare_server_venv` makes such an environment, which
`python -m deltaonnx.serving.bundled_server setup VENV` does from a shell (.ci/run calls it).

    with BundledTritonServer("repo", venv) as server:
        client = tritonclient.grpc.InferenceServerClient(server.grpc_url)

The binary is launched directly: its backends and caches are copied to a private directory with the stub of
the venv's Python version, only 127.0.0.1 ports are opened, the python backend's shared-memory regions get a
unique prefix, and stop() removes them (/dev/shm/<prefix>*) with the private directory.
"""
from __future__ import annotations

import argparse
import glob
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Optional

PYTRITON = "nvidia-pytriton==0.7.0"
MIN_GLIBC = (2, 35)  # the wheel is manylinux_2_35_x86_64
DEFAULT_VENV = Path(os.environ.get("DELTAONNX_TRITON_VENV", Path.home() / ".cache" / "deltaonnx" / "triton-server-venv"))
PTH_NAME = "deltaonnx-serving.pth"


class ServerError(RuntimeError):
    """The server could not be prepared, did not start, or exited (the message holds its log's tail)."""


def unsupported_reason() -> Optional[str]:
    """Why the bundled server cannot run on this machine, or None."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return f"the nvidia-pytriton wheel runs on Linux x86_64 only, not {sys.platform} {platform.machine()}"
    libc, version = platform.libc_ver()
    try:
        parsed = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        parsed = ()
    if libc != "glibc" or parsed < MIN_GLIBC:
        return f"the nvidia-pytriton wheel needs glibc >= 2.35, this system has {libc or 'no glibc'} {version}"
    return None


def _venv_python(venv: Path) -> Path:
    return Path(venv) / "bin" / "python"


def _venv_query(venv: Path, code: str) -> str:
    return subprocess.run([str(_venv_python(venv)), "-c", code], check=True, capture_output=True,
                          text=True).stdout.strip()


def _deltaonnx_location() -> str:
    """The directory holding the deltaonnx package this Python imports (a venv or editable install)."""
    import deltaonnx

    return str(Path(deltaonnx.__file__).resolve().parents[1])


def server_venv_ready(venv: Path = DEFAULT_VENV) -> bool:
    return _venv_python(venv).is_file() and bool(glob.glob(str(Path(venv) / "lib" / "python3*" / "site-packages"
                                                                  / "pytriton" / "tritonserver" / "bin"
                                                                  / "tritonserver")))


def prepare_server_venv(venv: Path = DEFAULT_VENV, python: str = sys.executable) -> Path:
    """Create (once) the server's environment: this Python's packages (--system-site-packages), numpy < 2
    and nvidia-pytriton in front of them, and this Python's deltaonnx (a .pth, refreshed on every call)."""
    venv = Path(venv)
    if not server_venv_ready(venv):
        subprocess.run([python, "-m", "venv", "--system-site-packages", str(venv)], check=True)
        subprocess.run([str(_venv_python(venv)), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        PYTRITON, "numpy<2"], check=True)
    site = _venv_query(venv, "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    (Path(site) / PTH_NAME).write_text(_deltaonnx_location() + "\n")
    return venv


def _die_with_parent() -> None:
    """In the server's process before exec: SIGTERM it when the Python that started it dies (a killed test or
    benchmark must not leave a server behind; its own session keeps it out of the caller's signals)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BundledTritonServer:
    """The bundled tritonserver on `repository`, with model.py run by the Python of `venv`."""

    def __init__(self, repository, venv: Path = DEFAULT_VENV, *, exit_timeout_s: int = 10,
                 shm_bytes: int = 16 << 20, start_timeout_s: float = 120.0, log_verbose: int = 0,
                 extra_args: tuple = ()):
        self.repository = Path(repository).resolve()
        self.venv = Path(venv)
        self.exit_timeout_s = max(int(exit_timeout_s), 10)
        self.shm_bytes = int(shm_bytes)
        self.start_timeout_s = float(start_timeout_s)
        self.log_verbose = int(log_verbose)
        self.extra_args = tuple(extra_args)
        self.shm_prefix = f"deltaonnx{os.getpid()}x{uuid.uuid4().hex[:8]}_"
        self.process: Optional[subprocess.Popen] = None
        self.workdir: Optional[Path] = None
        self.http_port = self.grpc_port = 0

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except (OSError, TypeError):
            return "(no log)"

    def _layout(self) -> tuple[Path, Path, Path, Path]:
        """(tritonserver binary, its shared libraries, backends dir, caches dir) set up in the private dir."""
        found = glob.glob(str(self.venv / "lib" / "python3*" / "site-packages" / "pytriton" / "tritonserver"))
        if not found:
            raise ServerError(f"{self.venv} has no nvidia-pytriton: run `python -m deltaonnx.serving.bundled_server "
                              f"setup {self.venv}`")
        bundle = Path(found[0])
        version = _venv_query(self.venv, "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')")
        stub = bundle / "python_backend_stubs" / version / "triton_python_backend_stub"
        if not stub.is_file():
            raise ServerError(f"nvidia-pytriton has no python backend stub for Python {version}")
        backends, caches = self.workdir / "backends", self.workdir / "caches"
        shutil.copytree(bundle / "backends", backends)
        shutil.copytree(bundle / "caches", caches)
        shutil.copy2(stub, backends / "python" / stub.name)
        return bundle / "bin" / "tritonserver", bundle.parent.parent / "nvidia_pytriton.libs", backends, caches

    def start(self) -> "BundledTritonServer":
        reason = unsupported_reason()
        if reason:
            raise ServerError(reason)
        self.workdir = Path(tempfile.mkdtemp(prefix="deltaonnx-triton-"))
        try:
            binary, libs, backends, caches = self._layout()
            libdir = _venv_query(self.venv, "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')")
            env = dict(os.environ)
            env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(libs), libdir, env.get("LD_LIBRARY_PATH", "")) if p)
            env["PATH"] = os.pathsep.join((str(self.venv / "bin"), env.get("PATH", "")))
            env.pop("PYTHONPATH", None)  # the server's Python is the venv's, with its own numpy
            self.http_port, self.grpc_port = free_port(), free_port()
            command = [
                str(binary), f"--model-repository={self.repository}",
                f"--backend-directory={backends}", f"--cache-directory={caches}",
                "--http-address=127.0.0.1", f"--http-port={self.http_port}",
                "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
                "--allow-metrics=false", f"--exit-timeout-secs={self.exit_timeout_s}",
                f"--backend-config=python,shm-default-byte-size={self.shm_bytes}",
                f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
                f"--log-verbose={self.log_verbose}", *self.extra_args,
            ]
            with open(self.log_path, "wb") as log:
                self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                                cwd=self.workdir, start_new_session=True,
                                                preexec_fn=_die_with_parent)
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerError(f"tritonserver exited with code {self.process.returncode} while starting:\n"
                                  f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise ServerError(f"tritonserver not ready after {self.start_timeout_s:.0f} s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> Optional[int]:
        """Stop the server (SIGTERM, then SIGKILL after the exit timeout) and remove what it left behind."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout=self.exit_timeout_s + 10)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=30)
            code = self.process.returncode
        for leftover in glob.glob(f"/dev/shm/{self.shm_prefix}*"):
            try:
                os.remove(leftover)
            except OSError:
                pass
        if self.workdir is not None and self.workdir.exists():
            kept = os.environ.get("DELTAONNX_KEEP_TRITON_LOG")
            if kept and self.log_path.is_file():
                shutil.copy2(self.log_path, kept)
            shutil.rmtree(self.workdir, ignore_errors=True)
        return code

    def __enter__(self) -> "BundledTritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deltaonnx.serving.bundled_server",
                                     description="Prepare or run the Triton server bundled with nvidia-pytriton.")
    sub = parser.add_subparsers(dest="command", required=True)
    setup = sub.add_parser("setup", help="create the server's Python environment (numpy < 2, pytriton, deltaonnx)")
    setup.add_argument("venv", nargs="?", default=str(DEFAULT_VENV))
    serve = sub.add_parser("serve", help="run the server on a model repository until interrupted")
    serve.add_argument("repository")
    serve.add_argument("--venv", default=str(DEFAULT_VENV))
    args = parser.parse_args(argv)
    reason = unsupported_reason()
    if reason:  # nothing to set up here (the tests skip with this reason); serving is an error
        print(f"bundled Triton server unavailable: {reason}", file=sys.stderr)
        return 0 if args.command == "setup" else 2
    if args.command == "setup":
        print(prepare_server_venv(Path(args.venv)))
        return 0
    with BundledTritonServer(args.repository, Path(args.venv)) as server:
        print(f"serving {args.repository}: gRPC {server.grpc_url}, HTTP {server.http_url} (Ctrl-C stops)")
        try:
            while server.alive():
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())

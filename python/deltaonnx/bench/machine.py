"""The machine a benchmark ran on, and a progress line while it runs."""
from __future__ import annotations

import os
import platform
import sys
import time
from typing import Optional

import numpy as np
import onnxruntime as ort

from .._version import __version__


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    simd = None
    try:
        from .. import _native  # optional compiled module: the kernels it reports are informational

        simd = _native.simd_level()
    except Exception:  # noqa: BLE001 - informational only
        pass
    try:  # other work on the machine makes timings noisy: say how busy it was
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        load = None
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "os": platform.platform(), "python": platform.python_version(),
            "onnxruntime": ort.__version__, "numpy": np.__version__, "deltaonnx": __version__, "op_kernels": simd,
            "load_average_1_5_15min": load}


class Progress:
    """A one-line progress bar on stderr (a line per 10% when stderr is not a terminal)."""

    def __init__(self, total: Optional[int], label: str, enabled: bool = True, stream=None):
        self.total, self.label, self.enabled = total, label, enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.last_draw = 0.0
        self.last_decile = -1
        self.started = time.perf_counter()

    def update(self, done: int, note: str = "") -> None:
        if not self.enabled:
            return
        if self.tty:
            now = time.perf_counter()
            if now - self.last_draw < 0.1 and done != self.total:
                return
            self.last_draw = now
            self.stream.write("\r" + self._line(done, note) + "\033[K")
            self.stream.flush()
        elif self.total:
            decile = done * 10 // self.total
            if decile > self.last_decile:
                self.last_decile = decile
                self.stream.write(self._line(done, note) + "\n")
                self.stream.flush()

    def _line(self, done: int, note: str) -> str:
        elapsed = time.perf_counter() - self.started
        if self.total:
            width = 24
            filled = min(width, done * width // max(self.total, 1))
            bar = "#" * filled + "." * (width - filled)
            eta = elapsed / done * (self.total - done) if done else 0.0
            return f"{self.label} [{bar}] {done}/{self.total} frames {elapsed:.0f}s eta {eta:.0f}s {note}"
        return f"{self.label} {done} frames {elapsed:.0f}s {note}"

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()

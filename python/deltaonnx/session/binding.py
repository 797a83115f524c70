"""One stream's IOBinding, bound through ORT's C-level objects where this ORT has them."""
from __future__ import annotations

from typing import Any

import onnxruntime as ort

try:  # ORT's C-level OrtValue: wraps a contiguous host array in one call, without the Python wrapper's checks
    from onnxruntime.capi._pybind_state import OrtValue as _COrtValue
except ImportError:  # pragma: no cover - an ORT without it: the public calls
    _COrtValue = None


def as_ort_value(value) -> ort.OrtValue:
    return value if isinstance(value, ort.OrtValue) else ort.OrtValue(value)


class StreamBinding:
    """One stream's IOBinding, called per run through ORT's C-level objects where this ORT has them: the
    Python wrappers add checks for WebGPU graph capture and build a device object on every call, which is
    most of the binding cost per run. Binding the state once goes through the public API."""

    def __init__(self, session: ort.InferenceSession):
        self.public = session.io_binding()
        self._c_binding = getattr(self.public, "_iobinding", None)
        self._c_session = getattr(session, "_sess", None)
        try:
            self._cpu = ort.OrtDevice.make("cpu", 0)._get_c_device()
        except AttributeError:  # an ORT without OrtDevice.make: the public calls below
            self._cpu = None
        self._lean = self._c_binding is not None and self._c_session is not None and self._cpu is not None
        # (array, C-level device) -> C-level OrtValue on the array's memory (None: not offered by this ORT)
        self._value_of = getattr(_COrtValue, "ortvalue_from_numpy", None) if self._lean else None
        self._session = session
        self._frames: dict[str, Any] = {}  # the bound frames, kept alive while ORT points at them

    def bind_frame(self, name: str, value) -> None:
        self._frames[name] = value
        if not self._lean:
            if isinstance(value, ort.OrtValue):
                self.public.bind_ortvalue_input(name, value)
            else:
                self.public.bind_cpu_input(name, value)
        elif isinstance(value, ort.OrtValue):
            self._c_binding.bind_ortvalue_input(name, value._ortvalue)
        else:
            self._c_binding.bind_input(name, value)  # wraps the array's memory, no copy

    def bind_fresh_output(self, name: str) -> None:
        """ORT allocates this output anew in the next run (else it writes into the last run's buffer)."""
        if self._lean:
            self._c_binding.bind_output(name, self._cpu)
        else:
            self.public.bind_output(name, "cpu")

    def bind_output_to(self, name: str, value) -> None:
        """Binds an output to the memory of `value` (a contiguous host array or OrtValue, kept alive by the caller
        for the run)."""
        if not self._lean:
            self.public.bind_ortvalue_output(name, as_ort_value(value))
        elif isinstance(value, ort.OrtValue):
            self._c_binding.bind_ortvalue_output(name, value._ortvalue)
        else:
            self._c_binding.bind_output(name, self._cpu, value.dtype, value.shape, value.ctypes.data)

    def run(self, run_options: ort.RunOptions | None) -> None:
        if self._lean:
            self._c_session.run_with_iobinding(self._c_binding, run_options)
        else:
            self._session.run_with_iobinding(self.public, run_options)

    def outputs(self):
        """The run's outputs as ORT's own vector (indexed without wrapping each in a Python object)."""
        if self._lean:
            return self._c_binding.get_outputs()
        getter = getattr(self.public, "get_outputs_as_ortvaluevector", None)
        return getter() if getter is not None else self.public.get_outputs()

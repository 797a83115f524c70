"""The dense twin a DeltaSession falls back to (graph_passes/dense_twin.py: each Delta op back to Conv/MaxPool,
state and maps gone), built once and run timed (docs/design.md#dense-fallback, #the-clock)."""
from __future__ import annotations

import threading
import time
from typing import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from ..graph_passes.dense_twin import dense_twin
from .feeds import FLOAT_DTYPES


class DenseTwinRunner:
    """The twin's ORT session, made on first use (or by `build`, which a session runs in a thread of its own when it
    is created), one at a time under a lock."""

    def __init__(self, load_model: Callable[[], onnx.ModelProto], output_names: Sequence[str],
                 options: ort.SessionOptions, providers: Sequence):
        self._load_model = load_model
        self._output_names = list(output_names)
        self._options = options
        self._providers = providers
        self._lock = threading.Lock()
        self.session: ort.InferenceSession | None = None

    def build(self) -> None:
        """Builds the twin and, where the model's inputs have fixed shapes, runs it once on zeros: ORT's first run
        of a session costs ~20% more than the next (buffers found and allocated), paid here, not by the first frame
        that falls back. An error is left for the first run that needs the twin, which builds it again."""
        try:
            with self._lock:
                twin = self._session_locked()
                feed = {}
                for i in twin.get_inputs():
                    dtype = FLOAT_DTYPES.get(i.type)
                    if dtype is None or not all(isinstance(d, int) and d > 0 for d in i.shape):
                        return
                    feed[i.name] = np.zeros(i.shape, dtype)
                twin.run(None, feed)
        except Exception:  # noqa: BLE001 - the build is retried, and its error raised, where the twin is used
            pass

    def run_timed(self, requested: list[str], feed: dict, run_options: ort.RunOptions | None) -> tuple[list, float]:
        """The twin's outputs and the seconds of ORT's run (the fallback's clock)."""
        with self._lock:
            twin = self._session_locked()
        start = time.perf_counter()
        outputs = twin.run(requested, feed, run_options)
        return outputs, time.perf_counter() - start

    def _session_locked(self) -> ort.InferenceSession:
        if self.session is None:
            twin = dense_twin(self._load_model(), self._output_names)
            self.session = ort.InferenceSession(twin.SerializeToString(), sess_options=self._options,
                                                providers=self._providers)
        return self.session

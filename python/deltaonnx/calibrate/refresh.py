"""PeriodicRefresh: a full recompute every K frames per stream, against drift."""
from __future__ import annotations

import threading
from typing import Hashable

from ..graph_passes.protocol import CALIBRATION_METADATA_KEY
from .stamp import CalibrationStamp


class PeriodicRefresh:
    """Runs a DeltaSession with a full recompute every `every` frames of each stream (0: never).

    The refresh is `session.reset(stream)` before the run: the stream starts again from empty state, so that
    frame is computed densely and exactly, and any error the thresholds let accumulate is gone.

        runner = PeriodicRefresh(deltaonnx.DeltaSession("model.delta.onnx"), every=50)
        outputs = runner.run(None, {"images": frame}, stream="camera-1")
    """

    def __init__(self, session, every: int):
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ValueError(f"PeriodicRefresh: every must be an int >= 0, got {every!r}")
        self.session, self.every = session, every
        self._frames: dict[Hashable, int] = {}  # runs per stream since its last reset
        self._lock = threading.Lock()

    @classmethod
    def from_model(cls, session) -> "PeriodicRefresh":
        """The refresh period the calibration stored in the model's metadata (0 when none)."""
        stamp = CalibrationStamp.parse(
            session.inference_session.get_modelmeta().custom_metadata_map.get(CALIBRATION_METADATA_KEY))
        return cls(session, stamp.refresh if stamp is not None else 0)

    def run(self, output_names, input_feed, run_options=None, *, stream: Hashable = "default") -> list:
        with self._lock:  # streams may run from several threads
            count = self._frames.get(stream, 0)
            self._frames[stream] = count + 1
        if self.every and count and count % self.every == 0:
            self.session.reset(stream)
        return self.session.run(output_names, input_feed, run_options, stream=stream)

    def reset(self, stream: Hashable | None = None) -> None:
        self.session.reset(stream)
        with self._lock:
            if stream is None:
                self._frames.clear()
            else:
                self._frames.pop(stream, None)

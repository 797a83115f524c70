"""DeltaSession: run a converted model like an onnxruntime.InferenceSession while the state is carried for you
(delta_session.py says how, and who owns which buffer)."""
from __future__ import annotations

from ..graph_passes.metadata import StateEntry
from ..graph_passes.protocol import METADATA_KEY, STATE_PREFIX
from .delta_session import DEFAULT_STREAM, DeltaSession

__all__ = ["DEFAULT_STREAM", "DeltaSession", "METADATA_KEY", "STATE_PREFIX", "StateEntry"]

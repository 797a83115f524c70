"""deltaonnx: change-aware video inference for ONNX Runtime.

Conv and MaxPool nodes of an exported CNN become DeltaConv/DeltaPool custom ops that recompute only the
output regions whose receptive field saw the input change, reusing the rest from the previous frame.
"""
from __future__ import annotations

__version__ = "0.1.0"

DOMAIN = "com.deltaonnx"

from ._lib import library_path  # noqa: E402
from .session import DeltaSession  # noqa: E402
from .convert import convert  # noqa: E402

__all__ = ["DOMAIN", "DeltaSession", "__version__", "convert", "library_path"]

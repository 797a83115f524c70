"""deltaonnx: change-aware video inference for ONNX Runtime.

Conv and MaxPool nodes of an exported CNN become DeltaConv/DeltaPool custom ops that recompute only the
output regions whose receptive field saw the input change, reusing the rest from the previous frame.
"""
from __future__ import annotations

from ._lib import library_path
from ._version import __version__
from .convert import ConversionOptions, convert
from .graph_passes.protocol import DOMAIN
from .session import DeltaSession

__all__ = ["DOMAIN", "ConversionOptions", "DeltaSession", "__version__", "convert", "library_path"]

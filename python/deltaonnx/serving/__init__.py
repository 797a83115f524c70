"""Serving converted models on NVIDIA Triton Inference Server, one sequence per camera (docs/serving.md)."""
from __future__ import annotations

from .triton_repository import TritonRepository, write_triton_repository

__all__ = ["TritonRepository", "write_triton_repository"]

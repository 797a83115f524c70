"""The window geometry of conv, max-pool and the change-map OR-pool, in one place: output extent, padding, and
which input pixel each tap of each output pixel reads."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

_AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def _pair(values, name: str, default: int) -> tuple[int, int]:
    if values is None or len(values) == 0:
        return (default, default)
    values = tuple(int(v) for v in values)
    if len(values) != 2:
        raise ValueError(f"{name} must hold 2 values for a 2-D window, got {list(values)}")
    return values


def _same_padding(in_size: int, kernel: int, stride: int, dilation: int, upper: bool) -> tuple[int, int]:
    """ONNX auto_pad SAME_*: total padding so that out == ceil(in / stride); the odd pixel goes to the
    end (SAME_UPPER) or the beginning (SAME_LOWER)."""
    out = -(-in_size // stride)
    total = max(0, (out - 1) * stride + (kernel - 1) * dilation + 1 - in_size)
    begin = total // 2 if upper else total - total // 2
    return begin, total - begin


def resolve_pads(in_hw, kernel_shape, strides=(1, 1), dilations=(1, 1), pads=None, auto_pad="NOTSET"):
    """Explicit [top, left, bottom, right] pads of a 2-D window, ONNX rules for `auto_pad`
    (NOTSET: `pads` as given, default zeros; VALID: zeros; SAME_UPPER/SAME_LOWER: out = ceil(in/stride)).
    Geometry of docs/design.md rule 4 (which input pixels an output pixel reads)."""
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    if auto_pad == "":  # ORT's reading of an empty auto_pad, and the ops'
        auto_pad = "NOTSET"
    if auto_pad not in _AUTO_PADS:
        raise ValueError(f"auto_pad must be one of {_AUTO_PADS}, got {auto_pad!r}")
    kernel_shape = _pair(kernel_shape, "kernel_shape", 1)
    strides = _pair(strides, "strides", 1)
    dilations = _pair(dilations, "dilations", 1)
    if auto_pad == "VALID":
        return (0, 0, 0, 0)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        upper = auto_pad == "SAME_UPPER"
        top, bottom = _same_padding(int(in_hw[0]), kernel_shape[0], strides[0], dilations[0], upper)
        left, right = _same_padding(int(in_hw[1]), kernel_shape[1], strides[1], dilations[1], upper)
        return (top, left, bottom, right)
    if pads is None or len(pads) == 0:
        return (0, 0, 0, 0)
    pads = tuple(int(p) for p in pads)
    if len(pads) != 4:
        raise ValueError(f"pads must hold 4 values [top, left, bottom, right], got {list(pads)}")
    return pads


def _output_extent(in_size, kernel, stride, dilation, pad_begin, pad_end, ceil_mode) -> int:
    """Output extent along one axis, ONNX rules: floor, or ceil for ceil_mode pools where the last window
    must start inside the input or the begin padding (ORT and PyTorch agree on this)."""
    span = in_size + pad_begin + pad_end - ((kernel - 1) * dilation + 1)
    if span < 0:
        return 0
    if ceil_mode:
        out = -(-span // stride) + 1
        if (out - 1) * stride >= in_size + pad_begin:
            out -= 1
        return out
    return span // stride + 1


@dataclass(frozen=True)
class _Window:
    """A resolved 2-D sliding window: output pixel (oy, ox) reads input pixel
    (oy*stride_y - pad_top + ky*dil_y, ox*stride_x - pad_left + kx*dil_x) for each tap (ky, kx)."""

    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    pads: tuple[int, int, int, int]

    @classmethod
    def resolve(cls, in_hw, kernel_shape, strides=None, pads=None, dilations=None, auto_pad="NOTSET",
                ceil_mode=0, out_hw=None) -> "_Window":
        in_hw = (int(in_hw[0]), int(in_hw[1]))
        kernel = _pair(kernel_shape, "kernel_shape", 1)
        strides = _pair(strides, "strides", 1)
        dilations = _pair(dilations, "dilations", 1)
        if min(kernel) < 1 or min(strides) < 1 or min(dilations) < 1:
            raise ValueError(f"kernel_shape, strides and dilations must be >= 1, got {kernel}, {strides}, {dilations}")
        pads = resolve_pads(in_hw, kernel, strides, dilations, pads, auto_pad)
        if min(pads) < 0:
            raise ValueError(f"negative pads are not supported, got {list(pads)}")
        computed = tuple(
            _output_extent(in_hw[a], kernel[a], strides[a], dilations[a], pads[a], pads[a + 2], bool(ceil_mode))
            for a in range(2)
        )
        if out_hw is not None and tuple(int(v) for v in out_hw) != computed:
            raise ValueError(f"out_hw {tuple(out_hw)} does not match the window's output extent {computed}")
        return cls(in_hw, computed, kernel, strides, dilations, pads)

    def padded(self, x: np.ndarray, fill) -> np.ndarray:
        """x [..., H, W] padded with `fill` so every tap view is in bounds (ceil_mode windows may reach
        past the end padding: those taps read `fill` too)."""
        pad_width = [(0, 0)] * (x.ndim - 2)
        for a in range(2):
            begin, end = self.pads[a], self.pads[a + 2]
            reach = (self.out_hw[a] - 1) * self.strides[a] + (self.kernel[a] - 1) * self.dilations[a] + 1
            end = max(end, reach - self.in_hw[a] - begin, 0)
            pad_width.append((begin, end))
        return np.pad(x, pad_width, mode="constant", constant_values=fill)

    def taps(self, padded: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
        """(ky, kx, view [..., Ho, Wo]): the input value each output pixel reads at tap (ky, kx)."""
        (ho, wo), (sy, sx), (dy, dx) = self.out_hw, self.strides, self.dilations
        for ky in range(self.kernel[0]):
            for kx in range(self.kernel[1]):
                y0, x0 = ky * dy, kx * dx
                yield ky, kx, padded[..., y0:y0 + (ho - 1) * sy + 1:sy, x0:x0 + (wo - 1) * sx + 1:sx]

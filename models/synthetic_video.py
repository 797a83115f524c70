"""Deterministic synthetic frame sequences for tests: the cases a video stream presents to deltaonnx.

`sequence(shape, n_frames, seed)` returns `SyntheticFrame`s whose `kind` says what happened since the
previous frame:

| kind | what changed |
| --- | --- |
| `first` | the first frame of the stream (state is empty) |
| `static` | nothing: the frame equals the previous one bit for bit |
| `blob` | a bright disc moved a few pixels (a local change) |
| `noise` | sensor noise redrawn everywhere, at most `noise` in magnitude (below a typical input gate) |
| `global` | the whole frame's brightness changed (a camera gain change: every pixel changes) |
| `reset` | a new scene; the consumer should reset its stream state before this frame (`frame.reset`) |

Values are float32 image units in [0, 1]. `shape` is the full tensor shape, NCHW by default or NHWC with
`layout="NHWC"`; batch item n is an independent stream with its own scene (docs/design.md, "DeltaConv").
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# After the first frame the kinds cycle through this schedule, so any sequence of 10+ frames has them all.
SCHEDULE = ("static", "blob", "blob", "noise", "static", "global", "blob", "reset", "blob")


@dataclass(frozen=True)
class SyntheticFrame:
    data: np.ndarray  # float32, the requested shape
    kind: str         # see the module docstring

    @property
    def reset(self) -> bool:
        """True when the stream starts here: state must be empty for this frame."""
        return self.kind in ("first", "reset")


class _Scene:
    """One stream's scene: a smooth background, a moving disc, additive noise and a gain."""

    def __init__(self, rng: np.random.Generator, channels: int, h: int, w: int):
        self.rng, self.h, self.w = rng, h, w
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
        self.yy, self.xx = yy, xx
        background = np.zeros((channels, h, w))
        for c in range(channels):
            for _ in range(3):
                fy, fx = rng.uniform(0.5, 3.0, 2) * 2 * np.pi / np.array([h, w])
                phase = rng.uniform(0, 2 * np.pi)
                background[c] += np.sin(fy * yy + fx * xx + phase)
        background = (background - background.min()) / max(np.ptp(background), 1e-9)
        self.background = 0.15 + 0.6 * background
        self.color = rng.uniform(0.7, 1.0, (channels, 1, 1))
        self.radius = max(1.5, min(h, w) / 8)
        self.center = rng.uniform([self.radius, self.radius], [h - self.radius, w - self.radius])
        angle = rng.uniform(0, 2 * np.pi)
        self.velocity = np.array([np.sin(angle), np.cos(angle)]) * max(1.0, min(h, w) / 24)
        self.noise = np.zeros((channels, h, w))
        self.gain = 1.0

    def move_blob(self) -> None:
        self.center = self.center + self.velocity
        for axis, size in enumerate((self.h, self.w)):  # bounce off the borders
            if not self.radius <= self.center[axis] <= size - self.radius:
                self.velocity[axis] = -self.velocity[axis]
                self.center[axis] = np.clip(self.center[axis], self.radius, size - self.radius)

    def redraw_noise(self, amplitude: float) -> None:
        # half the bound each side, so the change between two noise fields stays within `amplitude`
        self.noise = self.rng.uniform(-amplitude / 2, amplitude / 2, self.noise.shape)

    def change_gain(self) -> None:
        self.gain = 1.0 + (0.25 if self.gain <= 1.0 else -0.25)

    def render(self) -> np.ndarray:
        distance = np.hypot(self.yy - self.center[0], self.xx - self.center[1])
        disc = np.clip(self.radius - distance + 0.5, 0, 1)  # anti-aliased edge
        image = self.background * (1 - disc) + self.color * disc
        return np.clip(image * self.gain + self.noise, 0, 1).astype(np.float32)


def sequence(shape, n_frames: int, seed: int = 0, *, layout: str = "NCHW", noise: float = 0.01) -> list[SyntheticFrame]:
    """`n_frames` deterministic frames of `shape` (N,C,H,W, or N,H,W,C with layout="NHWC"): the first,
    then the kinds of SCHEDULE in a cycle. `noise` bounds the per-pixel change of `noise` frames."""
    if layout not in ("NCHW", "NHWC"):
        raise ValueError(f"layout must be NCHW or NHWC, got {layout!r}")
    if len(shape) != 4:
        raise ValueError(f"shape must be 4-D, got {shape}")
    n, c, h, w = shape if layout == "NCHW" else (shape[0], shape[3], shape[1], shape[2])
    rng = np.random.default_rng(seed)
    scenes = [_Scene(rng, c, h, w) for _ in range(n)]
    frames = []
    for t in range(n_frames):
        kind = "first" if t == 0 else SCHEDULE[(t - 1) % len(SCHEDULE)]
        for i, scene in enumerate(scenes):
            if kind == "blob":
                scene.move_blob()
            elif kind == "noise":
                scene.redraw_noise(noise)
            elif kind == "global":
                scene.change_gain()
            elif kind == "reset":
                scenes[i] = _Scene(rng, c, h, w)
        data = np.stack([scene.render() for scene in scenes])
        if layout == "NHWC":
            data = np.ascontiguousarray(data.transpose(0, 2, 3, 1))
        frames.append(SyntheticFrame(data, kind))
    return frames

"""Frames in, model inputs out: read a clip (any file OpenCV reads, a folder of images, or arrays) and turn each
frame into the tensor a model expects.

    from deltaonnx.video import Preprocess, read_frames
    prep = Preprocess(size=(480, 640), resize="letterbox", scale=1 / 255, color="RGB", layout="NCHW")
    for frame in read_frames("clip.mp4", count=100):      # uint8 HxWx3 BGR, as OpenCV decodes
        tensor = prep(frame)                               # float32 [1,3,480,640]

Preprocessing, in order: (1) geometry: `letterbox` scales the frame to fit `size` keeping its aspect ratio and
pads the rest with `pad_value` (centred, as YOLO does), `resize` stretches it to `size`, `none` keeps the
frame's own size; (2) colour: `RGB`, `BGR` or `GRAY` (one channel); (3) values: `(pixel * scale - mean) / std`
per channel, pixels being 0..255; (4) layout: `NCHW` or `NHWC`, with a batch dimension of 1.

OpenCV (`opencv-python-headless`) decodes files and resizes; PyAV is used for files OpenCV cannot open when it is
installed. Both are imported only when needed.
"""
from __future__ import annotations

import importlib
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence, Union

import numpy as np

RESIZE_MODES = ("letterbox", "resize", "none")
COLORS = ("RGB", "BGR", "GRAY")
LAYOUTS = ("NCHW", "NHWC")
MAX_INPUT_SIDE = 8192  # a model input side beyond 8K video is a typo, and its frame buffer would not fit in memory
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")

FrameSource = Union[str, os.PathLike, Sequence[np.ndarray], np.ndarray]


class VideoError(ValueError):
    """A clip cannot be read or written, or preprocessing options do not fit the frames or the model."""


def _cv2():
    try:
        return importlib.import_module("cv2")
    except ImportError as error:
        raise VideoError(
            "reading and resizing video needs OpenCV: pip install opencv-python-headless "
            "(or the project's `video` extra)") from error


# ------------------------------------------------------------------------------------------------------
# preprocessing
# ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Geometry:
    """Where a frame landed in the model input: input = frame * scale + pad (per axis). Maps boxes back."""

    frame_hw: tuple[int, int]
    input_hw: tuple[int, int]
    scale_y: float
    scale_x: float
    pad_top: int
    pad_left: int

    def to_frame(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Boxes [K,4] (x1,y1,x2,y2) in model-input pixels -> frame pixels, clipped to the frame."""
        boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4).copy()
        boxes[:, [0, 2]] = (boxes[:, [0, 2]] - self.pad_left) / self.scale_x
        boxes[:, [1, 3]] = (boxes[:, [1, 3]] - self.pad_top) / self.scale_y
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, self.frame_hw[1])
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, self.frame_hw[0])
        return boxes


def _per_channel(values, name: str) -> tuple[float, ...]:
    if isinstance(values, (int, float)):
        values = (values,)
    values = tuple(float(v) for v in values)
    if len(values) not in (1, 3):
        raise VideoError(f"{name} must hold 1 or 3 values, got {list(values)}")
    if not all(math.isfinite(v) for v in values):
        raise VideoError(f"{name} must be finite, got {list(values)}")
    return values


@dataclass(frozen=True)
class Preprocess:
    """How a uint8 BGR frame becomes a float32 model input with batch 1 (see the module docstring)."""

    size: Optional[tuple[int, int]] = None  # (height, width) of the model input; None: the frame's own
    resize: str = "letterbox"
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    color: str = "RGB"
    layout: str = "NCHW"
    pad_value: int = 114  # letterbox border, grey as in YOLO
    interpolation: str = "area"  # area | linear | nearest
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False, hash=False)

    def __post_init__(self):
        if self.resize not in RESIZE_MODES:
            raise VideoError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        if self.color not in COLORS:
            raise VideoError(f"color must be one of {', '.join(COLORS)}, got {self.color!r}")
        if self.layout not in LAYOUTS:
            raise VideoError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        if self.interpolation not in ("area", "linear", "nearest"):
            raise VideoError(f"interpolation must be area, linear or nearest, got {self.interpolation!r}")
        if self.size is not None:
            size = tuple(int(s) for s in self.size)
            if len(size) != 2 or min(size) <= 0:
                raise VideoError(f"size must be (height, width) with positive sides, got {self.size!r}")
            if max(size) > MAX_INPUT_SIDE:
                raise VideoError(f"size {size[0]}x{size[1]} is too large: at most {MAX_INPUT_SIDE} per side")
            object.__setattr__(self, "size", size)
        elif self.resize != "none":
            object.__setattr__(self, "resize", "none")  # nothing to fit the frame to
        if not math.isfinite(self.scale):
            raise VideoError(f"scale must be a finite number, got {self.scale}")
        mean, std = _per_channel(self.mean, "mean"), _per_channel(self.std, "std")
        if any(s == 0 for s in std):
            raise VideoError("std must not contain 0")
        if self.channels == 1 and (len(mean) == 3 or len(std) == 3):
            raise VideoError("GRAY input takes one mean and one std value")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def channels(self) -> int:
        return 1 if self.color == "GRAY" else 3

    def input_shape(self, frame_hw: tuple[int, int]) -> tuple[int, int, int, int]:
        h, w = self.size if self.size is not None else frame_hw
        return (1, self.channels, h, w) if self.layout == "NCHW" else (1, h, w, self.channels)

    def geometry(self, frame_hw: tuple[int, int]) -> Geometry:
        fh, fw = int(frame_hw[0]), int(frame_hw[1])
        if self.resize == "none" or self.size is None:
            if self.size is not None and self.size != (fh, fw):
                raise VideoError(f"frames are {fh}x{fw} but the input is {self.size[0]}x{self.size[1]} and "
                                 "resize is 'none'; use letterbox or resize")
            return Geometry((fh, fw), (fh, fw), 1.0, 1.0, 0, 0)
        h, w = self.size
        if self.resize == "resize":
            return Geometry((fh, fw), (h, w), h / fh, w / fw, 0, 0)
        ratio = min(h / fh, w / fw)
        new_h, new_w = max(1, round(fh * ratio)), max(1, round(fw * ratio))
        return Geometry((fh, fw), (h, w), new_h / fh, new_w / fw, (h - new_h) // 2, (w - new_w) // 2)

    def fit(self, frame: np.ndarray) -> np.ndarray:
        """The frame resized/letterboxed to the input size, still uint8 HxWx3 BGR (for pictures too)."""
        frame = _as_bgr(frame)
        geometry = self.geometry(frame.shape[:2])
        if geometry.input_hw == tuple(frame.shape[:2]) and geometry.pad_top == geometry.pad_left == 0:
            return frame
        cv2 = _cv2()
        interpolation = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST}
        new_h = round(frame.shape[0] * geometry.scale_y)
        new_w = round(frame.shape[1] * geometry.scale_x)
        resized = cv2.resize(frame, (new_w, new_h), interpolation=interpolation[self.interpolation])
        if (new_h, new_w) == geometry.input_hw:
            return resized
        h, w = geometry.input_hw
        canvas = np.full((h, w, 3), self.pad_value, dtype=np.uint8)
        canvas[geometry.pad_top:geometry.pad_top + new_h, geometry.pad_left:geometry.pad_left + new_w] = resized
        return canvas

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """A uint8 HxWx3 BGR frame (or HxW grey) -> float32 input tensor with batch 1."""
        fitted = self.fit(frame)
        if self.color == "RGB":
            pixels = fitted[:, :, ::-1]
        elif self.color == "GRAY":
            pixels = _grey(fitted)
        else:
            pixels = fitted
        scale, offset = self._affine()
        values = pixels.astype(np.float32) * scale + offset  # == (pixel * scale - mean) / std
        if self.layout == "NCHW":
            values = values.transpose(2, 0, 1)
        return np.ascontiguousarray(values[None])

    def _affine(self) -> tuple[np.ndarray, np.ndarray]:
        cached = self._cache.get("affine")
        if cached is None:
            mean = np.array(self.mean, np.float64)
            std = np.array(self.std, np.float64)
            scale = (self.scale / std).astype(np.float32)
            offset = (-mean / std).astype(np.float32)
            cached = self._cache["affine"] = (scale, offset)
        return cached

    def describe(self) -> dict:
        data = asdict(self)
        data.pop("_cache", None)
        data["size"] = list(self.size) if self.size else None
        return data

    @classmethod
    def for_model_input(cls, shape: Sequence, **overrides) -> "Preprocess":
        """Defaults read from a model input's shape (ints or symbolic names): the layout from where the
        1- or 3-channel axis is, GRAY for one channel, the size from static height and width. Options
        given in `overrides` (not None) win; `size` falls back to the frame's own when the model's is dynamic."""
        overrides = {k: v for k, v in overrides.items() if v is not None}
        shape = list(shape)
        if len(shape) != 4:
            raise VideoError(f"the model input must be 4-D (an image batch), got shape {shape}")

        def static(d):
            return d if isinstance(d, int) and d > 0 else None

        layout = overrides.get("layout")
        if layout is None:
            if static(shape[1]) in (1, 3):
                layout = "NCHW"
            elif static(shape[3]) in (1, 3):
                layout = "NHWC"
            else:
                layout = "NCHW"
        channels, h, w = (shape[1], shape[2], shape[3]) if layout == "NCHW" else (shape[3], shape[1], shape[2])
        if "color" not in overrides and static(channels) == 1:
            overrides["color"] = "GRAY"
        if "size" not in overrides and static(h) and static(w):
            overrides["size"] = (h, w)
        overrides["layout"] = layout
        preprocess = cls(**overrides)
        if static(channels) and static(channels) != preprocess.channels:
            raise VideoError(f"the model input has {channels} channels but color {preprocess.color} gives "
                             f"{preprocess.channels}")
        if preprocess.size and static(h) and static(w) and preprocess.size != (h, w):
            raise VideoError(f"the model input is {h}x{w} but size {preprocess.size[0]}x{preprocess.size[1]} was asked")
        return preprocess


def _grey(frame_bgr: np.ndarray) -> np.ndarray:
    """HxWx1 luma (ITU-R BT.601 weights, unrounded); a frame that is already grey passes through exactly."""
    b, g, r = frame_bgr[:, :, 0], frame_bgr[:, :, 1], frame_bgr[:, :, 2]
    if np.array_equal(b, g) and np.array_equal(g, r):
        return frame_bgr[:, :, :1]
    return (0.114 * b.astype(np.float32) + 0.587 * g.astype(np.float32) + 0.299 * r.astype(np.float32))[:, :, None]


def _as_bgr(frame: np.ndarray) -> np.ndarray:
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        raise VideoError(f"frames must be uint8 images, got {frame.dtype}")
    if frame.ndim == 2:
        frame = np.repeat(frame[:, :, None], 3, axis=2)
    if frame.ndim != 3 or frame.shape[2] not in (1, 3, 4):
        raise VideoError(f"frames must be HxW, HxWx1, HxWx3 or HxWx4 images, got shape {frame.shape}")
    if frame.shape[2] == 1:
        frame = np.repeat(frame, 3, axis=2)
    elif frame.shape[2] == 4:
        frame = frame[:, :, :3]
    return np.ascontiguousarray(frame)


# ------------------------------------------------------------------------------------------------------
# reading
# ------------------------------------------------------------------------------------------------------


def _natural_key(path: Path):
    import re

    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def image_files(directory: Union[str, os.PathLike]) -> list[Path]:
    """The images of a folder in natural name order (frame2 before frame10)."""
    directory = Path(directory)
    files = sorted((p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=_natural_key)
    if not files:
        raise VideoError(f"{directory} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return files


def frame_count(source: FrameSource) -> Optional[int]:
    """How many frames `source` has, when it can tell without decoding (containers may be approximate)."""
    if isinstance(source, np.ndarray):
        return len(source) if source.ndim == 4 else 1
    if isinstance(source, (list, tuple)):
        return len(source)
    path = Path(source)
    if path.is_dir():
        return len(image_files(path))
    if not path.exists():
        return None
    cv2 = _cv2()
    capture = cv2.VideoCapture(str(path))
    try:
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    finally:
        capture.release()
    return count if count > 0 else None


def _video_frames(path: Path) -> Iterator[np.ndarray]:
    cv2 = _cv2()
    capture = cv2.VideoCapture(str(path))
    if capture.isOpened():
        try:
            while True:
                ok, frame = capture.read()
                if not ok:
                    return
                yield frame
        finally:
            capture.release()
        return
    capture.release()
    try:
        av = importlib.import_module("av")
    except ImportError:
        raise VideoError(f"OpenCV cannot open the video {path} (and PyAV is not installed to try)") from None
    try:
        container = av.open(str(path))
    except Exception as error:  # noqa: BLE001 - PyAV raises its own error family
        raise VideoError(f"neither OpenCV nor PyAV can open the video {path}: {error}") from error
    with container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="bgr24")


def _image_frames(directory: Path) -> Iterator[np.ndarray]:
    cv2 = _cv2()
    for path in image_files(directory):
        frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if frame is None:
            raise VideoError(f"OpenCV cannot read the image {path}")
        yield frame


def read_frames(source: FrameSource, count: Optional[int] = None, start: int = 0, step: int = 1) -> Iterator[np.ndarray]:
    """Frames start, start+step, ... of `source` (at most `count`) as uint8 HxWx3 BGR arrays, lazily.

    `source`: a video file (OpenCV, else PyAV), a folder of images (natural name order), a sequence of
    arrays, or one array of frames [T,H,W,3]. Frames before `start` are decoded and dropped (exact, unlike
    seeking). Raises VideoError when the source does not exist or cannot be opened."""
    if start < 0 or step < 1 or (count is not None and count < 0):
        raise VideoError(f"need start >= 0, step >= 1 and count >= 0, got start={start} step={step} count={count}")
    if isinstance(source, np.ndarray):
        frames: Iterable[np.ndarray] = source if source.ndim == 4 else [source]
    elif isinstance(source, (list, tuple)):
        frames = source
    else:
        path = Path(source)
        if not path.exists():
            raise VideoError(f"no such video or folder: {path}")
        frames = _image_frames(path) if path.is_dir() else _video_frames(path)
    return _select(frames, count, start, step)


def _select(frames: Iterable[np.ndarray], count, start, step) -> Iterator[np.ndarray]:
    taken = 0
    for index, frame in enumerate(frames):
        if count is not None and taken >= count:
            return
        if index >= start and (index - start) % step == 0:
            taken += 1
            yield _as_bgr(frame)


def describe_source(source: FrameSource) -> str:
    if isinstance(source, np.ndarray):
        return f"array of {frame_count(source)} frames"
    if isinstance(source, (list, tuple)):
        return f"{len(source)} frames in memory"
    return str(source)


# ------------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------------


def write_video(path: Union[str, os.PathLike], frames: Iterable[np.ndarray], fps: float = 25.0,
                codec: str = "MJPG") -> Path:
    """Write uint8 BGR frames to `path` (AVI with Motion-JPEG by default; `codec="FFV1"` is lossless).
    Returns the path; raises VideoError when OpenCV cannot write it."""
    cv2 = _cv2()
    path = Path(path)
    writer = None
    try:
        for frame in frames:
            frame = _as_bgr(frame)
            if writer is None:
                h, w = frame.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), float(fps), (w, h))
                if not writer.isOpened():
                    raise VideoError(f"OpenCV cannot write {path} with codec {codec}")
            writer.write(frame)
    finally:
        if writer is not None:
            writer.release()
    if writer is None:
        raise VideoError(f"no frames to write to {path}")
    return path


__all__ = ["COLORS", "Geometry", "LAYOUTS", "Preprocess", "RESIZE_MODES", "VideoError", "describe_source",
           "frame_count", "image_files", "read_frames", "write_video"]

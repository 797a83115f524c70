"""`python -m deltaonnx demo`: dense ORT against deltaonnx on a static-camera clip, in under a minute, offline.

The embedded default is a small fully convolutional digit detector (`data/digits_fcn.onnx`, trained by
`models/train_demo.py` on scikit-learn's handwritten digits pasted on synthetic backgrounds) and a clip the
demo generates: a static camera looking at a textured scene where a few held-out digits (never seen in
training, `data/digits_holdout.npz`) drift around and sometimes stop, with sensor noise on every pixel. Since the
demo draws the clip, it knows where every digit is, so the table shows detection quality against the truth
for dense ORT and for each converted configuration, next to their speed. It writes a picture: the frame with
the digits the converted model found, and the change maps of its layers (white = recomputed).

`--model`/`--video` point it at your own model and clip (then it reports agreement with dense ORT, and boxes
with `--detections yolo`).

The model: input `image` float32 [N,1,H,W] (grey / 255, any H and W divisible by 4); output `logits` float32
[N,11,H/4,W/4]: per cell of a stride-4 grid, class 0 = background and 1 + d = digit d centred on that cell.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from .text_table import fmt, table

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_MODEL = DATA_DIR / "digits_fcn.onnx"
HOLDOUT_DIGITS = DATA_DIR / "digits_holdout.npz"
STRIDE = 4  # the detector's output grid step, in input pixels
GLYPH = 28  # digit side in pixels (the 8x8 originals upscaled)
CLIP_SIZE = (240, 320)
CLIP_FRAMES = 150
MATCH_RADIUS = 8.0  # a found digit matches a true one of the same class within this many pixels
DEFAULT_THRESHOLDS = (0.0, 0.05)


# --------------------------------------------------------------------------------------------------------
# the scene: backgrounds, digits, the clip (shared with models/train_demo.py, so training sees what the demo shows)
# --------------------------------------------------------------------------------------------------------


def _interpolation_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Bilinear resampling as a matrix [n_out, n_in] (pixel centres aligned, edges clamped)."""
    positions = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    low = np.clip(np.floor(positions).astype(int), 0, n_in - 1)
    high = np.clip(low + 1, 0, n_in - 1)
    weight = np.clip(positions - low, 0.0, 1.0)
    matrix = np.zeros((n_out, n_in))
    matrix[np.arange(n_out), low] += 1 - weight
    matrix[np.arange(n_out), high] += weight
    return matrix


def upscale_glyph(glyph: np.ndarray, size: int = GLYPH) -> np.ndarray:
    """An 8x8 scikit-learn digit (0..16) as a [size,size] float32 ink coverage in [0,1]."""
    glyph = np.asarray(glyph, np.float64) / 16.0
    rows, cols = _interpolation_matrix(glyph.shape[0], size), _interpolation_matrix(glyph.shape[1], size)
    return np.clip(rows @ glyph @ cols.T, 0, 1).astype(np.float32)


def make_background(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A static scene in [0, 0.6]: a lit gradient, a few soft-edged objects, fine fixed texture."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    gradient = (np.cos(angle) * xx / w + np.sin(angle) * yy / h)
    image = 0.15 + 0.2 * (gradient - gradient.min()) / max(float(np.ptp(gradient)), 1e-6)
    for _ in range(int(rng.integers(2, 6))):  # furniture: soft rectangles of another shade
        y0, x0 = rng.uniform(0, h), rng.uniform(0, w)
        bh, bw = rng.uniform(0.1, 0.5) * h, rng.uniform(0.1, 0.5) * w
        inside = (np.clip(np.minimum(yy - y0, y0 + bh - yy), -2, 2) + 2) / 4 * (np.clip(np.minimum(xx - x0, x0 + bw - xx), -2, 2) + 2) / 4
        image = image * (1 - inside) + rng.uniform(0.05, 0.5) * inside
    texture = rng.normal(0, 0.02, (h // 2 + 1, w // 2 + 1)).astype(np.float32)
    image = image + np.kron(texture, np.ones((2, 2), np.float32))[:h, :w]
    return np.clip(image, 0, 0.6).astype(np.float32)


def paint(background: np.ndarray, digits: Sequence[tuple[np.ndarray, float, float, float]]) -> np.ndarray:
    """Digits (ink coverage, centre y, centre x, ink level) drawn over a background, float32 in [0,1]."""
    image = background.copy()
    h, w = image.shape
    for coverage, cy, cx, ink in digits:
        gh, gw = coverage.shape
        top, left = int(round(cy - gh / 2)), int(round(cx - gw / 2))
        y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + gh, h), min(left + gw, w)
        if y0 >= y1 or x0 >= x1:
            continue
        alpha = coverage[y0 - top:y1 - top, x0 - left:x1 - left]
        image[y0:y1, x0:x1] = image[y0:y1, x0:x1] * (1 - alpha) + ink * alpha
    return image


def load_holdout_digits(path: Path = HOLDOUT_DIGITS) -> tuple[np.ndarray, np.ndarray]:
    """The held-out 8x8 digits (never used in training) and their labels."""
    with np.load(path) as data:
        return data["images"], data["labels"]


@dataclass
class DigitClip:
    frames: list  # uint8 HxWx3 BGR (grey)
    truth: list  # per frame: list of (digit, centre y, centre x)


def make_clip(n_frames: int = CLIP_FRAMES, size: tuple[int, int] = CLIP_SIZE, n_digits: int = 4, seed: int = 0,
              noise: float = 1.5, glyphs: Optional[tuple[np.ndarray, np.ndarray]] = None) -> DigitClip:
    """A static camera over a generated scene: `n_digits` held-out digits that drift at 1-2 px/frame, stop
    and start again; Gaussian sensor noise of `noise` grey levels (0..255) redrawn every frame."""
    rng = np.random.default_rng(seed)
    images, labels = glyphs if glyphs is not None else load_holdout_digits()
    h, w = size
    background = make_background(size, rng)
    margin = GLYPH / 2 + 2
    picks = rng.choice(len(images), n_digits, replace=False)
    state = []
    for i, pick in enumerate(picks):
        position = np.array([rng.uniform(margin, h - margin), (i + 0.5) * w / n_digits])
        velocity = rng.uniform(1.0, 2.0) * np.array([np.sin(a := rng.uniform(0, 2 * np.pi)), np.cos(a)])
        state.append({"coverage": upscale_glyph(images[pick]), "label": int(labels[pick]), "position": position,
                      "velocity": velocity, "moving": i % 2 == 0, "ink": rng.uniform(0.85, 1.0)})
    frames, truth = [], []
    for _ in range(n_frames):
        for digit in state:
            if rng.random() < 0.03:  # people stop and go; so do digits
                digit["moving"] = not digit["moving"]
            if digit["moving"]:
                digit["position"] = digit["position"] + digit["velocity"]
                for axis, extent in enumerate((h, w)):
                    if not margin <= digit["position"][axis] <= extent - margin:
                        digit["velocity"][axis] = -digit["velocity"][axis]
                        digit["position"][axis] = np.clip(digit["position"][axis], margin, extent - margin)
        image = paint(background, [(d["coverage"], *d["position"], d["ink"]) for d in state])
        grey = np.clip(image * 255 + rng.normal(0, noise, image.shape), 0, 255).round().astype(np.uint8)
        frames.append(np.repeat(grey[:, :, None], 3, axis=2))
        truth.append([(d["label"], float(d["position"][0]), float(d["position"][1])) for d in state])
    return DigitClip(frames, truth)


# --------------------------------------------------------------------------------------------------------
# reading the detector's output
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FoundDigit:
    digit: int
    y: float  # centre, input pixels
    x: float
    score: float


def decode_digits(logits: np.ndarray, min_score: float = 0.5, radius_cells: int = 3) -> list[FoundDigit]:
    """Digits found in one image's logits [11,h,w] (or [1,11,h,w]): local maxima of the foreground
    probability above `min_score`, at least `radius_cells` apart, each with its most likely digit."""
    logits = np.asarray(logits, np.float64)
    if logits.ndim == 4:
        logits = logits[0]
    shifted = logits - logits.max(axis=0, keepdims=True)
    probabilities = np.exp(shifted)
    probabilities /= probabilities.sum(axis=0, keepdims=True)
    foreground = 1.0 - probabilities[0]
    candidates = np.argwhere(foreground > min_score)
    order = np.argsort(-foreground[candidates[:, 0], candidates[:, 1]], kind="stable")
    found: list[FoundDigit] = []
    for i, j in candidates[order]:
        if any(abs(i - (f.y - 1.5) / STRIDE) <= radius_cells and abs(j - (f.x - 1.5) / STRIDE) <= radius_cells
               for f in found):
            continue
        digit = int(probabilities[1:, i, j].argmax())
        found.append(FoundDigit(digit, i * STRIDE + 1.5, j * STRIDE + 1.5, float(foreground[i, j])))
    return found


@dataclass
class PointAgreement:
    """Found digits against reference points (truth, or dense ORT's): same digit within `radius` pixels."""

    radius: float = MATCH_RADIUS
    true_positives: int = 0
    false_positives: int = 0
    false_negatives: int = 0

    def add(self, found: Sequence[FoundDigit], reference: Sequence[tuple[int, float, float]]) -> None:
        used = [False] * len(reference)
        for f in sorted(found, key=lambda f: -f.score):
            best, best_distance = None, self.radius
            for k, (digit, y, x) in enumerate(reference):
                distance = float(np.hypot(f.y - y, f.x - x))
                if not used[k] and digit == f.digit and distance <= best_distance:
                    best, best_distance = k, distance
            if best is None:
                self.false_positives += 1
            else:
                used[best] = True
                self.true_positives += 1
        self.false_negatives += used.count(False)

    @property
    def f1(self) -> float:
        denominator = 2 * self.true_positives + self.false_positives + self.false_negatives
        return 2 * self.true_positives / denominator if denominator else 1.0


# --------------------------------------------------------------------------------------------------------
# pictures
# --------------------------------------------------------------------------------------------------------


def write_png(path, image_bgr: np.ndarray) -> Path:
    """Write a uint8 HxWx3 BGR image as PNG: OpenCV when installed, else a plain zlib encoder."""
    path = Path(path)
    try:
        import cv2

        if not cv2.imwrite(str(path), image_bgr):
            raise OSError(f"cannot write {path}")
        return path
    except ImportError:
        pass
    rgb = np.ascontiguousarray(image_bgr[:, :, ::-1])
    h, w = rgb.shape[:2]
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6))
                     + chunk(b"IEND", b""))
    return path


def _draw_box(image: np.ndarray, x1: float, y1: float, x2: float, y2: float, color, thickness: int = 2) -> None:
    h, w = image.shape[:2]
    x1, x2 = int(np.clip(round(x1), 0, w - 1)), int(np.clip(round(x2), 0, w - 1))
    y1, y2 = int(np.clip(round(y1), 0, h - 1)), int(np.clip(round(y2), 0, h - 1))
    image[y1:y1 + thickness, x1:x2 + 1] = color
    image[max(y2 - thickness + 1, 0):y2 + 1, x1:x2 + 1] = color
    image[y1:y2 + 1, x1:x1 + thickness] = color
    image[y1:y2 + 1, max(x2 - thickness + 1, 0):x2 + 1] = color


def _put_text(image: np.ndarray, text: str, x: int, y: int, color, scale: float = 0.5) -> None:
    try:
        import cv2
    except ImportError:
        return  # the boxes still show where things are
    cv2.putText(image, text, (int(x), int(y)), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def annotate_digits(frame_bgr: np.ndarray, found: Sequence[FoundDigit], zoom: int = 2) -> np.ndarray:
    image = np.repeat(np.repeat(frame_bgr, zoom, axis=0), zoom, axis=1).copy()
    half = GLYPH / 2 * zoom
    for f in found:
        _draw_box(image, f.x * zoom - half, f.y * zoom - half, f.x * zoom + half, f.y * zoom + half, (60, 220, 60))
        above = f.y * zoom - half - 4
        _put_text(image, str(f.digit), f.x * zoom - half, above if above > 16 else f.y * zoom + half + 18,
                  (60, 220, 60), 0.6)
    return image


def annotate_boxes(frame_bgr: np.ndarray, detections, geometry) -> np.ndarray:
    image = frame_bgr.copy()
    for (x1, y1, x2, y2), score, cls in zip(geometry.to_frame(detections.boxes), detections.scores, detections.classes):
        _draw_box(image, x1, y1, x2, y2, (60, 220, 60))
        _put_text(image, f"{cls}:{score:.2f}", x1, y1 - 4, (60, 220, 60), 0.4)
    return image


def compose_picture(left: np.ndarray, right: np.ndarray, caption: str = "") -> np.ndarray:
    """Two images side by side on a dark canvas, with a caption band on top."""
    height = max(left.shape[0], right.shape[0])
    canvas = np.full((height + 26, left.shape[1] + right.shape[1] + 8, 3), 24, np.uint8)
    canvas[26:26 + left.shape[0], :left.shape[1]] = left
    canvas[26:26 + right.shape[0], left.shape[1] + 8:] = right
    _put_text(canvas, caption, 6, 18, (255, 255, 255), 0.5)
    return canvas


# --------------------------------------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------------------------------------


@dataclass
class DigitCollector:
    """Per-frame decoding for the table and the picture (an on_frame callback of run_benchmark)."""

    truth: Optional[list]
    picture_index: int
    decode: Optional[callable]
    n_configs: int
    picture_config: int
    against_truth: list = field(default_factory=list)  # [dense, config 1, ...]
    against_dense: list = field(default_factory=list)  # [config 1, ...]
    picture: Optional[dict] = None

    def __post_init__(self):
        self.against_truth = [PointAgreement() for _ in range(self.n_configs + 1)]
        self.against_dense = [PointAgreement(radius=STRIDE) for _ in range(self.n_configs)]

    def __call__(self, record) -> None:
        found = None
        if self.decode is not None and record.timed:
            dense_found = self.decode(record.dense_outputs)
            found = [self.decode(outputs) for outputs in record.delta_outputs]
            if self.truth is not None:
                truth = self.truth[record.index]
                self.against_truth[0].add(dense_found, truth)
                for k, f in enumerate(found):
                    self.against_truth[k + 1].add(f, truth)
            for k, f in enumerate(found):
                self.against_dense[k].add(f, [(d.digit, d.y, d.x) for d in dense_found])
        if record.index == self.picture_index and record.change_maps:
            self.picture = {"index": record.index, "frame": record.frame, "input": record.input,
                            "maps": record.change_maps[self.picture_config],
                            "outputs": [np.array(o) for o in record.delta_outputs[self.picture_config]]}


def demo_table(result: dict, collector: DigitCollector, default_model: bool, model_path: Path, has_truth: bool) -> str:
    dense = result["dense"]
    what = "digit detector (embedded)" if default_model else str(model_path)
    lines = [f"deltaonnx demo: {what}, {result['conv_gflops']:.2f} GFLOPs/frame of convolutions, on {result['source']}",
             f"{result['frames_timed']} frames timed after {result['warmup']} warm-up, input {result['input']['shape']}, "
             f"{result['threads']} ORT thread(s), {result['machine']['cpu']}", ""]
    header = ["", "ms/frame", "fps", "speedup", "conv FLOPs redone"]
    if default_model:
        header += (["digits found (F1 vs truth)"] if has_truth else []) + ["same digits as dense (F1)"]
    else:
        header += ["max rel diff"] + (["box F1 vs dense"] if any("detections" in r for r in result["runs"]) else [])
    rows = [["dense ORT", fmt(dense["ms_per_frame"]), fmt(dense["fps"], ".1f"), "1.00x", "100%"]]
    if default_model:
        rows[0] += ([fmt(collector.against_truth[0].f1, ".3f")] if has_truth else []) + ["-"]
    else:
        rows[0] += ["-"] + (["-"] if len(header) > 6 else [])
    for k, run in enumerate(result["runs"]):
        gate = "exact" if run["threshold"] == 0 else "gate"
        row = [f"deltaonnx tau={run['threshold']:g} ({gate})", fmt(run["ms_per_frame"]), fmt(run["fps"], ".1f"),
               f"{run['speedup']:.2f}x", f"{100 * run['conv_flops_redone']['mean']:.1f}%"]
        if default_model:
            row += ([fmt(collector.against_truth[k + 1].f1, ".3f")] if has_truth else [])
            row += [fmt(collector.against_dense[k].f1, ".3f")]
        else:
            row += [("equal " if run["equal_to_dense"] else "") + fmt(run["max_rel"], ".1e")]
            if len(header) > 6:
                row += [fmt(run.get("detections", {}).get("f1"), ".3f")]
        rows.append(row)
    lines.append(table(header, rows))
    exact = [r for r in result["runs"] if r["threshold"] == 0]
    if exact:
        lines.append(f"\ntau=0 is exact: its outputs equal dense ORT's ({'yes' if exact[0]['equal_to_dense'] else 'NO'}, "
                     f"max relative difference {exact[0]['max_rel']:.1e}); but sensor noise changes most pixels every "
                     "frame, so nearly everything is recomputed"
                     + (" (DeltaSession then runs the dense twin)." if exact[0].get("dense_fallback_frames") else "."))
    gated = [r for r in result["runs"] if r["threshold"] > 0]
    if gated:
        r = gated[0]
        lines.append(f"tau={r['threshold']:g} ignores input changes below {r['threshold']:g} (in the input's units, "
                     f"here grey/255): only the moving digits are recomputed. Ideal speedup for its "
                     f"{100 * r['conv_flops_redone']['mean']:.1f}% FLOPs redone: "
                     f"{fmt(r['ideal_speedup'], '.2f')}x; achieved {r['speedup']:.2f}x.")
    return "\n".join(lines)


__all__ = ["DigitClip", "DigitCollector", "FoundDigit", "PointAgreement", "decode_digits", "demo_table",
           "load_holdout_digits", "make_background", "make_clip", "paint", "upscale_glyph", "write_png"]

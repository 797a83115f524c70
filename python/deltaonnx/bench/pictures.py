"""Pictures of a benchmark: per-layer change maps of a few frames, and the plot of a threshold sweep."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from .config_run import ConfigRun
from .options import BenchError, BenchOptions, DeltaConfig


def map_frame_indices(options: BenchOptions, frame_total: Optional[int]) -> set[int]:
    if options.maps_dir is None or options.maps_frames <= 0:
        return set()
    first = options.warmup
    if frame_total and frame_total > first:
        return {int(round(v)) for v in np.linspace(first, frame_total - 1, options.maps_frames)}
    return {first + 10 * k for k in range(options.maps_frames)}


def _label(image: np.ndarray, text: str) -> np.ndarray:
    import cv2

    band = np.full((18, image.shape[1], 3), 32, np.uint8)
    cv2.putText(band, text[: max(4, image.shape[1] // 7)], (3, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1,
                cv2.LINE_AA)
    return np.concatenate([image, band], axis=0)


def change_map_picture(frame_bgr: np.ndarray, maps: dict[str, np.ndarray], title: str = "",
                       tile_width: int = 200, columns: int = 6) -> np.ndarray:
    """A grid: the frame (as the model saw it), then each layer's change map (white = recomputed) with its
    node name and recomputed fraction. Returns a uint8 BGR image."""
    import cv2

    h, w = frame_bgr.shape[:2]
    tile_height = max(1, round(tile_width * h / w))
    tiles = [_label(cv2.resize(frame_bgr, (tile_width, tile_height), interpolation=cv2.INTER_AREA), title or "input")]
    for name, change_map in maps.items():
        plane = (np.asarray(change_map).reshape(change_map.shape[-2:]) != 0)
        image = cv2.resize(plane.astype(np.uint8) * 255, (tile_width, tile_height), interpolation=cv2.INTER_NEAREST)
        tile = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        tile[image == 0] = (48, 24, 24)
        tiles.append(_label(tile, f"{name} {100 * plane.mean():.1f}%"))
    blank = np.zeros_like(tiles[0])
    rows = []
    for start in range(0, len(tiles), columns):
        row = tiles[start:start + columns]
        row += [blank] * (columns - len(row)) if len(tiles) > columns else []
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0))) for t in row], axis=1))
    return np.concatenate(rows, axis=0)


def _safe_label(config: DeltaConfig) -> str:
    gates = [label.strip().replace("=", "").replace("/", "_")
             for label in (config.gate.label, config.inner_gate.label_as("inner_gate"))]
    return f"tau{config.threshold:g}_inner{config.inner_threshold:g}" + "".join(f"_{g}" for g in gates if g)


def write_maps(directory: Path, index: int, fitted: np.ndarray, runs: list[ConfigRun], frame_maps: list) -> list[str]:
    try:
        import cv2
    except ImportError as error:
        raise BenchError("--maps needs OpenCV: pip install opencv-python-headless") from error
    written = []
    for run, maps in zip(runs, frame_maps):
        if maps is None:
            continue
        target = Path(directory) / _safe_label(run.config) if len(runs) > 1 else Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        picture = change_map_picture(fitted, maps, f"frame {index} {run.config.label}")
        path = target / f"frame_{index:05d}.png"
        if not cv2.imwrite(str(path), picture):
            raise BenchError(f"cannot write {path}")
        written.append(str(path))
    return written


def plot_sweep(result: dict, path) -> Path:
    """Speedup (measured and ideal) and agreement against the swept threshold (the paper's Figure 6)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise BenchError("--plot needs matplotlib: pip install matplotlib") from error
    runs = result["runs"]
    thresholds = sorted({r["threshold"] for r in runs})
    inners = sorted({r["inner_threshold"] for r in runs})
    sweep_inner = len(thresholds) == 1 and len(inners) > 1
    x_key, series_key = ("inner_threshold", "threshold") if sweep_inner else ("threshold", "inner_threshold")
    has_boxes = all("detections" in r for r in runs)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for value in sorted({r[series_key] for r in runs}):
        series = sorted((r for r in runs if r[series_key] == value), key=lambda r: r[x_key])
        xs = [r[x_key] for r in series]
        name = f"{series_key.replace('_', ' ')} {value:g}"
        line, = left.plot(xs, [r["speedup"] for r in series], "o-", label=f"measured, {name}")
        if all(r["ideal_speedup"] for r in series):
            left.plot(xs, [r["ideal_speedup"] for r in series], "--", color=line.get_color(), label=f"ideal, {name}")
        if has_boxes:
            right.plot(xs, [r["detections"]["f1"] for r in series], "o-", label=f"box F1, {name}")
        else:
            right.plot(xs, [max(r["max_rel"], 1e-9) for r in series], "o-", label=name)
    left.axhline(1.0, color="grey", lw=0.8)
    left.set_xlabel(x_key.replace("_", " "))
    left.set_ylabel("speedup over dense ORT")
    left.legend(fontsize=7)
    right.set_xlabel(x_key.replace("_", " "))
    if has_boxes:
        right.set_ylabel("box F1 against dense")
        right.set_ylim(0, 1.05)
    else:
        right.set_ylabel("max |delta - dense| / max |dense|")
        right.set_yscale("log")
    right.legend(fontsize=7)
    figure.suptitle(f"{Path(str(result['model'])).name} on {Path(str(result['source'])).name}, "
                    f"{result['threads']} thread(s), {result['frames_timed']} frames")
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path

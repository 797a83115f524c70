"""The paper's experiments (Borji 2024, arXiv 2407.01782: Table 1, Figures 5 and 6) with deltaonnx.

    python models/paper_experiments.py [--out results/paper] [--thresholds 0,0.05,0.1,0.2,0.3] [--repeat 3]

1. Rebuilds CNN1 (conv 1->32 3x3, ReLU, max-pool 2, conv 32->64 3x3, ReLU, max-pool 2, fc 16384->128, ReLU,
   fc 128->10) and trains it with torch on scikit-learn's bundled digits (8x8, upscaled to 28x28 and placed
   at the centre of a black 64x64 image); the first 1500 digits train it, the rest are held out.
2. Exports it to ONNX and converts it with deltaonnx at each threshold (input gate; inner threshold 0).
3. Experiment I: 11 held-out images, each repeated 10 times (110 frames). Experiment II: each of the 11 digits
   shifted right by 1 pixel per frame, 10 frames each (110 frames). One stream, frames in order, so a
   converted model sees a repeat (nothing changed) or a one-pixel shift (a thin band changed) after the first
   frame of each digit.
4. Prints accuracy and total time of dense ORT and of deltaonnx at each threshold beside the paper's numbers
   (its CNN1 in PyTorch, and its CNN3, the change-aware Python loop), and saves the accuracy/time curve
   (Figure 6) and the change maps of a few frames (Figure 5) into --out.

Timing: one ORT thread; each model runs the whole 110-frame sequence `--repeat` times (state reset between
repeats) and the fastest total is kept, dense and delta alternating, so both see the same machine.
The paper's times are from its own machine: compare ratios, not seconds.
Needs torch (pip install torch==2.13.0), scikit-learn; matplotlib for the curve, OpenCV for the maps.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "python"))

# Table 1 of the paper: (accuracy %, total seconds) per experiment.
PAPER = {
    "CNN1 (PyTorch, dense)": {"I": (90.91, 0.212), "II": (43.63, 0.172)},
    "CNN3 (change-aware, Python loop)": {"I": (90.91, 213.2), "II": (44.5, 370.5)},
}
TRAIN_COUNT = 1500
N_IMAGES = 11
REPEATS = 10


def digit_canvas(glyph: np.ndarray, shift: int = 0) -> np.ndarray:
    """An 8x8 digit (0..16) upscaled to 28x28 and placed at the centre of a black 64x64 image, moved right by
    `shift` pixels; float32 [1,64,64] in [0,1]."""
    from deltaonnx.demo import upscale_glyph

    canvas = np.zeros((64, 64), np.float32)
    top, left = (64 - 28) // 2, (64 - 28) // 2 + shift
    digit = upscale_glyph(glyph, 28)
    right = min(left + 28, 64)
    canvas[top:top + 28, left:right] = digit[:, :right - left]
    return canvas[None]


def load_data():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.stack([digit_canvas(g) for g in digits.images])
    y = digits.target.astype(np.int64)
    return (x[:TRAIN_COUNT], y[:TRAIN_COUNT]), (digits.images[TRAIN_COUNT:], y[TRAIN_COUNT:])


def build_cnn1():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 16 * 16, 128), nn.ReLU(), nn.Linear(128, 10))


def train_cnn1(x: np.ndarray, y: np.ndarray, epochs: int = 8, batch: int = 64):
    import torch

    model = build_cnn1()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    model.train()
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        total = 0.0
        for start in range(0, len(x), batch):
            idx = torch.from_numpy(order[start:start + batch])
            loss = loss_fn(model(xt[idx]), yt[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        print(f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}", flush=True)
    model.eval()
    return model


def export_onnx(model, path: Path):
    import onnx
    import torch

    torch.onnx.export(model, torch.zeros(1, 1, 64, 64), str(path), input_names=["input"], output_names=["logits"],
                      opset_version=17, dynamo=False)
    proto = onnx.load(str(path))
    proto.ir_version = 10  # ORT 1.31 refuses IR > 13
    onnx.save(proto, str(path))
    return proto


def experiment_frames(glyphs: np.ndarray, labels: np.ndarray, experiment: str):
    """(frames [110,1,1,64,64], labels [110]) of Experiment I (repeats) or II (1-pixel shifts)."""
    frames, truth = [], []
    for glyph, label in zip(glyphs[:N_IMAGES], labels[:N_IMAGES]):
        for t in range(REPEATS):
            frames.append(digit_canvas(glyph, shift=t if experiment == "II" else 0)[None])
            truth.append(int(label))
    return np.stack(frames).astype(np.float32), np.array(truth)


def run_sequence(run, frames: np.ndarray) -> tuple[float, np.ndarray]:
    """Total seconds and predictions of `run(frame) -> logits` over the frames in order."""
    predictions = np.zeros(len(frames), np.int64)
    started = time.perf_counter()
    for i, frame in enumerate(frames):
        predictions[i] = int(np.argmax(run(frame)))
    return time.perf_counter() - started, predictions


def measure(dense_path: Path, converted: dict, frames: np.ndarray, truth: np.ndarray, repeat: int) -> dict:
    import onnxruntime as ort

    from deltaonnx import DeltaSession
    from deltaonnx.bench import session_options

    dense = ort.InferenceSession(str(dense_path), session_options(1), providers=["CPUExecutionProvider"])
    deltas = {tau: DeltaSession(model, session_options(1)) for tau, model in converted.items()}
    rows = {"dense ORT": {"times": [], "predictions": None, "dense_logits": []}}
    for tau in deltas:
        rows[f"deltaonnx tau={tau:g}"] = {"times": [], "predictions": None, "fractions": []}
    dense_logits = [dense.run(None, {"input": f})[0] for f in frames]
    for _ in range(repeat):
        seconds, predictions = run_sequence(lambda f: dense.run(None, {"input": f})[0], frames)
        rows["dense ORT"]["times"].append(seconds)
        rows["dense ORT"]["predictions"] = predictions
        for tau, session in deltas.items():
            session.reset()
            seconds, predictions = run_sequence(lambda f: session.run(None, {"input": f})[0], frames)
            row = rows[f"deltaonnx tau={tau:g}"]
            row["times"].append(seconds)
            row["predictions"] = predictions
    for tau, session in deltas.items():  # one more pass for statistics and exactness (untimed)
        session.reset()
        row = rows[f"deltaonnx tau={tau:g}"]
        worst = 0.0
        fractions = []
        for f, reference in zip(frames, dense_logits):
            logits = session.run(None, {"input": f})[0]
            worst = max(worst, float(np.abs(logits - reference).max() / max(np.abs(reference).max(), 1e-12)))
            fractions.append(session.stats()["nodes"])
        row["max_rel_diff"] = worst
        row["dense_fallback_runs"] = session.stats().get("dense_runs", 0)  # frames DeltaSession ran densely
        row["recomputed"] = {node: float(np.mean([fr[node]["fraction"] for fr in fractions[1:]]))
                             for node in fractions[0]}
    summary = {}
    for name, row in rows.items():
        summary[name] = {"accuracy": float(np.mean(row["predictions"] == truth) * 100),
                         "seconds": float(min(row["times"])),
                         **{k: row[k] for k in ("max_rel_diff", "recomputed", "dense_fallback_runs") if k in row}}
    return summary


def add_ideal_speedups(dense_path: Path, converted: dict, frames: np.ndarray, summary: dict) -> None:
    """The Amdahl bound of each converted row: dense ORT's time split by its profiler into conv work (what
    the Delta ops replace) and the rest (the fully connected layers), with the conv work scaled by the
    FLOP-weighted fraction the row recomputed (deltaonnx.bench's definition)."""
    import onnx

    from deltaonnx.bench import conversion_metadata, conv_flops, profile_dense

    proto = onnx.load(str(dense_path))
    flops = conv_flops(proto, {"input": frames[0]})
    total = sum(flops.values())
    for tau, model in converted.items():
        metadata = conversion_metadata(model)
        fused = {name for node in metadata["nodes"] for name in node.get("fused", [])}
        profile = profile_dense(proto.SerializeToString(), [{"input": f} for f in frames[:30]], 1, fused)
        row = summary[f"deltaonnx tau={tau:g}"]
        redone = sum(flops.get(node["source"], 0.0) * row["recomputed"].get(node["name"], 1.0)
                     for node in metadata["nodes"] if node.get("source_op") == "Conv")
        redone += sum(f for source, f in flops.items()
                      if source not in {n["source"] for n in metadata["nodes"] if n.get("decision") == "converted"})
        share = profile["conv_work_share"]
        row["conv_flops_redone"] = redone / total
        row["conv_work_share_of_dense"] = share
        row["ideal_speedup"] = 1.0 / ((1.0 - share) + share * redone / total)


def save_change_maps(converted_model, frames: np.ndarray, out: Path, experiment: str, picks=(0, 1, 5)) -> list[Path]:
    """Figure 5: each layer's change map for a few frames of the first digit's sequence."""
    try:
        import cv2
    except ImportError:
        print("OpenCV not installed: change maps not saved")
        return []
    from deltaonnx import DeltaSession
    from deltaonnx.bench import change_map_picture

    session = DeltaSession(converted_model)
    written = []
    for i, frame in enumerate(frames[:max(picks) + 1]):
        session.run(None, {"input": frame})
        if i in picks:
            image = cv2.cvtColor((frame[0, 0] * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
            picture = change_map_picture(image, session.change_maps(), f"exp {experiment} frame {i}", tile_width=128)
            path = out / f"change_maps_exp{experiment}_frame{i}.png"
            cv2.imwrite(str(path), picture)
            written.append(path)
    return written


def plot_curve(results: dict, thresholds: list[float], out: Path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: curve not saved")
        return None
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for experiment, marker in (("I", "o-"), ("II", "s-")):
        rows = results[experiment]
        dense = rows["dense ORT"]
        left.plot(thresholds, [rows[f"deltaonnx tau={t:g}"]["accuracy"] for t in thresholds], marker,
                  label=f"deltaonnx, exp {experiment}")
        left.axhline(dense["accuracy"], ls="--", lw=0.8, color=left.lines[-1].get_color(),
                     label=f"dense, exp {experiment}")
        right.plot(thresholds, [dense["seconds"] / rows[f"deltaonnx tau={t:g}"]["seconds"] for t in thresholds],
                   marker, label=f"exp {experiment}")
    left.set_xlabel("threshold (input gate)")
    left.set_ylabel("accuracy %")
    left.legend(fontsize=8)
    right.axhline(1.0, color="grey", lw=0.8)
    right.set_xlabel("threshold (input gate)")
    right.set_ylabel("speedup over dense ORT")
    right.legend(fontsize=8)
    figure.suptitle("CNN1 on digits: deltaonnx vs dense ORT (1 thread)")
    figure.tight_layout()
    path = out / "curve.png"
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def format_table(results: dict, thresholds: list[float]) -> str:
    from deltaonnx.text_table import table as _table

    rows = []
    for name, paper in PAPER.items():
        rows.append([f"paper: {name}", f"{paper['I'][0]:.2f}", f"{paper['I'][1]:.3f}", "-",
                     f"{paper['II'][0]:.2f}", f"{paper['II'][1]:.3f}", "-"])
    names = ["dense ORT"] + [f"deltaonnx tau={t:g}" for t in thresholds]
    dense_i, dense_ii = results["I"]["dense ORT"]["seconds"], results["II"]["dense ORT"]["seconds"]
    for name in names:
        i, ii = results["I"][name], results["II"][name]
        rows.append([f"ours: {name}", f"{i['accuracy']:.2f}", f"{i['seconds']:.3f}", f"{dense_i / i['seconds']:.2f}x",
                     f"{ii['accuracy']:.2f}", f"{ii['seconds']:.3f}", f"{dense_ii / ii['seconds']:.2f}x"])
    return _table(["model", "exp I acc %", "exp I time s", "vs dense", "exp II acc %", "exp II time s", "vs dense"],
                  rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("paper_results"))
    parser.add_argument("--thresholds", default="0,0.05,0.1,0.2,0.3")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    args = parser.parse_args(argv)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)

    import deltaonnx
    from deltaonnx.bench import machine_info

    (x, y), (held_glyphs, held_labels) = load_data()
    model = train_cnn1(x, y, epochs=args.epochs)
    dense_path = args.out / "cnn1.onnx"
    export_onnx(model, dense_path)
    converted = {t: deltaonnx.convert(dense_path, threshold=t) for t in thresholds}
    results = {}
    for experiment in ("I", "II"):
        frames, truth = experiment_frames(held_glyphs, held_labels, experiment)
        results[experiment] = measure(dense_path, converted, frames, truth, args.repeat)
        add_ideal_speedups(dense_path, converted, frames, results[experiment])
        save_change_maps(converted[thresholds[0]], frames, args.out, experiment)
    print()
    print(f"CNN1 on scikit-learn digits (28x28 in 64x64), {N_IMAGES} held-out images x {REPEATS} frames; "
          f"1 ORT thread; best of {args.repeat}; machine: {machine_info()['cpu']}")
    print(format_table(results, thresholds))
    for experiment in ("I", "II"):
        for t in thresholds:
            row = results[experiment][f"deltaonnx tau={t:g}"]
            recomputed = ", ".join(f"{k} {100 * v:.0f}%" for k, v in row["recomputed"].items())
            print(f"exp {experiment} tau={t:g}: max rel diff to dense {row['max_rel_diff']:.1e}; conv FLOPs redone "
                  f"{100 * row['conv_flops_redone']:.1f}% (per node: {recomputed}); conv work is "
                  f"{100 * row['conv_work_share_of_dense']:.0f}% of dense ORT's time, so the ideal speedup is "
                  f"{row['ideal_speedup']:.2f}x")
    print("(the bound counts conv work only: a frame identical to the previous one is not run at all by "
          "DeltaSession (skip_identical_frames, exact), so Experiment I's repeats also skip the fully connected "
          "layers and can beat it)")
    curve = plot_curve(results, thresholds, args.out)
    (args.out / "results.json").write_text(json.dumps({"machine": machine_info(), "thresholds": thresholds,
                                                       "results": results, "paper": PAPER}, indent=2))
    print(f"wrote {args.out / 'results.json'}" + (f", {curve}" if curve else "") + " and change maps")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Times DeltaResize (docs/ops.md#deltaresize) against ORT's Resize of the same NCHW tensor, in one process: whole
(a first frame, or a map marking everything) in both layouts, the path a blocked region took before it (DeltaReorder
to NCHW, ORT's Resize, DeltaReorder back), and the blocked op with its state bound in place and a map marking
~10% of the pixels in scattered 4x4 squares.

    python benchmarks/bench_resize.py [--rounds 5] [--repeat 50] [--shapes 256x20x20 128x40x40 ...]

Shapes are the inputs of YOLOv8n's two top-down Resizes at 640 (256x20x20, 128x40x40) and smaller ones like
yolov8_like's at 320, all x2 nearest (asymmetric, floor). One thread, by the calling
thread's CPU time; per round each time is the median of `repeat` runs; the table prints each one's median ratio
to ORT's Resize over the rounds and [min-max].
"""
from __future__ import annotations

import statistics
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ops  # noqa: E402
from bench_reorder import round_arguments, run_time  # noqa: E402
from deltaonnx import DOMAIN, _native  # noqa: E402
from deltaonnx.reference import to_blocked  # noqa: E402

SHAPES = ["256x20x20", "128x40x40", "128x10x10", "64x20x20"]
FACTORS = [2, 2]


def ort_resize_node(x, y):
    return helper.make_node("Resize", [x, "", "scales"], [y], mode="nearest", coordinate_transformation_mode="asymmetric",
                            nearest_mode="floor")


def scales():
    return numpy_helper.from_array(np.array([1, 1, *FACTORS], np.float32), "scales")


def models(channels):
    vi, map_vi = bench_ops._vi, bench_ops._vi("map_in", TensorProto.UINT8)
    resize = lambda layout, inputs=("x",): helper.make_node(  # noqa: E731
        "DeltaResize", list(inputs), ["y"], domain=DOMAIN, factors=FACTORS, layout=layout)
    return {
        "ort": bench_ops._model([ort_resize_node("x", "y")], [vi("x")], [vi("y")], [scales()]),
        "nchw": bench_ops._model([resize("nchw")], [vi("x")], [vi("y")], []),
        "blocked": bench_ops._model([resize("blocked")], [vi("x")], [vi("y")], []),
        "reorders": bench_ops._model(
            [helper.make_node("DeltaReorder", ["x"], ["x_nchw"], domain=DOMAIN, to="nchw"), ort_resize_node("x_nchw", "up"),
             helper.make_node("DeltaReorder", ["up"], ["y"], domain=DOMAIN, to="blocked")], [vi("x")], [vi("y")],
            [scales()]),
        "partial": bench_ops._model([resize("blocked", ("x", "y_prev", "map_in"))], [vi("x"), vi("y_prev"), map_vi],
                                    [vi("y")], []),
    }


def scattered_map(h, w, rng, fraction=0.1, square=4):
    marks = np.zeros((1, 1, h, w), np.uint8)
    while marks.mean() < fraction:
        y, x = int(rng.integers(0, h)), int(rng.integers(0, w))
        marks[..., y:y + square, x:x + square] = 1
    return marks


def main(argv=None):
    args = round_arguments(argv, __doc__.splitlines()[0], SHAPES)
    b = int(_native.channel_block())
    columns = ["nchw", "blocked", "reorders", "partial"]
    print(f"channel block b = {b}; time / ORT's Resize of the NCHW tensor, median [min-max] over {args.rounds} rounds")
    print("| shape | ORT Resize us | DeltaResize nchw | blocked | reorder + Resize + reorder | blocked, ~10% marked, in place |")
    print("| --- | --- | --- | --- | --- | --- |")
    rng = np.random.default_rng(0)
    for text in args.shapes:
        C, H, W = (int(v) for v in text.split("x"))
        x = rng.standard_normal((1, C, H, W)).astype(np.float32)
        xb = to_blocked(x, b)
        sessions = {name: bench_ops.session(model, 1, custom=True) for name, model in models(C).items()}
        marks = scattered_map(H, W, rng)
        state = ort.OrtValue.ortvalue_from_numpy(sessions["blocked"].run(None, {"x": xb})[0])
        binding = sessions["partial"].io_binding()
        binding.bind_cpu_input("x", xb)
        binding.bind_cpu_input("map_in", marks)
        binding.bind_ortvalue_input("y_prev", state)
        binding.bind_ortvalue_output("y", state)
        runs = {"ort": lambda: sessions["ort"].run(None, {"x": x}),
                "nchw": lambda: sessions["nchw"].run(None, {"x": x}),
                "blocked": lambda: sessions["blocked"].run(None, {"x": xb}),
                "reorders": lambda: sessions["reorders"].run(None, {"x": xb}),
                "partial": lambda: sessions["partial"].run_with_iobinding(binding)}
        ratios = {name: [] for name in columns}
        base = []
        for _ in range(args.rounds):
            t_ort = run_time(runs["ort"], args.repeat)
            base.append(t_ort)
            for name in columns:
                ratios[name].append(run_time(runs[name], args.repeat) / t_ort)
        cells = [f"{statistics.median(r):.2f} [{min(r):.2f}-{max(r):.2f}]" for r in ratios.values()]
        print(f"| {text} | {statistics.median(base) * 1e6:.0f} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

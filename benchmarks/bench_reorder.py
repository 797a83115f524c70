"""Times DeltaReorder (docs/ops.md#deltareorder) against ORT's own reorders, ReorderInput and ReorderOutput
(com.microsoft.nchwc: what dense ORT runs at the ends of its NCHWc chains), in one process.

    python benchmarks/bench_reorder.py [--rounds 5] [--repeat 50] [--shapes 256x20x20 128x40x40 ...]

Shapes are YOLOv8n's around its two Resize nodes (where a blocked region hands tensors to NCHW ops and back) and
a 160x160 map. One thread, by the calling thread's CPU time. Per round each time is the median of `repeat` runs;
the table prints the median ratio over the rounds and [min-max], and each op's bandwidth (bytes read and written
per second) beside a numpy copy's of the same tensor.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ops  # noqa: E402
from deltaonnx import DOMAIN, _native  # noqa: E402

SHAPES = ["256x20x20", "128x40x40", "256x40x40", "128x80x80", "64x160x160"]
NCHWC = "com.microsoft.nchwc"


def reorder_model(op, domain, **attrs):
    node = helper.make_node(op, ["x"], ["y"], domain=domain, **attrs)
    return bench_ops._model([node], [bench_ops._vi("x")], [bench_ops._vi("y")], [])


def ort_reorder_session(op, **attrs):
    """ORT's contrib reorder alone (optimisations off, so the graph stays the one node)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(reorder_model(op, NCHWC, **attrs), so, providers=["CPUExecutionProvider"])


def run_time(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t = time.thread_time()
        fn()
        times.append(time.thread_time() - t)
    return statistics.median(times)


def round_arguments(argv, description, shapes):
    """--rounds, --repeat and --shapes (CxHxW), as this benchmark and bench_resize.py take them."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--shapes", nargs="+", default=shapes)
    return ap.parse_args(argv)


def main(argv=None):
    args = round_arguments(argv, __doc__.splitlines()[0], SHAPES)
    b = int(_native.channel_block())
    print(f"channel block b = {b}, kernels {_native.simd_level()}; DeltaReorder / ORT's reorder, median [min-max]; "
          "GB/s (read + written) of DeltaReorder, ORT's reorder and a numpy copy")
    print("| shape | to blocked / ReorderInput | GB/s | to nchw / ReorderOutput | GB/s | copy GB/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for text in args.shapes:
        C, H, W = (int(v) for v in text.split("x"))
        x = np.random.default_rng(0).standard_normal((1, C, H, W)).astype(np.float32)
        ours = {to: bench_ops.session(reorder_model("DeltaReorder", DOMAIN, to=to), 1, custom=True)
                for to in ("blocked", "nchw")}
        theirs = {"blocked": ort_reorder_session("ReorderInput"),
                  "nchw": ort_reorder_session("ReorderOutput", channels=C)}
        xb = theirs["blocked"].run(None, {"x": x})[0]
        inputs = {"blocked": x, "nchw": xb}
        copy_to = np.empty_like(x)
        ratios = {"blocked": [], "nchw": []}
        best = {}
        for _ in range(args.rounds):
            for to in ("blocked", "nchw"):
                feed = {"x": inputs[to]}
                t_ours = run_time(lambda: ours[to].run(None, feed), args.repeat)
                t_theirs = run_time(lambda: theirs[to].run(None, feed), args.repeat)
                ratios[to].append(t_ours / t_theirs)
                best[to] = min(best.get(to, (1e9, 1e9)), (t_ours, t_theirs))
            best["copy"] = min(best.get("copy", 1e9), run_time(lambda: np.copyto(copy_to, x), args.repeat))
        gbs = lambda t: 2 * x.nbytes / t / 1e9  # noqa: E731
        cells = []
        for to in ("blocked", "nchw"):
            r = ratios[to]
            cells += [f"{statistics.median(r):.2f} [{min(r):.2f}-{max(r):.2f}]",
                      f"{gbs(best[to][0]):.0f} / {gbs(best[to][1]):.0f}"]
        print(f"| {text} | " + " | ".join(cells) + f" | {gbs(best['copy']):.0f} |", flush=True)


if __name__ == "__main__":
    main()

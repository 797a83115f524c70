"""Times DeltaPool against ORT's own MaxPool on the pool shapes of real models, in one run.

The same method as bench_ops.py (moving-blob frames, state bound in place, with and without an incoming change
map; ratio = delta / dense, lower is better), on the shapes where YOLOv8 and MTCNN PNet pool:

    python benchmarks/bench_pool.py --clock cpu [--cases sppf_256_15x20] [--fractions 0 1] [--repeat 30]

`--clock cpu` times by the calling thread's CPU time (the sessions run one intra-op thread).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from onnx import TensorProto, helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_ops  # noqa: E402  (the shared timing loop, frames and sessions)

# name: (C, H, W, kernel, stride, pad, ceil_mode)
CASES = {
    "maxpool5x5_s1_128_20x20": (128, 20, 20, 5, 1, 2, 0),  # bench_ops.py's case
    "sppf_256_15x20": (256, 15, 20, 5, 1, 2, 0),  # YOLOv8n SPPF at 480x640 (stride 32)
    "sppf_256_20x20": (256, 20, 20, 5, 1, 2, 0),  # YOLOv8n SPPF at 640x640
    "pnet_10_143x191": (10, 143, 191, 2, 2, 0, 1),  # MTCNN PNet's first pool at 288x384
    "maxpool3x3_s2_64_120x160": (64, 120, 160, 3, 2, 1, 0),  # a ResNet-style stem pool
}


def build_models(C, H, W, k, s, p, ceil):
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, ceil_mode=ceil)
    vi = bench_ops._vi
    dense = bench_ops._model([helper.make_node("MaxPool", ["x"], ["y"], **attrs)], [vi("x")], [vi("y")], [])
    delta = {}
    for with_map in (False, True):
        node = helper.make_node(
            "DeltaPool", ["x", "" if with_map else "x_ref", "y_prev"] + (["map_in"] if with_map else []),
            ["y", "" if with_map else "x_ref_next", "map"], domain=bench_ops.DOMAIN, name="dp", **attrs)
        ins = [vi("x")] + ([] if with_map else [vi("x_ref")]) + [vi("y_prev")] + (
            [vi("map_in", TensorProto.UINT8)] if with_map else [])
        outs = [vi("y")] + ([] if with_map else [vi("x_ref_next")]) + [vi("map", TensorProto.UINT8)]
        delta[with_map] = bench_ops._model([node], ins, outs, [])
    return dense, delta


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--fractions", type=float, nargs="+", default=bench_ops.FRACTIONS)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="cpu")
    args = ap.parse_args(argv)
    bench_ops.CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter
    print(f"DELTAONNX_SIMD={os.environ.get('DELTAONNX_SIMD', '(best)')}, clock {args.clock}, 1 thread")
    rng = np.random.default_rng(0)
    for case in args.cases:
        C, H, W, k, s, p, ceil = CASES[case]
        dense_model, delta_models = build_models(C, H, W, k, s, p, ceil)
        dense = bench_ops.session(dense_model, 1, False)
        delta = {m: bench_ops.session(b, 1, True) for m, b in delta_models.items()}
        print(f"\n{case}  (C={C} {H}x{W} k{k} s{s} p{p} ceil={ceil})")
        print(f"  {'changed':>8} {'dense ms':>9} {'delta ms':>9} {'ratio':>6} {'+map ms':>8} {'ratio':>6} {'recomputed':>10}")
        for fraction in args.fractions:
            frames, maps = bench_ops.blob_frames(C, H, W, fraction, rng)
            dense_t = bench_ops.time_dense(dense, frames, args.repeat)
            delta_t, rec = bench_ops.time_delta(delta[False], frames, maps, False, args.repeat)
            map_t, _ = bench_ops.time_delta(delta[True], frames, maps, True, args.repeat)
            dense_t = min(dense_t, bench_ops.time_dense(dense, frames, args.repeat))  # interleaved: drift guard
            print(f"  {fraction:>7.0%} {dense_t * 1e3:>9.3f} {delta_t * 1e3:>9.3f} {delta_t / dense_t:>6.2f}"
                  f" {map_t * 1e3:>8.3f} {map_t / dense_t:>6.2f} {rec:>10.1%}")


if __name__ == "__main__":
    main()

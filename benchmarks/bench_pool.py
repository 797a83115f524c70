"""Times DeltaPool against ORT's own MaxPool on the pool shapes of real models, in one run.

The same method as bench_ops.py (moving-blob frames, state bound in place, with and without an incoming change
map; ratio = delta / dense, lower is better), on the shapes where YOLOv8 and MTCNN PNet pool:

    python benchmarks/bench_pool.py --clock cpu [--cases sppf_256_15x20] [--fractions 0 1] [--repeat 30]
        [--layouts nchw blocked]

`--clock cpu` times by the calling thread's CPU time (the sessions run one intra-op thread). `--layouts blocked`
adds rows for DeltaPool with layout = "blocked" (docs/ops.md#blocked-layout), fed the same frames blocked by the
library's b, as a blocked region's producer would hand them; dense ORT's MaxPool reads NCHW. Beside them,
`NCHWc ms` is dense ORT's NCHWc MaxPool fed the blocked frames (the node its NCHWc transformer runs inside a model,
without the reorders a lone MaxPool model gets) and `+map/NCHWc` the op with a map against it: the ratio that
decides a zoo model's pool, where everything changes at 100%.
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
from deltaonnx import _native  # noqa: E402
from deltaonnx.reference import to_blocked  # noqa: E402

# name: (C, H, W, kernel, stride, pad, ceil_mode)
CASES = {
    "maxpool5x5_s1_128_20x20": (128, 20, 20, 5, 1, 2, 0),  # bench_ops.py's case
    "sppf_256_15x20": (256, 15, 20, 5, 1, 2, 0),  # YOLOv8n SPPF at 480x640 (stride 32)
    "sppf_256_20x20": (256, 20, 20, 5, 1, 2, 0),  # YOLOv8n SPPF at 640x640
    "pnet_10_143x191": (10, 143, 191, 2, 2, 0, 1),  # MTCNN PNet's first pool at 288x384
    "maxpool3x3_s2_64_120x160": (64, 120, 160, 3, 2, 1, 0),  # a ResNet-style stem pool
    # the zoo's pools at exact_all_changing.py's sizes (issue 15's whole-item cost)
    "resnet18_like_16_112x112": (16, 112, 112, 3, 2, 1, 0),  # resnet18_like at 224x224
    "resnet_stem_64_112x112": (64, 112, 112, 3, 2, 1, 0),  # ResNet-18's own stem pool
    "cnn1_32_64x64": (32, 64, 64, 2, 2, 0, 0),  # cnn1's first pool
    "cnn1_64_32x32": (64, 32, 32, 2, 2, 0, 0),  # cnn1's second pool
    "yolov8_like_sppf_32_10x10": (32, 10, 10, 5, 1, 2, 0),  # yolov8_like's SPPF at 320x320
}


def build_models(C, H, W, k, s, p, ceil, layout="nchw"):
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, ceil_mode=ceil)
    vi = bench_ops._vi
    dense = bench_ops._model([helper.make_node("MaxPool", ["x"], ["y"], **attrs)], [vi("x")], [vi("y")], [])
    delta = {}
    for with_map in (False, True):
        node = helper.make_node(
            "DeltaPool", ["x", "" if with_map else "x_ref", "y_prev"] + (["map_in"] if with_map else []),
            ["y", "" if with_map else "x_ref_next", "map"], domain=bench_ops.DOMAIN, name="dp", layout=layout, **attrs)
        ins = [vi("x")] + ([] if with_map else [vi("x_ref")]) + [vi("y_prev")] + (
            [vi("map_in", TensorProto.UINT8)] if with_map else [])
        outs = [vi("y")] + ([] if with_map else [vi("x_ref_next")]) + [vi("map", TensorProto.UINT8)]
        delta[with_map] = bench_ops._model([node], ins, outs, [])
    return dense, delta


def build_nchwc_model(k, s, p, ceil):
    """Dense ORT's MaxPool as it runs inside a model whose neighbours are NCHWc (its NCHWc transformer's node),
    fed the blocked frames directly: the kernel a blocked DeltaPool replaces, without the reorders a lone
    MaxPool model adds around it."""
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, ceil_mode=ceil)
    node = helper.make_node("MaxPool", ["x"], ["y"], domain="com.microsoft.nchwc", **attrs)
    g = helper.make_graph([node], "bench", [bench_ops._vi("x")], [bench_ops._vi("y")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft.nchwc", 1)])
    m.ir_version = 10
    return m.SerializeToString()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--fractions", type=float, nargs="+", default=bench_ops.FRACTIONS)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--clock", choices=["wall", "cpu"], default="cpu")
    ap.add_argument("--layouts", nargs="+", default=["nchw"], choices=["nchw", "blocked"])
    args = ap.parse_args(argv)
    b = int(_native.channel_block())
    bench_ops.CLOCK = time.thread_time if args.clock == "cpu" else time.perf_counter
    print(f"DELTAONNX_SIMD={os.environ.get('DELTAONNX_SIMD', '(best)')}, clock {args.clock}, 1 thread")
    rng = np.random.default_rng(0)
    for case in args.cases:
        C, H, W, k, s, p, ceil = CASES[case]
        dense_model, _ = build_models(C, H, W, k, s, p, ceil)
        dense = bench_ops.session(dense_model, 1, False)
        nchwc = bench_ops.session(build_nchwc_model(k, s, p, ceil), 1, False)
        delta = {(layout, m): bench_ops.session(model, 1, True) for layout in args.layouts
                 for m, model in build_models(C, H, W, k, s, p, ceil, layout)[1].items()}
        print(f"\n{case}  (C={C} {H}x{W} k{k} s{s} p{p} ceil={ceil}; blocked: b = {b})")
        print(f"  {'changed':>8} {'layout':>7} {'dense ms':>9} {'delta ms':>9} {'ratio':>6} {'+map ms':>8} {'ratio':>6}"
              f" {'recomputed':>10}" + (f" {'NCHWc ms':>9} {'+map/NCHWc':>10}" if "blocked" in args.layouts else ""))
        for fraction in args.fractions:
            frames, maps = bench_ops.blob_frames(C, H, W, fraction, rng)
            for layout in args.layouts:
                fed = [to_blocked(f, b) for f in frames] if layout == "blocked" else frames
                dense_t = bench_ops.time_dense(dense, frames, args.repeat)
                delta_t, rec = bench_ops.time_delta(delta[layout, False], fed, maps, False, args.repeat)
                map_t, _ = bench_ops.time_delta(delta[layout, True], fed, maps, True, args.repeat)
                dense_t = min(dense_t, bench_ops.time_dense(dense, frames, args.repeat))  # interleaved: drift guard
                line = (f"  {fraction:>7.0%} {layout:>7} {dense_t * 1e3:>9.3f} {delta_t * 1e3:>9.3f}"
                        f" {delta_t / dense_t:>6.2f} {map_t * 1e3:>8.3f} {map_t / dense_t:>6.2f} {rec:>10.1%}")
                if layout == "blocked":  # dense ORT's NCHWc kernel on the same blocked frames, twice
                    nchwc_t = min(bench_ops.time_dense(nchwc, fed, args.repeat) for _ in range(2))
                    line += f" {nchwc_t * 1e3:>9.3f} {map_t / nchwc_t:>10.2f}"
                print(line)


if __name__ == "__main__":
    main()

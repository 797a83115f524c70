"""Times the NCHW16c prototype (partial_conv.cc) against dense ORT's Conv and today's DeltaConv on YOLOv8n's
shapes, in one process, one thread, by the calling thread's CPU time.

    python benchmarks/nchwc_prototype/bench.py [--rounds 3] [--repeat 20] [--fractions 0.05 0.1 0.2 0.5]
                                               [--cases 3x3_32_32_160x160 ...] [--act] [--variants avx512 ...]
                                               [--json out.json]

Frames are bench_ops.scene_frames (three compact moving regions plus scattered single pixels, sized to a share
of the *output* redone). Per round and share: dense ORT (NCHW model at ORT_ENABLE_ALL: its NCHWc kernels and
reorders), today's DeltaConv with a change map and no X_ref (as `convert` builds it at threshold 0) and with
X_ref and no map, and the prototype with X_ref and the map (it compares the marked pixels: more work than the
first). Each time is the median of `repeat` runs; the table prints the median ratio to dense over the rounds
and [min-max]. `per FLOP` = ratio / share redone (1.0: as cheap per FLOP as dense ORT). Each prototype variant
runs in turn in every round (tiles: patches copied into tiles; indirect: line pointers read in place). The prototype's
inputs are already blocked: it measures the design where Delta ops exchange NCHW16c tensors.
`--act` adds SiLU to dense (Conv, Sigmoid, Mul: ORT fuses them) and to the prototype; today's op is left out.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import bench_ops  # noqa: E402
import partial_conv as pc  # noqa: E402

# name: (C, M, k, stride, H, W) of YOLOv8n at 640x640
SHAPES = {
    "3x3_s2_16_32_320x320": (16, 32, 3, 2, 320, 320),
    "3x3_32_32_160x160": (32, 32, 3, 1, 160, 160),
    "1x1_64_64_160x160": (64, 64, 1, 1, 160, 160),
    "3x3_s2_64_128_160x160": (64, 128, 3, 2, 160, 160),
    "3x3_64_64_80x80": (64, 64, 3, 1, 80, 80),
    "3x3_128_128_40x40": (128, 128, 3, 1, 40, 40),
}
FRACTIONS = [0.05, 0.10, 0.20, 0.50]


def dense_silu_model(w, b, k, s):
    p = k // 2
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4),
             helper.make_node("Sigmoid", ["c"], ["g"]), helper.make_node("Mul", ["c", "g"], ["y"])]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    return bench_ops._model(nodes, [bench_ops._vi("x")], [bench_ops._vi("y")], inits)


def time_prototype(conv, frames, maps, repeat, variant):
    """State kept blocked between runs; primed with the last frame so each timed run sees one step of change."""
    blocked = [pc.to_blocked(f) for f in frames]
    flat_maps = [np.ascontiguousarray(m[0, 0]) for m in maps]
    x_ref, y, map_out = conv.new_state()
    conv.step(blocked[-1], x_ref, np.ones_like(flat_maps[0]), y, map_out)
    times, shares = [], []
    for i in range(repeat + 2):
        f = i % len(frames)
        t0 = time.thread_time()
        n = conv.step(blocked[f], x_ref, flat_maps[f], y, map_out, variant=variant)
        t1 = time.thread_time()
        if i >= 2:
            times.append(t1 - t0)
            shares.append(n / map_out.size)
    return statistics.median(times), float(np.mean(shares))


def spread(values):
    return statistics.median(values), min(values), max(values)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--fractions", type=float, nargs="+", default=FRACTIONS)
    ap.add_argument("--cases", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--act", action="store_true", help="SiLU after the conv (dense and prototype only)")
    ap.add_argument("--variants", nargs="+", default=["avx512", "avx512_indirect"],
                    choices=["avx512", "avx512_indirect"],
                    help="the prototype's kernels, timed in turn: gathered tiles, line pointers read in place")
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    bench_ops.CLOCK = time.thread_time  # one-thread sessions run their kernels in the calling thread
    print(f"onnxruntime {ort.__version__}, one thread, thread CPU time, {args.rounds} rounds x {args.repeat} runs"
          + (", SiLU" if args.act else "") + f", prototype variants {' '.join(args.variants)}")
    rng = np.random.default_rng(0)
    results = []
    for case in args.cases:
        C, M, k, s, H, W = SHAPES[case]
        name = f"proto_{case}"
        bench_ops.CASES[name] = (C, M, k, s, 1, H, W)
        bench_ops.YOLO_CASES.append(name)  # today's op keeps dense_fraction 1: the partial engine at every share
        dense_model, delta_models = bench_ops.build_models(name, rng)
        from onnx import load_from_string, numpy_helper as nh
        inits = {i.name: nh.to_array(i) for i in load_from_string(dense_model).graph.initializer}
        w, b = inits["w"], inits["b"]
        if args.act:
            dense_model = dense_silu_model(w, b, k, s)
        dense = bench_ops.session(dense_model, 1, False)
        today = {} if args.act else {m: bench_ops.session(blob, 1, True) for m, blob in delta_models.items()}
        conv = pc.PartialConv(w, b, H, W, s, act=args.act)
        flops = 2.0 * C * M * k * k * conv.Ho * conv.Wo
        print(f"\n{case}  (dense {flops / 1e6:.0f} MFLOP)")
        print(f"  {'share':>6} {'dense ms':>9}" + "".join(f" {v + '/dense':>22} {'per FLOP':>8}" for v in args.variants)
              + ("" if args.act else f" {'today+map/dense':>20} {'per FLOP':>8} {'today+ref/dense':>16}"))
        for fraction in args.fractions:
            if fraction >= 1.0:
                frames, maps = bench_ops.blob_frames(C, H, W, 1.0, rng)
            else:
                frames, maps, _ = bench_ops.scene_frames(C, H, W, k, s, fraction, rng)
            rows = []
            for _ in range(args.rounds):
                d = min(bench_ops.time_dense(dense, frames, args.repeat), bench_ops.time_dense(dense, frames, args.repeat))
                row = dict(dense=d)
                for v in args.variants:
                    row[v], row["share"] = time_prototype(conv, frames, maps, args.repeat, v)
                if not args.act:
                    row["today_map"], row["share_today"] = bench_ops.time_delta(today[True], frames, maps, True, args.repeat)
                    row["today_ref"], _ = bench_ops.time_delta(today[False], frames, maps, False, args.repeat)
                rows.append(row)
            share = rows[0]["share"]
            line = f"  {share:>6.1%} {statistics.median(r['dense'] for r in rows) * 1e3:>9.3f}"
            out = dict(case=case, fraction=fraction, share=share, act=args.act, dense_ms=[r["dense"] * 1e3 for r in rows])
            for v in args.variants:
                pr = spread([r[v] / r["dense"] for r in rows])
                line += f" {pr[0]:>6.3f} [{pr[1]:.3f}-{pr[2]:.3f}]      {pr[0] / share:>8.2f}"
                out[f"{v}_ms"] = [r[v] * 1e3 for r in rows]
            if not args.act:
                tm = spread([r["today_map"] / r["dense"] for r in rows])
                tr = spread([r["today_ref"] / r["dense"] for r in rows])
                line += f" {tm[0]:>6.3f} [{tm[1]:.3f}-{tm[2]:.3f}] {tm[0] / rows[0]['share_today']:>8.2f} {tr[0]:>6.3f} [{tr[1]:.2f}-{tr[2]:.2f}]"
                out.update(today_map_ms=[r["today_map"] * 1e3 for r in rows],
                           today_ref_ms=[r["today_ref"] * 1e3 for r in rows], share_today=rows[0]["share_today"])
            print(line, flush=True)
            results.append(out)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

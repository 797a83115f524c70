"""A/B of two builds of the op library, loaded side by side in one process, against dense ORT measured in the
same rounds (the CPU time of the calling thread: one ORT thread), for changes whose effect is smaller than the
drift between separate runs on a shared machine.

    python benchmarks/ab_libraries.py ops DIR_A DIR_B [--cases yolo_3x3_32_32_160x160 ...] [--rounds 3]
    python benchmarks/ab_libraries.py ops DIR_A DIR_B --layout blocked [--cases ...]   # bench_blocked.py's ops
    python benchmarks/ab_libraries.py pool DIR_A DIR_B --layout blocked --cases resnet18_like_16_112x112 --fractions 1
    python benchmarks/ab_libraries.py model DIR_A DIR_B --model yolov8n.onnx --video vtest.avi [--inner 0.3]
    python benchmarks/ab_libraries.py model DIR_A DIR_B --model zoo.onnx --video bikes.mp4 --threshold 0 --inner 0 \
        --no-fallback                                  # exact, everything changing (issue 15's first goal)

DIR_A / DIR_B hold a libdeltaonnx_ops.so each (e.g. a build of main and one of a branch, with the same flags).
`ops`: bench_ops.py's YOLO cases with a change map, interleaved rounds, median and [min-max] ratio to dense ORT;
with `--layout blocked`, bench_blocked.py's models (Conv+SiLU, DeltaConv layout="blocked" fed blocked frames).
`pool`: bench_pool.py's cases (blob frames, default 100% changed: the whole item), DeltaPool with a change map
against dense ORT's MaxPool, with `--layout blocked` against its NCHWc MaxPool fed the same blocked frames.
`model`: a real model on a clip (gate 0.05 and the given inner threshold), both libraries' DeltaSessions and
dense ORT frame by frame after the warm-up frames; median ms per frame and the speedups.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import onnxruntime as ort

import bench_ops


def _session(model, library=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    if library:
        so.register_custom_ops_library(library)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def ab_ops(dirs, cases, fractions, rounds, layout="nchw", repeat=20):
    bench_ops.CLOCK = time.thread_time
    rng = np.random.default_rng(0)
    for case in cases:
        import bench_blocked  # its depthwise shapes besides bench_ops's

        C, M, k, s, g, H, W = bench_blocked.ALL_CASES[case]
        if layout == "blocked":
            from deltaonnx import _native
            from deltaonnx.reference import to_blocked

            dense_model, _, delta_model = bench_blocked.models(case, rng)
        else:
            dense_model, delta_models = bench_ops.build_models(case, rng)
            delta_model = delta_models[True]
        dense = _session(dense_model)
        deltas = [_session(delta_model, os.path.join(d, "libdeltaonnx_ops.so")) for d in dirs]
        for fraction in fractions:
            frames, maps, _ = bench_ops.scene_frames(C, H, W, k, s, fraction, rng)
            delta_frames = [to_blocked(f, int(_native.channel_block())) for f in frames] if layout == "blocked" else frames
            ratios, redone = [[] for _ in dirs], 0.0
            for _ in range(rounds):
                dense_t = bench_ops.time_dense(dense, frames, repeat)
                for i, delta in enumerate(deltas):
                    t, redone = bench_ops.time_delta(delta, delta_frames, maps, True, repeat)
                    ratios[i].append(t / dense_t)
            print(f"{case:28s} {fraction:4.0%} redone {redone:5.1%}  " + "  ".join(
                f"{os.path.basename(d.rstrip('/'))} {statistics.median(r):.3f} [{min(r):.3f}-{max(r):.3f}]"
                for d, r in zip(dirs, ratios)), flush=True)


def ab_pool(dirs, cases, fractions, rounds, layout="nchw", repeat=40):
    import bench_pool
    from deltaonnx import _native
    from deltaonnx.reference import to_blocked

    bench_ops.CLOCK = time.thread_time
    rng = np.random.default_rng(0)
    b = int(_native.channel_block())
    for case in cases:
        C, H, W, k, s, p, ceil = bench_pool.CASES[case]
        dense_nchw, delta_models = bench_pool.build_models(C, H, W, k, s, p, ceil, layout)
        dense = _session(bench_pool.build_nchwc_model(k, s, p, ceil) if layout == "blocked" else dense_nchw)
        deltas = [_session(delta_models[True], os.path.join(d, "libdeltaonnx_ops.so")) for d in dirs]
        for fraction in fractions:
            frames, maps = bench_ops.blob_frames(C, H, W, fraction, rng)
            fed = [to_blocked(f, b) for f in frames] if layout == "blocked" else frames
            ratios = [[] for _ in dirs]
            for r in range(rounds):
                dense_t = bench_ops.time_dense(dense, fed, repeat)
                order = list(range(len(deltas)))[::-1 if r % 2 else 1]  # alternated: neither always second
                for i in order:
                    ratios[i].append(bench_ops.time_delta(deltas[i], fed, maps, True, repeat)[0] / dense_t)
            print(f"{case:28s} {layout} {fraction:4.0%}  " + "  ".join(
                f"{os.path.basename(d.rstrip('/'))} {statistics.median(r):.3f} [{min(r):.3f}-{max(r):.3f}]"
                for d, r in zip(dirs, ratios)), flush=True)


def ab_model(dirs, model_path, video, inner, warmup, timed, threshold=0.05, fallback=True, size=None,
             resize="letterbox"):
    from deltaonnx._lib import library_path
    from deltaonnx.convert import convert_with_report, load_model
    from deltaonnx.session import DeltaSession
    from deltaonnx.video import Preprocess, read_frames

    original = load_model(model_path)
    converted, _ = convert_with_report(original, threshold=threshold, inner_threshold=inner)
    sessions = []
    for d in dirs:  # DeltaSession registers library_path(), which looks in DELTAONNX_LIBRARY_DIR first
        os.environ["DELTAONNX_LIBRARY_DIR"] = d
        assert os.path.dirname(library_path()) == os.path.abspath(d), library_path()
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        sessions.append(DeltaSession(converted, so, dense_fallback=fallback))
    dense = _session(original.SerializeToString())
    name = original.graph.input[0].name
    shape = [d.dim_value for d in original.graph.input[0].type.tensor_type.shape.dim]
    prep = Preprocess(size=size or (shape[2], shape[3]), resize=resize)
    frames = [prep(f) for f in read_frames(video, count=warmup + timed)]
    for f in frames[:warmup]:
        for s in sessions:
            s.run(None, {name: f})
    times, dense_times = [[] for _ in dirs], []
    for k, f in enumerate(frames[warmup:]):
        # the order turns every frame: whichever runs second finds the frame (and, on a busy machine, the
        # core) warmer, which biased a fixed order by a few percent
        order = list(range(len(sessions)))
        if k % 2:
            order.reverse()
        for i in order:
            t0 = time.thread_time()
            sessions[i].run(None, {name: f})
            times[i].append(time.thread_time() - t0)
        t0 = time.thread_time()
        dense.run(None, {name: f})
        dense_times.append(time.thread_time() - t0)
    d = statistics.median(dense_times)
    print(f"threshold {threshold}, inner {inner}{'' if fallback else ', no fallback'}: dense {d * 1e3:.2f} ms/frame; " + "; ".join(
        f"{os.path.basename(lib.rstrip('/'))} {statistics.median(t) * 1e3:.2f} ms = {d / statistics.median(t):.3f}x"
        for lib, t in zip(dirs, times)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["ops", "pool", "model"])
    ap.add_argument("dirs", nargs=2, help="directories holding libdeltaonnx_ops.so (A, then B)")
    ap.add_argument("--cases", nargs="+", help="default: bench_ops.py's YOLO cases (ops), bench_pool.py's (pool)")
    ap.add_argument("--fractions", type=float, nargs="+", help="default: 0.1 0.2 0.5 (ops), 1 (pool)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--layout", choices=["nchw", "blocked"], default="nchw", help="ops, pool: the Delta op's layout")
    ap.add_argument("--model")
    ap.add_argument("--video")
    ap.add_argument("--inner", type=float, default=0.3)
    ap.add_argument("--threshold", type=float, default=0.05, help="model: the input gate's threshold (0: exact)")
    ap.add_argument("--no-fallback", action="store_true", help="model: DeltaSession without the dense twin")
    ap.add_argument("--resize", default="letterbox", help="model: how frames are resized (video.Preprocess)")
    ap.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="model: frame size (default: the model's)")
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--frames", type=int, default=50, help="timed frames after the warm-up")
    args = ap.parse_args(argv)
    if args.what == "ops":
        ab_ops(args.dirs, args.cases or bench_ops.YOLO_CASES, args.fractions or bench_ops.YOLO_FRACTIONS, args.rounds,
               args.layout)
    elif args.what == "pool":
        import bench_pool

        ab_pool(args.dirs, args.cases or list(bench_pool.CASES), args.fractions or [1.0], args.rounds, args.layout)
    else:
        if not (args.model and args.video):
            ap.error("model needs --model and --video")
        ab_model(args.dirs, args.model, args.video, args.inner, args.warmup, args.frames, args.threshold,
                 not args.no_fallback, tuple(args.size) if args.size else None, args.resize)


if __name__ == "__main__":
    main()

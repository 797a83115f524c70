"""Times DeltaConv/DeltaPool against ORT's own Conv/MaxPool on the same shapes, in one run.

Each case feeds a cycle of frames whose differences are moving blobs covering a given share of the image
(0%, 1%, 5%, 20%, 100%), with the state bound in place through IOBinding exactly as DeltaSession binds it,
with and without an incoming change map. It prints the time per run of both and the ratio delta/dense
(lower is better; the dense session is ORT's Conv at ORT_ENABLE_ALL, which uses its NCHWc kernels).

    python benchmarks/bench_ops.py [--threads 1 2] [--repeat 30] [--cases conv3x3_64] [--json out.json]

`--clock cpu` times single-threaded runs by the calling thread's CPU time (ORT runs a 1-thread session's
kernels in the calling thread), which stays meaningful on a busy machine; the default is wall time.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import deltaonnx

DOMAIN = "com.deltaonnx"

# name: (C, M, k, stride, group, H, W); pool cases have M = None
CASES = {
    "conv3x3_16_32_s2_240x320": (16, 32, 3, 2, 1, 240, 320),
    "conv3x3_64_64_120x160": (64, 64, 3, 1, 1, 120, 160),
    "conv3x3_128_256_s2_30x40": (128, 256, 3, 2, 1, 30, 40),
    "conv3x3_256_256_20x15": (256, 256, 3, 1, 1, 20, 15),
    "conv1x1_128_128_60x80": (128, 128, 1, 1, 1, 60, 80),
    "dwconv3x3_64_120x160": (64, 64, 3, 1, 64, 120, 160),
    "maxpool5x5_s1_128_20x20": (128, None, 5, 1, 1, 20, 20),
}
COMPUTE_BOUND = {"conv3x3_64_64_120x160", "conv3x3_128_256_s2_30x40", "conv3x3_256_256_20x15"}
FRACTIONS = [0.0, 0.01, 0.05, 0.20, 1.0]


def _model(nodes, inputs, outputs, inits):
    g = helper.make_graph(nodes, "bench", inputs, outputs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)])
    m.ir_version = 10
    return m.SerializeToString()


def _vi(name, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, None)


def build_models(case, rng):
    C, M, k, s, g, H, W = CASES[case]
    p = k // 2
    if M is None:
        attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4)
        dense = _model([helper.make_node("MaxPool", ["x"], ["y"], **attrs)], [_vi("x")], [_vi("y")], [])
        delta_nodes = lambda with_map: [helper.make_node(
            "DeltaPool", ["x", "" if with_map else "x_ref", "y_prev"] + (["map_in"] if with_map else []),
            ["y", "" if with_map else "x_ref_next", "map"],
            domain=DOMAIN, name="dp", **attrs)]
        inits = []
    else:
        w = (rng.standard_normal((M, C // g, k, k)) / np.sqrt(C // g * k * k)).astype(np.float32)
        b = rng.standard_normal(M).astype(np.float32) * 0.1
        inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
        attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, group=g)
        dense = _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)], [_vi("x")], [_vi("y")], inits)
        delta_nodes = lambda with_map: [helper.make_node(
            "DeltaConv", ["x", "w", "b", "" if with_map else "x_ref", "y_prev"] + (["map_in"] if with_map else []),
            ["y", "" if with_map else "x_ref_next", "map"], domain=DOMAIN, name="dc", **attrs)]
    # With a change map (threshold 0) the op keeps no X_ref, as `convert` builds it (docs/ops.md).
    delta = {}
    for with_map in (False, True):
        ins = [_vi("x")] + ([] if with_map else [_vi("x_ref")]) + [_vi("y_prev")] + (
            [_vi("map_in", TensorProto.UINT8)] if with_map else [])
        outs = [_vi("y")] + ([] if with_map else [_vi("x_ref_next")]) + [_vi("map", TensorProto.UINT8)]
        delta[with_map] = _model(delta_nodes(with_map), ins, outs, inits)
    return dense, delta


def blob_frames(C, H, W, fraction, rng, count=6):
    """A cycle of frames over a fixed background whose consecutive differences are moving square blobs
    covering about `fraction` of the image (all pixels for 1.0). Returns frames and input change maps."""
    background = rng.standard_normal((1, C, H, W)).astype(np.float32)
    if fraction >= 1.0:
        frames = [rng.standard_normal((1, C, H, W)).astype(np.float32) for _ in range(count)]
        return frames, [np.ones((1, 1, H, W), np.uint8) for _ in frames]
    if fraction <= 0.0:
        return [background] * count, [np.zeros((1, 1, H, W), np.uint8)] * count
    side = max(2, int(round(min(H, W) / 8)))
    # Each step changes the union of a blob's old and new place (a shift of side/2: 1.5 * side^2 pixels).
    blobs = max(1, int(round(fraction * H * W / (1.5 * side * side))))
    side = max(2, int(round(np.sqrt(fraction * H * W / (1.5 * blobs)))))
    starts = [(rng.integers(0, max(1, H - side)), rng.integers(0, max(1, W - side))) for _ in range(blobs)]
    content = [rng.standard_normal((C, side, side)).astype(np.float32) for _ in range(blobs)]
    frames = []
    for t in range(count):
        f = background.copy()
        for (y, x), c in zip(starts, content):
            dx = (t * side // 2) % max(1, W - side - x) if t < count else 0
            xs = min(W - side, x + dx)
            f[0, :, y:y + side, xs:xs + side] = c
        frames.append(f)
    maps = []
    for t in range(count):
        prev = frames[t - 1]
        maps.append((np.abs(frames[t] - prev).max(axis=1, keepdims=True) > 0).astype(np.uint8))
    return frames, maps


def session(model_bytes, threads, custom):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if custom:
        so.register_custom_ops_library(deltaonnx.library_path())
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


CLOCK = time.perf_counter


def time_dense(sess, frames, repeat):
    binding = sess.io_binding()
    y = None
    times = []
    for i in range(repeat + 3):
        binding.bind_cpu_input("x", frames[i % len(frames)])
        if y is None:
            binding.bind_output("y", "cpu")
        else:
            binding.bind_ortvalue_output("y", y)
        t0 = CLOCK()
        sess.run_with_iobinding(binding)
        t1 = CLOCK()
        y = binding.get_outputs()[0]
        if i >= 3:
            times.append(t1 - t0)
    return statistics.median(times)


def time_delta(sess, frames, maps, with_map, repeat):
    """State bound in place: past and present on one OrtValue, as DeltaSession does (with a change map the
    op keeps no X_ref, so Y is the whole state)."""
    kept = ("y", "map") if with_map else ("y", "x_ref_next", "map")
    binding = sess.io_binding()
    empty = ort.OrtValue.ortvalue_from_numpy(np.zeros((0, 0, 0, 0), np.float32))
    state = None
    times, recomputed = [], []
    # Prime with the last frame of the cycle so every timed run sees exactly one step of change.
    order = [len(frames) - 1] + list(range(len(frames))) * ((repeat + 3) // len(frames) + 2)
    for i, f in enumerate(order[: repeat + 4]):
        binding.bind_cpu_input("x", frames[f])
        if with_map:
            binding.bind_cpu_input("map_in", maps[f] if state is not None else np.ones_like(maps[f]))
        if state is None:
            if not with_map:
                binding.bind_ortvalue_input("x_ref", empty)
            binding.bind_ortvalue_input("y_prev", empty)
            for name in kept:
                binding.bind_output(name, "cpu")
        else:
            if not with_map:
                binding.bind_ortvalue_input("x_ref", state["x_ref_next"])
            binding.bind_ortvalue_input("y_prev", state["y"])
            for name in kept:
                binding.bind_ortvalue_output(name, state[name])
        t0 = CLOCK()
        sess.run_with_iobinding(binding)
        t1 = CLOCK()
        if state is None:
            state = dict(zip(kept, binding.get_outputs()))
        elif i >= 4:
            times.append(t1 - t0)
            recomputed.append(float(state["map"].numpy().mean()))
    return statistics.median(times), float(np.mean(recomputed))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--cases", nargs="+", default=list(CASES))
    ap.add_argument("--fractions", type=float, nargs="+", default=FRACTIONS)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="cpu: the calling thread's CPU time (only meaningful with --threads 1)")
    args = ap.parse_args(argv)
    global CLOCK
    if args.clock == "cpu":
        if args.threads != [1]:
            ap.error("--clock cpu needs --threads 1 (other threads' work would not be counted)")
        CLOCK = time.thread_time
    from deltaonnx import _native

    print(f"deltaonnx kernels: {_native.simd_level()} (cpu: {_native.cpu_features()}), onnxruntime {ort.__version__}")
    rng = np.random.default_rng(0)
    results = []
    for case in args.cases:
        C, M, k, s, g, H, W = CASES[case]
        dense_model, delta_models = build_models(case, rng)
        for threads in args.threads:
            dense = session(dense_model, threads, False)
            delta = {m: session(b, threads, True) for m, b in delta_models.items()}
            print(f"\n{case}  threads={threads}")
            print(f"  {'changed':>8} {'dense ms':>9} {'delta ms':>9} {'ratio':>6} {'+map ms':>8} {'ratio':>6} {'recomputed':>10}")
            for fraction in args.fractions:
                frames, maps = blob_frames(C, H, W, fraction, rng)
                dense_t = time_dense(dense, frames, args.repeat)
                delta_t, rec = time_delta(delta[False], frames, maps, False, args.repeat)
                map_t, _ = time_delta(delta[True], frames, maps, True, args.repeat)
                dense_t2 = time_dense(dense, frames, args.repeat)  # interleaved: guard against drift
                dense_t = min(dense_t, dense_t2)
                row = dict(case=case, threads=threads, changed=fraction, dense_ms=dense_t * 1e3,
                           delta_ms=delta_t * 1e3, delta_map_ms=map_t * 1e3, ratio=delta_t / dense_t,
                           ratio_map=map_t / dense_t, recomputed=rec, compute_bound=case in COMPUTE_BOUND)
                results.append(row)
                print(f"  {fraction:>7.0%} {row['dense_ms']:>9.3f} {row['delta_ms']:>9.3f} {row['ratio']:>6.2f}"
                      f" {row['delta_map_ms']:>8.3f} {row['ratio_map']:>6.2f} {rec:>10.1%}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

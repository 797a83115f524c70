"""Times DeltaConv/DeltaPool against ORT's own Conv/MaxPool on the same shapes, in one run.

Each case feeds a cycle of frames whose differences are moving blobs covering a given share of the image
(0%, 1%, 5%, 20%, 100%), with the state bound in place through IOBinding exactly as DeltaSession binds it,
with and without an incoming change map. It prints the time per run of both and the ratio delta/dense
(lower is better; the dense session is ORT's Conv at ORT_ENABLE_ALL, which uses its NCHWc kernels).

    python benchmarks/bench_ops.py [--threads 1 2] [--repeat 30] [--cases conv3x3_64] [--json out.json]
    python benchmarks/bench_ops.py --yolo --threads 1 --clock cpu   # YOLOv8n/s shapes, scene changes

`--yolo` runs the YOLO layer shapes at 10/20/50% of the output redone and prints, beside the ratio, the ideal
(the share redone) and the cost per FLOP redone against dense ORT's (ratio / share; 1.0 = as cheap per FLOP).

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
from deltaonnx import DOMAIN

# name: (C, M, k, stride, group, H, W); pool cases have M = None. The yolo_ cases are the convolutions of
# YOLOv8n/s (the stem's stride-2 convs, C2f bottlenecks and their 1x1 ends, the stride-2 downsamples, SPPF and the FPN) at 640x640, fed
# changes as a drifted detector sees them (`scene_frames`: a few compact regions plus scattered single pixels),
# at a share of the *output* redone (10/20/50%). Their op keeps dense_fraction 1 so the partial engine is
# measured at every share; the printed ideal is that share (dense ORT's cost per FLOP).
CASES = {
    "conv3x3_16_32_s2_240x320": (16, 32, 3, 2, 1, 240, 320),
    "conv3x3_64_64_120x160": (64, 64, 3, 1, 1, 120, 160),
    "conv3x3_128_256_s2_30x40": (128, 256, 3, 2, 1, 30, 40),
    "conv3x3_256_256_20x15": (256, 256, 3, 1, 1, 20, 15),
    "conv1x1_128_128_60x80": (128, 128, 1, 1, 1, 60, 80),
    "dwconv3x3_64_120x160": (64, 64, 3, 1, 64, 120, 160),
    "maxpool5x5_s1_128_20x20": (128, None, 5, 1, 1, 20, 20),
    "yolo_3x3_s2_3_16_640x640": (3, 16, 3, 2, 1, 640, 640),
    "yolo_3x3_s2_16_32_320x320": (16, 32, 3, 2, 1, 320, 320),
    "yolo_3x3_32_32_160x160": (32, 32, 3, 1, 1, 160, 160),
    "yolo_1x1_64_64_160x160": (64, 64, 1, 1, 1, 160, 160),
    "yolo_3x3_s2_64_128_160x160": (64, 128, 3, 2, 1, 160, 160),
    "yolo_3x3_64_64_80x80": (64, 64, 3, 1, 1, 80, 80),
    "yolo_1x1_256_128_80x80": (256, 128, 1, 1, 1, 80, 80),
    "yolo_3x3_s2_128_256_80x80": (128, 256, 3, 2, 1, 80, 80),
    "yolo_3x3_128_128_40x40": (128, 128, 3, 1, 1, 40, 40),
    "yolo_1x1_384_256_40x40": (384, 256, 1, 1, 1, 40, 40),
    "yolo_3x3_256_256_20x20": (256, 256, 3, 1, 1, 20, 20),
    "yolo_1x1_512_512_20x20": (512, 512, 1, 1, 1, 20, 20),
}
COMPUTE_BOUND = {"conv3x3_64_64_120x160", "conv3x3_128_256_s2_30x40", "conv3x3_256_256_20x15"}
FRACTIONS = [0.0, 0.01, 0.05, 0.20, 1.0]
YOLO_CASES = [name for name in CASES if name.startswith("yolo_")]
YOLO_FRACTIONS = [0.10, 0.20, 0.50]


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
        delta_attrs = dict(attrs, dense_fraction=1.0) if case in YOLO_CASES else attrs
        dense = _model([helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)], [_vi("x")], [_vi("y")], inits)
        delta_nodes = lambda with_map: [helper.make_node(
            "DeltaConv", ["x", "w", "b", "" if with_map else "x_ref", "y_prev"] + (["map_in"] if with_map else []),
            ["y", "" if with_map else "x_ref_next", "map"], domain=DOMAIN, name="dc", **delta_attrs)]
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


def output_share(in_mask, k, s):
    """The share of a conv's output (kernel k, stride s, pads k // 2) whose window holds a marked input pixel."""
    p = k // 2
    padded = np.pad(in_mask.astype(bool), p)
    H, W = in_mask.shape
    Ho, Wo = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    out = np.zeros((Ho, Wo), bool)
    for dy in range(k):
        for dx in range(k):
            out |= padded[dy:dy + (Ho - 1) * s + 1:s, dx:dx + (Wo - 1) * s + 1:s]
    return out.mean()


def scene_frames(C, H, W, k, s, out_fraction, rng, count=6):
    """A cycle of frames whose consecutive differences look like a drifted detector layer's: three compact
    regions (people) moving a quarter of their side per frame, and single pixels scattered anywhere (the
    references that drift past tau one pixel at a time, docs/design.md#rule-3), sized so that about `out_fraction`
    of the output is redone. Returns frames, input change maps and the output share actually redone."""
    background = rng.standard_normal((1, C, H, W)).astype(np.float32)
    corners = [(rng.random(), rng.random()) for _ in range(3)]
    seeds = [int(rng.integers(1 << 30)) for _ in range(count)]

    def regions(scale, t):
        mask = np.zeros((H, W), bool)
        side = max(1, int(round(np.sqrt(0.15 * scale * H * W))))  # 3 regions: ~45% of `scale` of the image
        for cy, cx in corners:
            y = int(cy * max(1, H - side))
            x = (int(cx * max(1, W - side)) + t * max(1, side // 4)) % max(1, W - side + 1)
            mask[y:y + side, x:x + side] = True
        scattered = np.random.default_rng(seeds[t]).random((H, W)) < 0.02 * scale
        return mask | scattered

    def diffs(scale):
        ms = [regions(scale, t) for t in range(count)]
        return [ms[t] | ms[t - 1] for t in range(count)]

    lo, hi = 0.0, 4.0
    for _ in range(18):  # bisection on the scale: the output share grows with it
        mid = (lo + hi) / 2
        share = np.mean([output_share(d, k, s) for d in diffs(mid)])
        lo, hi = (mid, hi) if share < out_fraction else (lo, mid)
    masks = [regions(lo, t) for t in range(count)]
    frames = []
    for t, m in enumerate(masks):
        f = background.copy()
        f[0][:, m] = np.random.default_rng(seeds[t] + 1).standard_normal((C, int(m.sum()))).astype(np.float32)
        frames.append(f)
    maps = [d[None, None].astype(np.uint8) for d in diffs(lo)]
    return frames, maps, float(np.mean([output_share(d[0, 0], k, s) for d in maps]))


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
    ap.add_argument("--cases", nargs="+", help="cases by name (default: the original shapes; --yolo: YOLO's)")
    ap.add_argument("--yolo", action="store_true", help="the YOLOv8n/s shapes with scene changes (YOLO_CASES)")
    ap.add_argument("--fractions", type=float, nargs="+",
                    help=f"changed shares (default {FRACTIONS}; YOLO cases: output shares {YOLO_FRACTIONS})")
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
    cases = args.cases or list(YOLO_CASES if args.yolo else [c for c in CASES if c not in YOLO_CASES])
    for case in cases:
        C, M, k, s, g, H, W = CASES[case]
        scene = case in YOLO_CASES
        fractions = args.fractions or (YOLO_FRACTIONS if scene else FRACTIONS)
        dense_model, delta_models = build_models(case, rng)
        for threads in args.threads:
            dense = session(dense_model, threads, False)
            delta = {m: session(b, threads, True) for m, b in delta_models.items()}
            print(f"\n{case}  threads={threads}" + ("  (scene changes; ideal = share redone)" if scene else ""))
            print(f"  {'changed':>8} {'dense ms':>9} {'delta ms':>9} {'ratio':>6} {'+map ms':>8} {'ratio':>6} {'recomputed':>10}"
                  + (f" {'ideal':>6} {'per FLOP':>8} {'+map':>6}" if scene else ""))
            for fraction in fractions:
                if scene:
                    frames, maps, _ = scene_frames(C, H, W, k, s, fraction, rng)
                else:
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
                line = (f"  {fraction:>7.0%} {row['dense_ms']:>9.3f} {row['delta_ms']:>9.3f} {row['ratio']:>6.2f}"
                        f" {row['delta_map_ms']:>8.3f} {row['ratio_map']:>6.2f} {rec:>10.1%}")
                if scene:  # cost per FLOP redone, relative to dense ORT's (1.0: as cheap per FLOP as dense)
                    line += f" {rec:>6.2f} {row['ratio'] / rec:>8.2f} {row['ratio_map'] / rec:>6.2f}"
                print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()

"""Times DeltaConv with layout = "blocked" (docs/ops.md#blocked-layout) against dense ORT's Conv and the NCHW
DeltaConv on YOLOv8n's layer shapes and MobileNetV2's depthwise convs at 224 px, in one process.

    python benchmarks/bench_blocked.py [--rounds 3] [--repeat 20] [--fractions 0.1 0.2 0.5] [--cases ...]
    python benchmarks/bench_blocked.py --cases depthwise      # the depthwise shapes alone
    python benchmarks/bench_blocked.py --cases padded --fractions 0.1 0.2 0.5 1.0   # channel counts padded to b

The padded shapes (PADDED) have channel counts that are no multiple of 16 (MobileNetV2's 24/72/120-channel
blocks, unet_like's 8): the blocked op holds roundup(C, b) channels, pad lanes zero, as dense ORT's NCHWc
transformer pads them. A share of 1.0 is the whole item (every pixel changed: the dense path).

The YOLOv8n shapes are Conv+SiLU; the depthwise ones (group = C = M) Conv+Clip(0, 6), MobileNetV2's Relu6.

Frames are bench_ops.scene_frames (three compact moving regions plus scattered single pixels, sized to a share
of the output redone); both Delta ops take the change map and keep no X_ref (as `convert` builds them at
threshold 0) with dense_fraction 1, so their partial engines run at every share; the blocked op is fed the
same frames blocked by the library's b (deltaonnx._native.channel_block()), which a blocked region's producer
would hand it. One thread, by the calling thread's CPU time. Per round each time is the median of `repeat`
runs; the table prints the median ratio to dense over the rounds and [min-max], and the cost per FLOP
redone (ratio / share; 1.0 = dense ORT's).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_ops  # noqa: E402
from deltaonnx import DOMAIN, _native  # noqa: E402
from deltaonnx.reference import to_blocked  # noqa: E402

SHAPES = ["yolo_3x3_s2_16_32_320x320", "yolo_3x3_32_32_160x160", "yolo_1x1_64_64_160x160",
          "yolo_3x3_s2_64_128_160x160", "yolo_3x3_64_64_80x80", "yolo_3x3_128_128_40x40"]
# MobileNetV2's depthwise convs at 224 px (models/zoo.py mobilenetv2_like: its five), and a 5x5 as MobileNetV3's,
# in bench_ops.CASES's form (C, M, k, stride, group, H, W).
DEPTHWISE = {
    "dw_3x3_16_112x112": (16, 16, 3, 1, 16, 112, 112),
    "dw_3x3_s2_64_112x112": (64, 64, 3, 2, 64, 112, 112),
    "dw_3x3_96_56x56": (96, 96, 3, 1, 96, 56, 56),
    "dw_3x3_s2_96_56x56": (96, 96, 3, 2, 96, 56, 56),
    "dw_3x3_128_28x28": (128, 128, 3, 1, 128, 28, 28),
    "dw_5x5_s2_96_56x56": (96, 96, 5, 2, 96, 56, 56),
}
# Channel counts no multiple of 16 (docs/ops.md#blocked-layout, padded blocks): MobileNetV2's expansion 1x1 24->96
# and projection 96->24 at 56x56, its depthwise 3x3 over 72 and 120 channels (MobileNetV3's), unet_like's 8->8.
PADDED = {
    "pad_1x1_24_96_56x56": (24, 96, 1, 1, 1, 56, 56),
    "pad_1x1_96_24_56x56": (96, 24, 1, 1, 1, 56, 56),
    "pad_dw_3x3_72_56x56": (72, 72, 3, 1, 72, 56, 56),
    "pad_dw_3x3_120_28x28": (120, 120, 3, 1, 120, 28, 28),
    "pad_3x3_8_8_224x224": (8, 8, 3, 1, 1, 224, 224),
}
GROUPS = {"depthwise": DEPTHWISE, "padded": PADDED}
ALL_CASES = {**bench_ops.CASES, **DEPTHWISE, **PADDED}


def models(case, rng, activation="SiLU"):
    C, M, k, s, g, _, _ = ALL_CASES[case]
    w = (rng.standard_normal((M, C // g, k, k)) / np.sqrt(C // g * k * k)).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32) * 0.1
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4, group=g)
    vi = bench_ops._vi
    relu6 = g > 1  # a depthwise conv: MobileNetV2's Relu6, which ORT fuses into its Conv as the op does
    if relu6:
        inits += [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")]
        post = [helper.make_node("Clip", ["c", "lo", "hi"], ["y"])]
    elif activation == "Relu":  # unet_like's, which ORT fuses into its Conv as the op does
        post = [helper.make_node("Relu", ["c"], ["y"])]
    else:
        post = [helper.make_node("Sigmoid", ["c"], ["g"]), helper.make_node("Mul", ["c", "g"], ["y"])]
    dense = bench_ops._model([helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs)] + post, [vi("x")], [vi("y")],
                             inits)
    activation = dict(activation="Clip", activation_params=[0.0, 6.0]) if relu6 else dict(activation=activation)
    inits = inits[:2]

    def delta(layout):
        node = helper.make_node("DeltaConv", ["x", "w", "b", "", "y_prev", "map_in"], ["y", "", "map"], domain=DOMAIN,
                                name="dc", dense_fraction=1.0, layout=layout, **activation, **attrs)
        ins = [vi("x"), vi("y_prev"), vi("map_in", TensorProto.UINT8)]
        return bench_ops._model([node], ins, [vi("y"), vi("map", TensorProto.UINT8)], inits)

    return dense, delta("nchw"), delta("blocked")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.10, 0.20, 0.50])
    ap.add_argument("--activation", choices=["SiLU", "Relu"], default="SiLU",
                    help="the group-1 convs' activation (depthwise ones: Clip(0, 6))")
    ap.add_argument("--cases", nargs="+", default=SHAPES + list(DEPTHWISE),
                    help="shape names (bench_ops.CASES, DEPTHWISE, PADDED), or 'depthwise' / 'padded' for a group")
    args = ap.parse_args(argv)
    args.cases = [name for case in args.cases for name in GROUPS.get(case, [case])]
    bench_ops.CLOCK = time.thread_time  # one thread: ORT runs the kernels in the calling thread
    b = int(_native.channel_block())
    rng = np.random.default_rng(0)
    print(f"channel block b = {b}, kernels {_native.simd_level()}; ratio to dense ORT (Conv+{args.activation}, depthwise "
          "Conv+Clip), median [min-max]")
    print("| shape | share | nchw / dense | per FLOP | blocked / dense | per FLOP |")
    print("| --- | --- | --- | --- | --- | --- |")
    for case in args.cases:
        C, M, k, s, _, H, W = ALL_CASES[case]
        dense_m, nchw_m, blocked_m = models(case, rng, args.activation)
        dense = bench_ops.session(dense_m, 1, custom=False)
        nchw = bench_ops.session(nchw_m, 1, custom=True)
        blocked = bench_ops.session(blocked_m, 1, custom=True)
        for fraction in args.fractions:
            if fraction >= 1.0:  # every pixel changes every frame: the whole item, the dense path
                frames = [rng.standard_normal((1, C, H, W)).astype(np.float32) for _ in range(6)]
                maps, share = [np.ones((1, 1, H, W), np.uint8) for _ in frames], 1.0
            else:
                frames, maps, share = bench_ops.scene_frames(C, H, W, k, s, fraction, rng)
            blocked_frames = [to_blocked(f, b) for f in frames]
            ratios = {"nchw": [], "blocked": []}
            for _ in range(args.rounds):
                t_dense = bench_ops.time_dense(dense, frames, args.repeat)
                ratios["nchw"].append(bench_ops.time_delta(nchw, frames, maps, True, args.repeat)[0] / t_dense)
                ratios["blocked"].append(
                    bench_ops.time_delta(blocked, blocked_frames, maps, True, args.repeat)[0] / t_dense)
            cells = []
            for name in ("nchw", "blocked"):
                r = ratios[name]
                med = statistics.median(r)
                cells += [f"{med:.3f} [{min(r):.3f}-{max(r):.3f}]", f"{med / share:.2f}"]
            print(f"| {case.removeprefix('yolo_')} | {share:.1%} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()

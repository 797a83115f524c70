"""DeltaConv's sum input against the Add it replaces (docs/ops.md#the-sum-input), on one residual conv.

Three single-layer models over the same frames, timed interleaved in one process, one thread:
  dense    ORT's Conv -> Add(z) -> Relu (ORT fuses the Add and the Relu into its NCHWc Conv: the Sum input)
  fused    DeltaConv with Z, map_z and Relu, as convert writes it
  unfused  DeltaConv -> Add(z) -> Relu with DeltaMapUnion(map_out, map_z), as convert --no-fuse-sum writes it
Each Delta model as convert leaves it: layout "blocked" (tensors fed blocked by the library's b), no X_ref
(threshold 0 behind a map). Frames change a band of rows of X and Z covering `--fractions` of the image (1.0: the
whole frame, the dense path); the table gives ms per frame and each model's time over dense ORT's, per round.

    python benchmarks/bench_conv_sum.py --rounds 5 --frames 60
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "helpers"))

from builders import EMPTY, op_model, op_session, value_info  # noqa: E402
from deltaonnx import _native  # noqa: E402
from deltaonnx.graph_passes.protocol import DOMAIN  # noqa: E402
from deltaonnx.reference import to_blocked  # noqa: E402

ATTRS = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])


def models(channels: int, rng):
    w = (rng.standard_normal((channels, channels, 3, 3)) / np.sqrt(9 * channels)).astype(np.float32)
    b = rng.standard_normal(channels).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    dense = op_model([helper.make_node("Conv", ["x", "w", "b"], ["c"], **ATTRS), helper.make_node("Add", ["c", "z"], ["s"]),
                      helper.make_node("Relu", ["s"], ["y"])], [value_info("x"), value_info("z")], [value_info("y")], inits)
    ins = [value_info("x"), value_info("y_prev"), value_info("map_in", TensorProto.UINT8), value_info("z"),
           value_info("map_z", TensorProto.UINT8)]
    fused = op_model([helper.make_node("DeltaConv", ["x", "w", "b", "", "y_prev", "map_in", "z", "map_z"], ["y", "", "map"],
                                       domain=DOMAIN, activation="Relu", layout="blocked", **ATTRS)],
                     ins, [value_info("y"), value_info("map", TensorProto.UINT8)], inits)
    unfused = op_model([helper.make_node("DeltaConv", ["x", "w", "b", "", "y_prev", "map_in"], ["c", "", "map_c"],
                                         domain=DOMAIN, layout="blocked", **ATTRS),
                        helper.make_node("Add", ["c", "z"], ["s"]), helper.make_node("Relu", ["s"], ["y"]),
                        helper.make_node("DeltaMapUnion", ["map_c", "map_z"], ["map"], domain=DOMAIN)],
                       ins, [value_info("y"), value_info("map", TensorProto.UINT8), value_info("c")], inits)
    return dense, fused, unfused


def frames(rng, channels, size, count, fraction):
    """(x, z, map) per frame: a band of rows of both changes (the whole frame at fraction 1)."""
    x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
    z = rng.standard_normal((1, channels, size, size)).astype(np.float32)
    out = []
    rows = max(1, int(round(fraction * size)))
    for i in range(count):
        x, z = x.copy(), z.copy()
        top = (i * 7) % (size - rows + 1)
        x[:, :, top:top + rows] += 0.5
        z[:, :, top:top + rows] -= 0.5
        changed = np.zeros((1, 1, size, size), np.uint8)
        changed[:, :, top:top + rows] = 1
        out.append((x, z, changed))
    return out


def run_delta(session, seq, unfused):
    """ms per frame over seq (blocked x, z and the map), the state fed from run to run: Y, or the conv's own
    output before the Add when unfused."""
    y_prev, c_prev = EMPTY, EMPTY
    start = time.perf_counter()
    for x, z, changed in seq:
        feeds = {"x": x, "y_prev": c_prev if unfused else y_prev, "map_in": changed, "z": z, "map_z": changed}
        outs = session.run(None, feeds)
        y_prev = outs[0]
        if unfused:
            c_prev = outs[2]
    return (time.perf_counter() - start) / len(seq) * 1e3


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--size", type=int, default=56)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.3, 0.1])
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    b = int(_native.channel_block())
    dense_model, fused_model, unfused_model = models(args.channels, rng)
    dense = op_session(dense_model, custom=False)
    fused, unfused = op_session(fused_model), op_session(unfused_model)
    print(f"{args.channels}->{args.channels} 3x3 at {args.size}x{args.size}, b = {b}, one thread, "
          f"{args.frames} frames x {args.rounds} rounds (ratios: time over dense ORT's in the same round)")
    print(f"{'changed':>8}  {'dense ms':>8}  {'fused/dense':>24}  {'unfused/dense':>24}  {'fused/unfused':>14}")
    for fraction in args.fractions:
        seq = frames(rng, args.channels, args.size, args.frames, fraction)
        blocked = [(to_blocked(x, b), to_blocked(z, b), m) for x, z, m in seq]
        ratios_f, ratios_u, dense_ms, ab = [], [], [], []
        for _ in range(args.rounds):
            start = time.perf_counter()
            for x, z, _m in seq:
                dense.run(None, {"x": x, "z": z})
            d = (time.perf_counter() - start) / len(seq) * 1e3
            f = run_delta(fused, blocked, False)
            u = run_delta(unfused, blocked, True)
            dense_ms.append(d)
            ratios_f.append(f / d)
            ratios_u.append(u / d)
            ab.append(f / u)
        span = lambda r: f"{statistics.median(r):.2f} ({min(r):.2f}-{max(r):.2f})"  # noqa: E731
        print(f"{fraction:>8.0%}  {statistics.median(dense_ms):>8.3f}  {span(ratios_f):>24}  {span(ratios_u):>24}  "
              f"{statistics.median(ab):>14.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

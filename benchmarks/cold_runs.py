"""Dense ORT against DeltaSession when every run finds the caches cold, as on a server that runs many models or streams
between two frames of one: each run follows a pass over a buffer larger than the last-level cache.

    python benchmarks/cold_runs.py model.onnx [--video clip.mp4] [--frames 50] [--rounds 3] [--evict-mb 64]

The model is converted exact (threshold 0); every frame changes (a moving-camera clip, bikes by default), the dense
fallback is off, one ORT thread, after --warmup frames of running. Per round, on every frame: evict, run dense ORT,
evict, run DeltaSession (the order alternating frame by frame); times are wall clock around each run (the eviction is
outside them), medians per round. Warm runs (bench's interleave) hide what a run costs from cold caches: the
twenty-first session measured mobilenetv3_like at or ahead of dense ORT warm and 0.94x cold, with fewer instructions
than dense ORT and as many reads from memory (docs/results.md#twenty-first-session).
"""
from __future__ import annotations

import statistics
import sys
import time

import numpy as np

import deltaonnx
from deltaonnx import DeltaSession

from session_overhead import one_thread_setup


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    evict_mb = 64
    if "--evict-mb" in argv:
        at = argv.index("--evict-mb")
        evict_mb = int(argv[at + 1])
        del argv[at:at + 2]
    args, model, name, frames, options, dense = one_thread_setup(argv, __doc__.split("\n\n")[0])
    session = DeltaSession(deltaonnx.convert(model, threshold=0), options, dense_fallback=False)
    for frame in frames[: args.warmup]:
        dense.run(None, {name: frame})
        session.run(None, {name: frame})
    junk = np.ones(evict_mb << 18, np.float32)  # evict_mb MB
    timed = frames[args.warmup:]
    print(f"{args.model}: {len(timed)} frames a round, caches evicted ({evict_mb} MB) before every run; ms per run")
    print("round  dense ORT  DeltaSession  speedup")
    for r in range(args.rounds):
        times: tuple[list, list] = ([], [])
        for j, frame in enumerate(timed):
            order = [(0, dense), (1, session)]
            for slot, runner in (order if j % 2 else order[::-1]):
                junk += 1.0
                start = time.perf_counter()
                runner.run(None, {name: frame})
                times[slot].append(time.perf_counter() - start)
        d, x = (1000 * statistics.median(t) for t in times)
        print(f"{r:5d}  {d:9.3f}  {x:12.3f}  {d / x:6.3f}x", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

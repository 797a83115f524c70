"""DeltaSession's state in one huge-page block (session/state_arena.py) against the same state in separate buffers
(one allocation each, 4 KB pages, as ORT allocates them on the first run), per frame, with dense ORT in the same rounds.

    python benchmarks/state_arena.py model.onnx [--video clip.mp4] [--frames 50] [--rounds 3]

Converted exact (threshold 0), every frame changing (bikes by default), dense fallback off, one thread, frames after
150 of running. The three runners take turns on every frame, the two DeltaSessions in alternating order. Times are
the calling thread's CPU time, medians per round; the ratios are dense ORT's time over each DeltaSession's.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

import deltaonnx
from deltaonnx import DeltaSession

sys.path.insert(0, str(Path(__file__).resolve().parent))
from session_overhead import median_ms_dense_then_pair, one_thread_setup  # noqa: E402


def scatter_state(session: DeltaSession, stream="default") -> None:
    """Moves a stream's state out of its arena into one numpy allocation per buffer (the layout before the arena)."""
    state = session._streams[stream]  # noqa: SLF001 - the benchmark swaps where the state lives
    public = state.binding.public
    for entry in session._state_entries:  # noqa: SLF001
        value = ort.OrtValue.ortvalue_from_numpy(np.array(state.values[entry.present].numpy(), copy=True))
        public.bind_ortvalue_input(entry.past, value)
        public.bind_ortvalue_output(entry.present, value)
        state.values[entry.present] = value
    state.arena = None


def main(argv=None) -> int:
    args, model, name, frames, options, dense = one_thread_setup(argv, __doc__.split("\n\n")[0])
    converted = deltaonnx.convert(model, threshold=0)
    arena = DeltaSession(converted, options, dense_fallback=False)
    scattered = DeltaSession(converted, options, dense_fallback=False)
    for i, frame in enumerate(frames[: args.warmup]):
        dense.run(None, {name: frame})
        arena.run(None, {name: frame})
        scattered.run(None, {name: frame})
        if i == 0:
            scatter_state(scattered)
    stream = arena._streams["default"]  # noqa: SLF001
    print(f"{Path(args.model).name}: state {stream.arena.nbytes / 2**20:.1f} MB in {len(stream.values)} buffers, "
          f"huge pages {'asked for' if stream.arena.huge_pages else 'not asked for (under 2 MB, or none here)'}; "
          f"ms per frame (thread CPU time)")
    print(f"{'round':>5} {'dense ORT':>10} {'scattered':>10} {'arena':>10}  speedup scattered -> arena")
    for round_index in range(args.rounds):
        d, s, a = median_ms_dense_then_pair(frames[args.warmup:], name, dense, scattered, arena)
        print(f"{round_index:5d} {d:10.3f} {s:10.3f} {a:10.3f}  {d / s:.2f}x -> {d / a:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What keeping every layer's output costs by itself, measured with dense ORT's own kernels: the ceiling, when
everything changes, of any design in which each Delta op keeps its Y as state (docs/results.md#persistence-floor).

    python benchmarks/state_persistence_floor.py model.onnx [--video clip.mp4] [--frames 50] [--rounds 3]

A Delta op's Y is its state: written every run into memory of its own that the next frame reads, where dense ORT
writes each layer into a few buffers its planner reuses while they are still in the caches. To price that alone,
the converted model's dense twin (graph_passes/dense_twin.py: the same convolutions and fusions as dense ORT, NCHW)
runs twice on ORT's NCHW kernels (ORT_ENABLE_EXTENDED: the NCHWc transformer would add a reorder before every graph
output): as it is, and with the Y of every Delta op also a graph output, bound once to a buffer of its own (as
DeltaSession binds the state), so ORT writes those tensors there on every run. The difference is the cost of the
writes into persistent memory with the kernels unchanged; added to dense ORT's time (all optimisations, NCHWc) it
gives the ceiling `dense / (dense + persistence)`, printed beside DeltaSession's own ratio (exact, `--no-fallback`).
Every frame changes (bikes by default), one thread, frames after 150 of running, dense ORT in the same rounds; the
four runners take turns on every frame in rotating order, thread CPU time, medians per round.
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import deltaonnx
from deltaonnx import DeltaSession
from deltaonnx.graph_passes.dense_twin import dense_twin
from deltaonnx.graph_passes.metadata import ConversionMetadata

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from session_overhead import one_thread_setup  # noqa: E402


class KeptOutputs:
    """The twin with every Delta op's Y a graph output written into a buffer of its own (bound once)."""

    def __init__(self, twin_bytes: bytes, options: ort.SessionOptions, input_name: str, first_frame: np.ndarray):
        self.session = ort.InferenceSession(twin_bytes, options, providers=["CPUExecutionProvider"])
        self.input_name = input_name
        names = [o.name for o in self.session.get_outputs()]
        first = self.session.run(None, {input_name: first_frame})
        self.buffers = [np.empty_like(a) for a in first]
        self.binding = self.session.io_binding()
        for name, buffer in zip(names, self.buffers):
            self.binding.bind_output(name, "cpu", 0, buffer.dtype, list(buffer.shape), buffer.ctypes.data)

    def run(self, _names, feed):
        self.binding.bind_cpu_input(self.input_name, feed[self.input_name])
        self.session.run_with_iobinding(self.binding)


def main(argv=None) -> int:
    args, model, name, frames, options, dense = one_thread_setup(argv, __doc__.split("\n\n")[0])
    converted = deltaonnx.convert(model, threshold=0)
    meta = ConversionMetadata.of(converted)
    outputs = [o.name for o in model.graph.output]
    delta_outputs = {n.output[0] for n in converted.graph.node if n.op_type in ("DeltaConv", "DeltaPool")}
    kept = [s.present for s in meta.state if s.present in delta_outputs]
    nchw = ort.SessionOptions()
    nchw.intra_op_num_threads = nchw.inter_op_num_threads = 1
    nchw.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    twin = ort.InferenceSession(dense_twin(converted, outputs).SerializeToString(), nchw,
                                providers=["CPUExecutionProvider"])
    keeping = KeptOutputs(dense_twin(converted, outputs + kept).SerializeToString(), nchw, name, frames[0])
    session = DeltaSession(converted, options, dense_fallback=False)
    runners = [("dense ORT", dense), ("twin NCHW", twin), ("twin NCHW, Y kept", keeping), ("DeltaSession", session)]
    for frame in frames[: args.warmup]:
        for _, runner in runners:
            runner.run(None, {name: frame})
    kept_mb = sum(b.nbytes for b in keeping.buffers) / 1e6 - sum(
        np.asarray(a).nbytes for a in dense.run(None, {name: frames[0]})) / 1e6
    print(f"{Path(args.model).name}: {len(kept)} Delta outputs kept, {kept_mb:.1f} MB; ms per frame "
          "(thread CPU time, median per round)")
    print(f"{'round':>5} {'dense ORT':>10} {'twin NCHW':>10} {'Y kept':>8} {'persistence':>12} "
          f"{'ceiling':>8} {'DeltaSession':>13} {'its ratio':>10}")
    for round_number in range(args.rounds):
        times: list[list[float]] = [[] for _ in runners]
        for j, frame in enumerate(frames[args.warmup:]):
            order = list(range(len(runners)))
            shift = j % len(order)
            for k in order[shift:] + order[:shift]:
                start = time.thread_time()
                runners[k][1].run(None, {name: frame})
                times[k].append(time.thread_time() - start)
        d, t, k, s = (1000 * statistics.median(x) for x in times)
        persistence = k - t
        print(f"{round_number:>5} {d:>10.3f} {t:>10.3f} {k:>8.3f} {persistence:>12.3f} "
              f"{d / (d + max(persistence, 0.0)):>7.2f}x {s:>13.3f} {d / s:>9.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Prototype, not product: what keeping no Y state in some Delta ops ("transient" ops, state only at the boundaries
a consumer needs) would gain when everything changes, and what it would cost in work when little changes.

    python benchmarks/state_boundary_prototype.py speed model.onnx [--zero-halo] [--rounds 3]
    python benchmarks/state_boundary_prototype.py work model.onnx [--threshold 0.05]

A DeltaConv qualifies when every consumer of its Y is a DeltaConv reading it as X with its change map and no X_ref
(exact, behind a map); `--zero-halo` keeps only those whose consumers are all 1x1 stride-1 convs, which read exactly
the pixels the producer recomputes. `speed` emulates such ops on the converted model when every frame changes: each
gets an empty Y_prev constant, so it recomputes its whole item (what a transient op does then) into a tensor ORT
plans and reuses like dense ORT's, and its state input/output go; dense ORT, the stateful model and the emulation
take turns on every frame (bikes, one thread, after 150 frames; the two delta models in alternating order).
`work` replays a static camera (vtest) through the stateful model and counts, for the qualifying ops, the
FLOPs they recompute now against what a transient op would: its map plus the pixels its consumers' windows read
(composed through transient consumers down to the stateful ones). docs/results.md#state-boundaries.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

import deltaonnx
from deltaonnx import DeltaSession
from deltaonnx.video import Preprocess, read_frames

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models"))
from session_overhead import median_ms_dense_then_pair, one_thread_setup  # noqa: E402


def _attributes(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _window(node, initializers) -> tuple[int, int, int]:
    """(kernel, stride, pad) of a square DeltaConv."""
    attributes = _attributes(node)
    return (initializers[node.input[1]].dims[2], attributes.get("strides", [1, 1])[0],
            attributes.get("pads", [0, 0, 0, 0])[0])


def transient_candidates(graph: onnx.GraphProto, zero_halo: bool) -> list:
    initializers = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, index))
    chosen = []
    for node in graph.node:
        if node.op_type != "DeltaConv" or (len(node.input) > 3 and node.input[3]):  # keeps an X_ref
            continue
        readers = consumers.get(node.output[0], [])
        if not readers or not all(c.op_type == "DeltaConv" and i == 0 and len(c.input) > 5 and c.input[5]
                                  and not c.input[3] for c, i in readers):
            continue
        if zero_halo and any(_window(c, initializers) != (1, 1, 0) for c, _ in readers):
            continue
        chosen.append(node)
    return chosen


def transient_variant(converted: onnx.ModelProto, zero_halo: bool) -> tuple[onnx.ModelProto, list[str]]:
    model = onnx.ModelProto()
    model.CopyFrom(converted)
    graph = model.graph
    chosen = transient_candidates(graph, zero_halo)
    names = {n.name for n in chosen}
    renamed = {n.output[0]: n.output[0].replace("present", "inner") for n in chosen}
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name in renamed:
                node.input[index] = renamed[name]
    for node in chosen:
        node.output[0] = renamed[node.output[0]]
        empty = numpy_helper.from_array(np.zeros((0, 0, 0, 0), np.float32), name=node.input[4] + ".empty")
        graph.initializer.append(empty)
        node.input[4] = empty.name
    dropped_out = {f"deltaonnx.present.{n}.y" for n in names}
    dropped_in = {f"deltaonnx.past.{n}.y" for n in names}
    outputs = [o for o in graph.output if o.name not in dropped_out]
    inputs = [i for i in graph.input if i.name not in dropped_in]
    del graph.output[:], graph.input[:]
    graph.output.extend(outputs)
    graph.input.extend(inputs)
    prop = next(p for p in model.metadata_props if p.key == "deltaonnx")
    metadata = json.loads(prop.value)
    metadata["state"] = [s for s in metadata["state"] if not (s["node"] in names and s["kind"] == "y")]
    metadata.pop("frame_skip", None)
    prop.value = json.dumps(metadata)
    return model, sorted(names)


def speed(argv) -> int:
    zero_halo = "--zero-halo" in argv
    args, model, name, frames, options, dense = one_thread_setup([a for a in argv if a != "--zero-halo"],
                                                                 "speed: " + __doc__.split("\n\n")[0])
    converted = deltaonnx.convert(model, threshold=0)
    emulated, names = transient_variant(converted, zero_halo)
    stateful = DeltaSession(converted, options, dense_fallback=False)
    transient = DeltaSession(emulated, options, dense_fallback=False)
    for frame in frames[: args.warmup]:
        expected = dense.run(None, {name: frame})
        for session in (stateful, transient):
            got = session.run(None, {name: frame})
            assert all(np.allclose(e, g, rtol=1e-4, atol=1e-5) for e, g in zip(expected, got)), "not exact"
    convs = sum(n.op_type == "DeltaConv" for n in converted.graph.node)
    print(f"{Path(args.model).name}: {len(names)} of {convs} DeltaConvs without Y state"
          f"{' (zero halo)' if zero_halo else ''}; ms per frame (thread CPU time)")
    for round_index in range(args.rounds):
        d, s, t = median_ms_dense_then_pair(frames[args.warmup:], name, dense, stateful, transient)
        print(f"round {round_index}: dense {d:.3f}  stateful {s:.3f} ({d / s:.2f}x)  transient {t:.3f} ({d / t:.2f}x)")
    return 0


def _taps(region: np.ndarray, kernel: int, stride: int, pad: int, shape: tuple[int, int]) -> np.ndarray:
    """The input pixels (of an input of `shape`) read by the windows of the output pixels in `region`."""
    height, width = shape
    padded = np.zeros((height + 2 * pad + stride, width + 2 * pad + stride), bool)
    rows, cols = region.shape
    for dy in range(kernel):
        for dx in range(kernel):
            padded[dy:dy + stride * rows:stride, dx:dx + stride * cols:stride] |= region
    return padded[pad:pad + height, pad:pad + width]


def work(argv) -> int:
    parser = argparse.ArgumentParser(description="work: " + __doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--frames", type=int, default=30, help="frames counted, after 200 of running")
    args = parser.parse_args(argv)
    import real_material

    model = onnx.load(args.model)
    name = model.graph.input[0].name
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    frames = [Preprocess.for_model_input(shape, resize="resize")(f)
              for f in read_frames(str(real_material.vtest_avi()), 200 + args.frames)]
    converted = deltaonnx.convert(model, threshold=args.threshold)
    graph = converted.graph
    initializers = {i.name: i for i in graph.initializer}
    chosen = transient_candidates(graph, zero_halo=False)
    names = {n.name for n in chosen}
    readers = {n.output[0]: [c for c in graph.node if n.output[0] in c.input] for n in graph.node}
    session = DeltaSession(converted, dense_fallback=False)
    now = transient = dense = 0.0
    for index, frame in enumerate(frames):
        session.run(None, {name: frame})
        if index < 200:
            continue
        maps = {k: v[0, 0].astype(bool) for k, v in session.change_maps().items()}
        needs: dict[str, np.ndarray] = {}

        def need(node) -> np.ndarray:
            """What a transient `node` computes: its map, plus what each consumer's windows read over the region
            that consumer computes (its own need when it is transient too, else its map)."""
            if node.name not in needs:
                region = maps[node.name].copy()
                for consumer in readers[node.output[0]]:
                    kernel, stride, pad = _window(consumer, initializers)
                    computed = need(consumer) if consumer.name in names else maps[consumer.name]
                    region |= _taps(computed, kernel, stride, pad, region.shape)
                needs[node.name] = region
            return needs[node.name]

        for node in chosen:
            w = initializers[node.input[1]].dims
            per_pixel = float(np.prod(w))
            now += per_pixel * maps[node.name].sum()
            transient += per_pixel * need(node).sum()
            dense += per_pixel * maps[node.name].size
    print(f"{Path(args.model).name}, vtest, threshold {args.threshold}: {len(chosen)} qualifying DeltaConvs redo "
          f"{now / dense:.3f} of their dense work now, {transient / dense:.3f} as transient ops")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("speed", "work"):
        print(__doc__)
        return 2
    return speed(argv[1:]) if argv[0] == "speed" else work(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

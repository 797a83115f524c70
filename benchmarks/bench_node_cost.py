"""The fixed cost of a Delta op call: chains of tiny nodes (1x16x8x8 by default) of each Delta op against the same
chain of ORT's own nodes, in one process, one thread, microseconds per node and the ratio.

    python benchmarks/bench_node_cost.py [--rounds 5] [--batches 15] [--runs 20] [--cases conv3x3_nchw_map ...]

Cases: DeltaConv 1x1 and 3x3 (Relu fused), layout nchw and blocked, with a change map (dropped reference, as
`convert` writes exact models) and without one (X_ref compared); DeltaMapUnion (against ONNX Max on uint8);
DeltaReorder to blocked and back (against ORT's ReorderInput / ReorderOutput); DeltaPool 3x3/s1 (against
MaxPool). Each runs "changing" (every frame differs: a new X, a map of ones) and "still" (X as last frame, a map
of zeros), its state bound in place (docs/state_protocol.md) so a run is ORT's run_with_iobinding alone.

Per node = (time of a chain of `long` nodes - time of `short` nodes) / (long - short): the session's own per-run
cost cancels. Times are the calling thread's CPU time (a one-thread session runs its kernels there), over batches
of `runs` runs after 150 runs of warm-up; per round the median batch; the table prints the median over rounds and
[min-max] of the ratio. DELTAONNX_LIBRARY_DIR picks the library (the unstripped build for perf).
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import deltaonnx
from deltaonnx import DOMAIN, _native

NCHWC = "com.microsoft.nchwc"
EMPTY = np.zeros((0, 0, 0, 0), np.float32)


def _vi(name, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, None)


def _model(nodes, inputs, outputs, inits):
    graph = helper.make_graph(nodes, "chain", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1),
                                                    helper.make_opsetid(NCHWC, 1)])
    model.ir_version = 10
    return model


class Chain:
    """A model of n nodes and what a run binds besides its inputs: `state` [(past input, present output, shape)]
    bound to one buffer each, `outputs` allocated by ORT."""

    def __init__(self, model, state=(), outputs=("y",)):
        self.model, self.state, self.outputs = model, list(state), list(outputs)


def windowed_chain(n, op, weights, with_map, shape, inits, **attrs):
    """n Delta nodes `op` (DeltaConv when weights, else DeltaPool) over tensors of `shape`, each Y bound in place as
    its state and read by the next node, as convert wires them. with_map: node 0 reads the map input, node i+1
    node i's map_out, no X_ref (dropped at tau 0); else each compares against its own X_ref."""
    nodes, state, inputs, outputs = [], [], [_vi("x")], []
    if with_map:
        inputs.append(_vi("map0", TensorProto.UINT8))
    for i in range(n):
        params = [f"w{i}", f"b{i}"] if weights else []
        ins = ["x" if i == 0 else f"yn{i - 1}", *params, "" if with_map else f"xr{i}", f"yp{i}"]
        ins += [f"map{i}"] if with_map else []
        outs = [f"yn{i}", "" if with_map else f"xrn{i}", f"map{i + 1}"]
        nodes.append(helper.make_node(op, ins, outs, domain=DOMAIN, **attrs))
        pairs = [(f"yp{i}", f"yn{i}")] + ([] if with_map else [(f"xr{i}", f"xrn{i}")])
        for past, present in pairs:
            state.append((past, present, shape))
            inputs.append(_vi(past))
            outputs.append(_vi(present))
    outputs.append(_vi(f"map{n}", TensorProto.UINT8))
    return Chain(_model(nodes, inputs, outputs, inits), state, [f"map{n}"])


def dense_chain(n, make_nodes, inits):
    """ORT's twin: make_nodes(i, x, y) gives node i's nodes from tensor x to tensor y."""
    nodes = []
    for i in range(n):
        nodes += make_nodes(i, "x" if i == 0 else f"t{i}", "y" if i == n - 1 else f"t{i + 1}")
    return Chain(_model(nodes, [_vi("x")], [_vi("y")], inits))


def conv_chain(n, kernel, layout, with_map, channels, size, seed=0):
    """n DeltaConvs k x k (same padding, Relu) in `layout`, and the Conv+Relu twin."""
    rng = np.random.default_rng(seed)
    weights = [(rng.standard_normal((channels, channels, kernel, kernel)) * (0.8 / np.sqrt(channels * kernel ** 2)))
               .astype(np.float32) for _ in range(n)]
    biases = [(rng.standard_normal(channels) * 0.1).astype(np.float32) for _ in range(n)]
    attrs = dict(kernel_shape=[kernel, kernel], pads=[kernel // 2] * 4)
    inits = [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)] + \
            [numpy_helper.from_array(b, f"b{i}") for i, b in enumerate(biases)]
    delta = windowed_chain(n, "DeltaConv", True, with_map, (1, channels, size, size), inits, activation="Relu",
                           layout=layout, **attrs)
    dense = dense_chain(n, lambda i, x, y: [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], **attrs),
                                            helper.make_node("Relu", [f"c{i}"], [y])], inits)
    return delta, dense


def pool_chain(n, layout, with_map, channels, size):
    """n DeltaPools 3x3/s1 (same padding) in `layout`, and the MaxPool twin."""
    attrs = dict(kernel_shape=[3, 3], pads=[1] * 4)
    delta = windowed_chain(n, "DeltaPool", False, with_map, (1, channels, size, size), [], layout=layout, **attrs)
    return delta, dense_chain(n, lambda i, x, y: [helper.make_node("MaxPool", [x], [y], **attrs)], [])


def union_chain(n, size):
    """m_{i+1} = DeltaMapUnion(m_i, side_i): a residual network's map joins, against Max on uint8."""
    def build(op, domain):
        nodes = [helper.make_node(op, [f"m{i}", f"side{i % 2}"], ["y" if i == n - 1 else f"m{i + 1}"],
                                  **({"domain": domain} if domain else {})) for i in range(n)]
        ins = [_vi(name, TensorProto.UINT8) for name in ("m0", "side0", "side1")]
        return Chain(_model(nodes, ins, [_vi("y", TensorProto.UINT8)], []))
    return build("DeltaMapUnion", DOMAIN), build("Max", None)


def reorder_chain(n, with_map, channels, size):
    """n DeltaReorders alternating to blocked and to nchw (the maps pass through), against ReorderInput/Output."""
    b = int(_native.channel_block())
    nodes, state, inputs, outputs = [], [], [_vi("x")], []
    if with_map:
        inputs.append(_vi("map0", TensorProto.UINT8))
    shape = (1, channels, size, size)
    for i in range(n):
        x = "x" if i == 0 else f"yn{i - 1}"
        ins = [x] + ([f"yp{i}", "map0"] if with_map else [])
        nodes.append(helper.make_node("DeltaReorder", ins, [f"yn{i}"], domain=DOMAIN,
                                      to="blocked" if i % 2 == 0 else "nchw"))
        if with_map:
            state.append((f"yp{i}", f"yn{i}", shape))
            inputs.append(_vi(f"yp{i}"))
            outputs.append(_vi(f"yn{i}"))
    if not with_map:
        outputs.append(_vi(f"yn{n - 1}"))
    delta = Chain(_model(nodes, inputs, outputs, []), state, [] if with_map else [f"yn{n - 1}"])
    assert channels % b == 0, "the reorder chain keeps whole blocks"
    return delta, dense_chain(n, lambda i, x, y: [helper.make_node(
        "ReorderInput" if i % 2 == 0 else "ReorderOutput", [x], [y], domain=NCHWC,
        **({} if i % 2 == 0 else {"channels": channels}))], [])


def cases(channels, size):
    """name -> (builder(n) of (delta chain, dense chain), the kind of inputs it reads: "x" or "maps")."""
    out = {}
    for k in (1, 3):
        for layout in ("nchw", "blocked"):
            for with_map in (True, False):
                out[f"conv{k}x{k}_{layout}{'_map' if with_map else ''}"] = (
                    lambda n, k=k, layout=layout, m=with_map: conv_chain(n, k, layout, m, channels, size), "x")
    for layout in ("nchw", "blocked"):
        out[f"pool_{layout}_map"] = (lambda n, layout=layout: pool_chain(n, layout, True, channels, size), "x")
    out["pool_nchw"] = (lambda n: pool_chain(n, "nchw", False, channels, size), "x")
    out["map_union"] = (lambda n: union_chain(n, size), "maps")
    out["reorder_map"] = (lambda n: reorder_chain(n, True, channels, size), "x")
    out["reorder"] = (lambda n: reorder_chain(n, False, channels, size), "x")
    return out


class Runner:
    """A chain's session with everything bound once: run() is ORT's run_with_iobinding alone."""

    def __init__(self, chain, custom, feeds):
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3
        if custom:
            options.register_custom_ops_library(deltaonnx.library_path())
        self.session = ort.InferenceSession(chain.model.SerializeToString(), options,
                                            providers=["CPUExecutionProvider"])
        names = {i.name for i in self.session.get_inputs()}
        self.binding = self.session.io_binding()
        self.feeds = {k: v for k, v in feeds.items() if k in names}  # arrays written in place between runs
        for name, array in self.feeds.items():
            self.binding.bind_cpu_input(name, array)
        self.state = []
        for past, present, shape in chain.state:  # the first run finds empty state, the next ones the buffer
            value = ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.float32))
            self.binding.bind_cpu_input(past, EMPTY)
            self.binding.bind_ortvalue_output(present, value)
            self.state.append((past, value))
        for name in chain.outputs:
            self.binding.bind_output(name)
        self.session.run_with_iobinding(self.binding)
        for past, value in self.state:
            self.binding.bind_ortvalue_input(past, value)

    def run(self):
        self.session.run_with_iobinding(self.binding)


def frames_for(kind, shape, size, changing):
    """Two feeds to alternate (changing) or one to repeat (still), as {name: array}."""
    rng = np.random.default_rng(1)
    if kind == "maps":
        m = (rng.random((1, 1, size, size)) < 0.1).astype(np.uint8)
        return [{"m0": m, "side0": m[:, :, ::-1].copy(), "side1": m[:, :, :, ::-1].copy()}] * 2
    xs = [rng.standard_normal(shape).astype(np.float32) for _ in range(2)]
    mark = np.ones if changing else np.zeros
    feeds = [{"x": xs[i if changing else 0], "map0": mark((1, 1, size, size), np.uint8)} for i in range(2)]
    return feeds


def time_pair(build, kind, changing, args):
    """Per-node times (delta, dense) of one round and the ratio."""
    shape = (1, args.channels, args.size, args.size)
    frames = frames_for(kind, shape, args.size, changing)
    per_node = {}
    for custom in (True, False):
        totals = []
        for n in (args.short, args.long):
            chain = build(n)[0 if custom else 1]
            live = {k: v.copy() for k, v in frames[0].items()}  # the bound arrays; frames are copied in
            runner = Runner(chain, custom, live)
            def step(t):
                for k, v in frames[t % 2].items():
                    if k in runner.feeds:
                        np.copyto(runner.feeds[k], v)
                runner.run()
            for t in range(args.warmup):
                step(t)
            batches = []
            for _ in range(args.batches):
                start = time.thread_time()
                for t in range(args.runs):
                    step(t)
                batches.append((time.thread_time() - start) / args.runs)
            totals.append(statistics.median(batches))
        per_node[custom] = (totals[1] - totals[0]) / (args.long - args.short)
    return per_node[True], per_node[False]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(cases(16, 8)))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--batches", type=int, default=15)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--short", type=int, default=4)
    ap.add_argument("--long", type=int, default=36)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--size", type=int, default=8)
    args = ap.parse_args(argv)
    all_cases = cases(args.channels, args.size)
    print(f"1x{args.channels}x{args.size}x{args.size}, b = {_native.channel_block()}, kernels {_native.simd_level()}, "
          f"one thread; us per node (chains of {args.long} - {args.short}), median of {args.rounds} rounds; "
          "ratio Delta / ORT median [min-max]")
    print("| case | frames | Delta us | ORT us | ratio |")
    print("| --- | --- | --- | --- | --- |")
    for name in args.cases:
        build, kind = all_cases[name]
        for changing in ((True,) if kind == "maps" else (True, False)):
            got = [time_pair(build, kind, changing, args) for _ in range(args.rounds)]
            ours = statistics.median(g[0] for g in got) * 1e6
            theirs = statistics.median(g[1] for g in got) * 1e6
            ratios = [g[0] / g[1] for g in got]
            print(f"| {name} | {'changing' if changing else 'still'} | {ours:.2f} | {theirs:.2f} | "
                  f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}] |", flush=True)


if __name__ == "__main__":
    main()

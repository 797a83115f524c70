"""ORT's own kernels invoked from a custom op (Ort::Op) against ORT's Conv and deltaonnx's DeltaConv.

For each shape it times, at one thread by the calling thread's CPU time (`time.thread_time`; a 1-thread ORT
session runs its kernels in the calling thread, so other jobs on the machine do not count):

    ort_conv        ORT's Conv at ORT_ENABLE_ALL (its NCHWc kernels) - the reference
    ort_conv_basic  ORT's Conv at ORT_ENABLE_BASIC (the plain Conv kernel, the one Ort::Op "Conv" runs)
    invoked_conv    InvokedConv: ORT's Conv kernel through Ort::Op inside a custom op
    gemm_conv       InvokedGemmConv: im2col of all pixels + ORT's Gemm through Ort::Op, written into Y
    gemm_conv_pN    the same in panels of N gathered pixels (scratch panel copied into Y), as a Delta op would
    matmul_conv     im2col + ORT's MatMul through Ort::Op, bias added after
    nchwc_conv      InvokedNchwcConv: ORT's NCHWc kernels (ReorderInput, com.microsoft.nchwc Conv, ReorderOutput,
                    what ORT_ENABLE_ALL runs) through Ort::Op, weights put in MLAS's blocked layout by the op
    nchwc_conv_bR   the same one band of R output rows at a time (band input rows copied out with their halo)
    delta_conv      deltaonnx DeltaConv with every pixel changed (a new random frame each run, X_ref state)
    delta_conv_map  DeltaConv with an all-ones change map and no X_ref (the converter's threshold-0 form)

Each method runs `--repeat` times per round, rounds interleave the methods, and the minimum is kept. Every
output is checked against ORT's Conv on the same frame (max abs diff).

    cmake -S benchmarks/ort_invoke -B build/ort_invoke -G Ninja -DCMAKE_BUILD_TYPE=Release \\
          -DORT_INCLUDE_DIR=/usr/local/include/onnxruntime && cmake --build build/ort_invoke -j1
    DELTAONNX_LIBRARY_DIR=build/<you> python benchmarks/ort_invoke/bench_invoke.py [--rounds 5 --repeat 10]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import deltaonnx

EXPERIMENTAL = "com.deltaonnx.experimental"
DELTA = "com.deltaonnx"
REPO = Path(__file__).resolve().parents[2]
DEFAULT_LIBRARY = REPO / "build" / "ort_invoke" / "libort_invoke_ops.so"

# name: (C, M, k, stride, H, W)
CASES = {
    "conv3x3_64_64_120x160": (64, 64, 3, 1, 120, 160),
    "conv3x3_256_256_20x15": (256, 256, 3, 1, 20, 15),
    "conv3x3_128_256_s2_30x40": (128, 256, 3, 2, 30, 40),
    "conv1x1_128_128_60x80": (128, 128, 1, 1, 60, 80),
}


def experimental_library() -> str:
    path = os.environ.get("ORT_INVOKE_LIBRARY", str(DEFAULT_LIBRARY))
    if not Path(path).is_file():
        raise SystemExit(f"experimental library {path} not built: see the cmake lines in this file's docstring")
    return path


def _vi(name, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, None)


def _model(node, inputs, outputs, inits):
    g = helper.make_graph([node], "invoke_bench", inputs, outputs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DELTA, 1),
                                            helper.make_opsetid(EXPERIMENTAL, 1)])
    m.ir_version = 10  # ORT refuses onnx's default IR 14
    return m.SerializeToString()


def build_models(case, rng, panels, bands):
    """{method: (model bytes, graph optimization level, needs which library, kind)}; kind is dense|delta|delta_map."""
    C, M, k, s, H, W = CASES[case]
    w = (rng.standard_normal((M, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    b = (rng.standard_normal(M) * 0.1).astype(np.float32)
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    conv = dict(kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4)
    dense_io = ([_vi("x")], [_vi("y")])

    def dense(op, domain="", **extra):
        return _model(helper.make_node(op, ["x", "w", "b"], ["y"], domain=domain, **conv, **extra), *dense_io, inits)

    ALL, BASIC = ort.GraphOptimizationLevel.ORT_ENABLE_ALL, ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    models = {
        "ort_conv": (dense("Conv"), ALL, None, "dense"),
        "ort_conv_basic": (dense("Conv"), BASIC, None, "dense"),
        "invoked_conv": (dense("InvokedConv", EXPERIMENTAL), ALL, "experimental", "dense"),
        "gemm_conv": (dense("InvokedGemmConv", EXPERIMENTAL), ALL, "experimental", "dense"),
    }
    pixels = ((H + 2 * (k // 2) - k) // s + 1) * ((W + 2 * (k // 2) - k) // s + 1)
    for p in (p for p in panels if p < pixels):  # a panel of all pixels is gemm_conv
        models[f"gemm_conv_p{p}"] = (dense("InvokedGemmConv", EXPERIMENTAL, panel=p), ALL, "experimental", "dense")
    models["matmul_conv"] = (dense("InvokedGemmConv", EXPERIMENTAL, product="MatMul"), ALL, "experimental", "dense")
    models["nchwc_conv"] = (dense("InvokedNchwcConv", EXPERIMENTAL), ALL, "experimental", "dense")
    out_rows = (H + 2 * (k // 2) - k) // s + 1
    for r in (r for r in bands if r < out_rows):
        models[f"nchwc_conv_b{r}"] = (dense("InvokedNchwcConv", EXPERIMENTAL, band_rows=r), ALL, "experimental", "dense")
    # DeltaConv as bench_ops.py and `convert` build it: X_ref state, or (threshold 0) a change map and no X_ref.
    node = helper.make_node("DeltaConv", ["x", "w", "b", "x_ref", "y_prev"], ["y", "x_ref_next", "map"],
                            domain=DELTA, name="dc", **conv)
    models["delta_conv"] = (_model(node, [_vi("x"), _vi("x_ref"), _vi("y_prev")],
                                   [_vi("y"), _vi("x_ref_next"), _vi("map", TensorProto.UINT8)], inits),
                            ALL, "delta", "delta")
    node = helper.make_node("DeltaConv", ["x", "w", "b", "", "y_prev", "map_in"], ["y", "", "map"],
                            domain=DELTA, name="dc", **conv)
    models["delta_conv_map"] = (_model(node, [_vi("x"), _vi("y_prev"), _vi("map_in", TensorProto.UINT8)],
                                       [_vi("y"), _vi("map", TensorProto.UINT8)], inits),
                                ALL, "delta", "delta_map")
    return models


def make_session(model_bytes, level, library):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = level
    if library == "experimental":
        so.register_custom_ops_library(experimental_library())
    elif library == "delta":
        so.register_custom_ops_library(deltaonnx.library_path())
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


class Runner:
    """One session fed frame after frame through IOBinding, outputs (and Delta state) bound in place as
    DeltaSession binds them. run(frame) returns the calling thread's CPU seconds for that run."""

    def __init__(self, sess, kind, shape):
        self.sess, self.kind = sess, kind
        self.binding = sess.io_binding()
        self.kept = {"dense": ("y",), "delta": ("y", "x_ref_next", "map"), "delta_map": ("y", "map")}[kind]
        self.state = None
        if kind == "delta_map":
            N, _, H, W = shape
            self.all_changed = np.ones((N, 1, H, W), np.uint8)
        self.empty = ort.OrtValue.ortvalue_from_numpy(np.zeros((0, 0, 0, 0), np.float32))

    def run(self, frame):
        b = self.binding
        b.bind_cpu_input("x", frame)
        if self.kind == "delta_map":
            b.bind_cpu_input("map_in", self.all_changed)
        if self.state is None:
            if self.kind == "delta":
                b.bind_ortvalue_input("x_ref", self.empty)
            if self.kind != "dense":
                b.bind_ortvalue_input("y_prev", self.empty)
            for name in self.kept:
                b.bind_output(name, "cpu")
        else:
            if self.kind == "delta":
                b.bind_ortvalue_input("x_ref", self.state["x_ref_next"])
            if self.kind != "dense":
                b.bind_ortvalue_input("y_prev", self.state["y"])
            for name in self.kept:
                b.bind_ortvalue_output(name, self.state[name])
        t0 = time.thread_time()
        self.sess.run_with_iobinding(b)
        t1 = time.thread_time()
        if self.state is None:
            self.state = dict(zip(self.kept, b.get_outputs()))
        return t1 - t0

    def output(self):
        return self.state["y"].numpy()


def bench_case(case, args, rng):
    C, M, k, s, H, W = CASES[case]
    models = build_models(case, rng, args.panels, args.bands)
    frames = [rng.standard_normal((1, C, H, W)).astype(np.float32) for _ in range(4)]
    runners = {name: Runner(make_session(m, lvl, lib), kind, frames[0].shape)
               for name, (m, lvl, lib, kind) in models.items()}
    reference = [runners["ort_conv"].sess.run(None, {"x": f})[0] for f in frames]
    best = {name: float("inf") for name in runners}
    diff = {name: 0.0 for name in runners}
    # Each runner walks the frames in turn, so its consecutive runs always differ: DeltaConv recomputes all.
    step = {name: 0 for name in runners}
    for _ in range(args.rounds + 1):  # round 0 warms up (and gives every Delta op its state)
        for name, r in runners.items():
            for _ in range(args.repeat):
                f = step[name] % len(frames)
                step[name] += 1
                t = r.run(frames[f])
                if step[name] > args.repeat:
                    best[name] = min(best[name], t)
            diff[name] = max(diff[name], float(np.abs(r.output() - reference[f]).max()))
    return [dict(case=case, method=name, ms=best[name] * 1e3, ratio=best[name] / best["ort_conv"],
                 max_abs_diff=diff[name]) for name in runners]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds over all methods")
    ap.add_argument("--repeat", type=int, default=10, help="runs per method and round")
    ap.add_argument("--panels", type=int, nargs="*", default=[64, 256, 1024],
                    help="pixel panel sizes for InvokedGemmConv (besides the whole image)")
    ap.add_argument("--bands", type=int, nargs="*", default=[4, 16],
                    help="output rows per invocation for InvokedNchwcConv (besides the whole image)")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    print(f"onnxruntime {ort.__version__}; experimental library {experimental_library()}; "
          f"deltaonnx library {deltaonnx.library_path()}")
    print("1 thread, calling thread's CPU time, minimum over rounds x repeat runs; ratio = method / ort_conv")
    rng = np.random.default_rng(0)
    rows = []
    for case in args.cases:
        case_rows = bench_case(case, args, rng)
        rows += case_rows
        print(f"\n{case}")
        print(f"  {'method':<16} {'ms':>8} {'ratio':>6} {'max|diff|':>10}")
        for r in case_rows:
            print(f"  {r['method']:<16} {r['ms']:>8.3f} {r['ratio']:>6.2f} {r['max_abs_diff']:>10.2e}")
        by = {r["method"]: r["ms"] for r in case_rows}
        invoked = min((m for m in by if m.startswith(("invoked", "gemm", "matmul", "nchwc"))), key=by.get)
        delta = min(("delta_conv", "delta_conv_map"), key=by.get)
        print(f"  fastest invoked: {invoked} {by[invoked]:.3f} ms; DeltaConv ({delta}) {by[delta]:.3f} ms: "
              f"invoked / delta = {by[invoked] / by[delta]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

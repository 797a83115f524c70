"""How much of a Delta op's fixed cost one node per chain would save (docs/decisions/region-op.md). Chains of convs
with Relu, as dense ORT's nodes (Conv + Relu, fused by ORT into NCHWc Convs), as the converted model's stateless run
(DeltaConvs, exact, every past empty: ORT's run of DeltaSession's own binding), and as one ConvChain node of the
prototype (conv_chain_op.cc: the same invoked NCHWc Conv per member in one call), with and without every member's
output handed to ORT. One thread, each run in a loop, the four interleaved; us per conv, median of the rounds.

    python benchmarks/region_prototype/region_prototype.py [--rounds 5] [--cold]

`--cold` times single runs, each after evicting the caches, as a server that runs other models between two frames
finds them (docs/results.md#twenty-first-session).

The op is compiled on first use with the system C++ compiler into build/ beside this file, against ORT's headers
where the op library's build finds them (ORT_INCLUDE_DIR, the system, or `pip install .`'s build tree). Not part of
the op library.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import deltaonnx
from deltaonnx import DeltaSession

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "conv_chain_op.cc"
REPO = HERE.parents[1]
DOMAIN = "deltaonnx.prototype"

# name: (member kinds (0 = 1x1 C -> C, 1 = depthwise 3x3), channels, size). A chain's first member reads NCHW in every
# variant: dense ORT reorders the frame first, the converted model's first conv writes blocked from it.
CASES = {
    "1x1 16ch 8x8": ([0] * 60, 16, 8),
    "1x1 16ch 14x14": ([0] * 60, 16, 14),
    "1x1 16ch 28x28": ([0] * 60, 16, 28),
    "1x1 16ch 56x56": ([0] * 60, 16, 56),
    # MobileNet's depthwise + pointwise pairs, after a 1x1 conv (which a converted model writes blocked from NCHW)
    "dw+pw 32ch 112x112": ([0] + [1, 0] * 4, 32, 112),
    "dw+pw 64ch 56x56": ([0] + [1, 0] * 8, 64, 56),
    "dw+pw 96ch 28x28": ([0] + [1, 0] * 10, 96, 28),
    "dw+pw 160ch 14x14": ([0] + [1, 0] * 10, 160, 14),
}


def ort_headers() -> Path:
    fetched = sorted(REPO.glob("build/*/ort_headers/onnxruntime"))
    candidates = [os.environ.get("ORT_INCLUDE_DIR", ""), "/usr/include/onnxruntime", "/usr/local/include/onnxruntime",
                  *map(str, fetched)]
    found = next((c for c in candidates if c and (Path(c) / "onnxruntime_cxx_api.h").is_file()), None)
    if found is None:
        raise FileNotFoundError("ONNX Runtime's C++ headers not found: set ORT_INCLUDE_DIR, or `pip install .` "
                                "(it fetches them into build/<wheel tag>/ort_headers)")
    return Path(found)


def build(headers: Path | None = None) -> Path:
    """Compiles conv_chain_op.cc when the library is missing or older than the source; returns its path."""
    out = HERE / "build" / "libconv_chain_proto.so"
    if out.exists() and out.stat().st_mtime >= SOURCE.stat().st_mtime:
        return out
    out.parent.mkdir(exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    subprocess.run([os.environ.get("CXX", "g++"), "-O2", "-std=c++17", "-shared", "-fPIC", "-fvisibility=hidden",
                    f"-I{headers or ort_headers()}", str(SOURCE), "-o", str(tmp)], check=True)
    tmp.replace(out)
    return out


def models(kinds: list[int], channels: int, size: int, rng):
    """(dense ORT's chain, ConvChain, ConvChain with every member's output) with the same weights."""
    k_p, k_d = kinds.count(0), kinds.count(1)
    scale_p, scale_d = 0.8 / np.sqrt(channels), 0.8 / 3
    p = (rng.standard_normal((max(k_p, 1), channels, channels)) * scale_p).astype(np.float32)
    bp = (rng.standard_normal((max(k_p, 1), channels)) * 0.1).astype(np.float32)
    d = (rng.standard_normal((max(k_d, 1), channels, 3, 3)) * scale_d).astype(np.float32)
    bd = (rng.standard_normal((max(k_d, 1), channels)) * 0.1).astype(np.float32)
    shape = [1, channels, size, size]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)
    nodes, inits, i_p, i_d = [], [], 0, 0
    for i, kind in enumerate(kinds):
        src, out = "x" if i == 0 else f"r{i - 1}", "y" if i == len(kinds) - 1 else f"r{i}"
        if kind == 0:
            w, b, attrs = p[i_p][:, :, None, None], bp[i_p], {}
            i_p += 1
        else:
            w, b, attrs = d[i_d][:, None], bd[i_d], dict(group=channels, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
            i_d += 1
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        nodes += [helper.make_node("Conv", [src, f"w{i}", f"b{i}"], [f"c{i}"], **attrs),
                  helper.make_node("Relu", [f"c{i}"], [out])]
    dense = helper.make_model(helper.make_graph(nodes, "dense", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    weights = [numpy_helper.from_array(a, n) for a, n in ((p, "p"), (bp, "bp"), (d, "d"), (bd, "bd"))]

    def chain(outputs: bool):
        extra = [f"s{i}" for i in range(len(kinds))] if outputs else []
        graph_outputs = [y] + [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in extra]
        node = helper.make_node("ConvChain", ["x", "p", "bp", "d", "bd"], ["y", *extra], domain=DOMAIN,
                                kinds=kinds, keep_outputs=int(outputs))
        return helper.make_model(helper.make_graph([node], "chain_outputs" if outputs else "chain", [x],
                                                   graph_outputs, weights),
                                 opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(DOMAIN, 1)],
                                 ir_version=10)
    return dense, chain(False), chain(True)


def options(library: str | None = None) -> ort.SessionOptions:
    o = ort.SessionOptions()
    o.intra_op_num_threads = o.inter_op_num_threads = 1
    o.log_severity_level = 3
    if library:
        o.register_custom_ops_library(library)
    return o


def check(library: Path, cases=(([0], 16, 5), ([0, 0, 0], 16, 8), ([1, 0, 1], 32, 6), ([0, 1] * 2, 48, 7)),
          seed=0) -> int:
    """The prototype against dense ORT's chain of Conv + Relu on random inputs: the number of models checked."""
    rng = np.random.default_rng(seed)
    checked = 0
    for kinds, channels, size in cases:
        dense_model, *chain_models = models(list(kinds), channels, size, rng)
        x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
        want = ort.InferenceSession(dense_model.SerializeToString(), options(),
                                    providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        for chain_model in chain_models:
            got = ort.InferenceSession(chain_model.SerializeToString(), options(str(library)),
                                       providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4,
                                       err_msg=f"{chain_model.graph.name}: {kinds} at {channels}x{size}x{size}")
            checked += 1
    return checked


def _bound(session: ort.InferenceSession, x: np.ndarray):
    binding = session.io_binding()
    binding.bind_cpu_input("x", x)
    for output in session.get_outputs():
        binding.bind_output(output.name)
    return lambda: session.run_with_iobinding(binding)


def _stateless_run(dense_model, x: np.ndarray):
    """ORT's run of a DeltaSession's own binding once its stream runs stateless (everything changing)."""
    session = DeltaSession(deltaonnx.convert(dense_model, threshold=0), options(), dense_fallback=False)
    rng = np.random.default_rng(1)
    for _ in range(8):
        session.run(None, {"x": rng.standard_normal(x.shape).astype(np.float32)})
    session.run(None, {"x": x})
    state = next(iter(session._streams.values()))  # noqa: SLF001 - the binding DeltaSession runs, run alone
    assert state.mode == "stateless", state.mode
    return lambda: state.binding._c_session.run_with_iobinding(state.binding._c_binding, None)  # noqa: SLF001


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(CASES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.4)
    parser.add_argument("--cold", action="store_true",
                        help="time single runs, each after evicting the caches (64 MB touched), 60 a round")
    args = parser.parse_args(argv)
    junk = np.ones(16 << 20, np.float32) if args.cold else None
    library = str(build())
    check(Path(library))
    rng = np.random.default_rng(0)
    print(f"{'case':>20} {'dense ORT':>10} {'DeltaConv':>10} {'ConvChain':>10} {'+outputs':>10}   us per conv, "
          f"median of {args.rounds} rounds")
    for name in args.only or CASES:
        kinds, channels, size = CASES[name]
        dense_model, chain_model, outputs_model = models(kinds, channels, size, rng)
        x = rng.standard_normal((1, channels, size, size)).astype(np.float32)
        session = lambda model, lib=None: ort.InferenceSession(model.SerializeToString(), options(lib),  # noqa: E731
                                                               providers=["CPUExecutionProvider"])
        runs = {"dense ORT": _bound(session(dense_model), x), "DeltaConv": _stateless_run(dense_model, x),
                "ConvChain": _bound(session(chain_model, library), x),
                "+outputs": _bound(session(outputs_model, library), x)}
        times = {key: [] for key in runs}
        for run in runs.values():
            for _ in range(20):
                run()
        for _ in range(args.rounds):
            for key, run in runs.items():
                if args.cold:  # single runs on evicted caches (a server running other models between frames)
                    single = []
                    for _ in range(60):
                        junk += 1.0
                        start = time.perf_counter()
                        run()
                        single.append(time.perf_counter() - start)
                    times[key].append(statistics.median(single) / len(kinds) * 1e6)
                    continue
                n, start = 0, time.perf_counter()
                while time.perf_counter() - start < args.seconds:
                    run()
                    n += 1
                times[key].append((time.perf_counter() - start) / n / len(kinds) * 1e6)
        med = {key: statistics.median(t) for key, t in times.items()}
        print(f"{name:>20} " + " ".join(f"{med[key]:>10.2f}" for key in runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""How much of a Delta op's fixed cost one node per region would save: K 1x1 convs (16 -> 16, Relu) on 1x16xSxS as
K nodes of dense ORT (Conv + Relu, fused by ORT), as K stateless DeltaConvs (blocked, with maps, the pasts empty:
a stateless run's), and as one ConvChain node of the prototype (conv_chain_op.cc: the same NCHWc Conv invoked K
times in one call). One thread, run_with_iobinding in a loop, the three interleaved, per conv.

    python benchmarks/region_prototype/region_prototype.py [--sizes 8 28 56] [--convs 60]

The op is compiled on first use with the system C++ compiler into build/ beside this file, against ORT's headers
where the op library's build finds them (ORT_INCLUDE_DIR, the system, or `pip install .`'s build tree). Not part of
the op library: docs/decisions/region-op.md.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import bench_node_cost  # noqa: E402
import deltaonnx  # noqa: E402

C = 16
SOURCE = HERE / "conv_chain_op.cc"
REPO = HERE.parents[1]


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


def models(k: int, size: int, rng):
    w = (rng.standard_normal((k, C, C)) * (0.8 / np.sqrt(C))).astype(np.float32)
    b = (rng.standard_normal((k, C)) * 0.1).astype(np.float32)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, size, size])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, size, size])
    nodes, inits = [], []
    for i in range(k):
        inits += [numpy_helper.from_array(w[i][:, :, None, None], f"w{i}"), numpy_helper.from_array(b[i], f"b{i}")]
        nodes += [helper.make_node("Conv", ["x" if i == 0 else f"r{i - 1}", f"w{i}", f"b{i}"], [f"c{i}"]),
                  helper.make_node("Relu", [f"c{i}"], ["y" if i == k - 1 else f"r{i}"])]
    dense = helper.make_model(helper.make_graph(nodes, "dense", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=10)
    def chain(op: str, extra: list[str]):
        outputs = [y] + [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, C, size, size]) for name in extra]
        return helper.make_model(
            helper.make_graph([helper.make_node(op, ["x", "w", "b"], ["y", *extra], domain="deltaonnx.prototype")],
                              op, [x], outputs, [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]),
            opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("deltaonnx.prototype", 1)], ir_version=10)
    return dense, chain("ConvChain", []), chain("ConvChainOutputs", [f"s{i}" for i in range(k)])


def check(library: Path, sizes=(5, 8), convs=(1, 2, 7), seed=0) -> int:
    """The prototype against dense ORT's chain of Conv + Relu on random inputs: the number of cases checked."""
    rng = np.random.default_rng(seed)
    checked = 0
    for size in sizes:
        for k in convs:
            dense_model, *chain_models = models(k, size, rng)
            x = rng.standard_normal((1, C, size, size)).astype(np.float32)
            want = ort.InferenceSession(dense_model.SerializeToString(), options(),
                                        providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
            for chain_model in chain_models:
                got = ort.InferenceSession(chain_model.SerializeToString(), options(str(library)),
                                           providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
                np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4,
                                           err_msg=f"{chain_model.graph.name}: {k} convs at {size}x{size}")
                checked += 1
    return checked


def options(library: str | None = None) -> ort.SessionOptions:
    o = ort.SessionOptions()
    o.intra_op_num_threads = o.inter_op_num_threads = 1
    o.log_severity_level = 3
    if library:
        o.register_custom_ops_library(library)
    return o


def bound(session: ort.InferenceSession, x: np.ndarray, state=(), maps=None):
    binding = session.io_binding()
    binding.bind_cpu_input("x", x)
    names = {i.name for i in session.get_inputs()}
    if maps is not None and "map0" in names:
        binding.bind_cpu_input("map0", maps)
    presents = set()
    for past, present, shape in state:
        binding.bind_cpu_input(past, bench_node_cost.EMPTY)
        binding.bind_ortvalue_output(present, ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, np.float32)))
        presents.add(present)
    for output in session.get_outputs():
        if output.name not in presents:
            binding.bind_output(output.name)
    return lambda: session.run_with_iobinding(binding)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 28, 56])
    parser.add_argument("--convs", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=0.5)
    args = parser.parse_args(argv)
    library = build()
    check(library)
    rng = np.random.default_rng(0)
    print(f"{'size':>5} {'dense ORT':>10} {'DeltaConv':>10} {'ConvChain':>10} {'+outputs':>10}   us per conv, "
          f"median of {args.rounds} rounds")
    for size in args.sizes:
        k = args.convs
        dense_model, chain_model, outputs_model = models(k, size, rng)
        x = rng.standard_normal((1, C, size, size)).astype(np.float32)
        dense = ort.InferenceSession(dense_model.SerializeToString(), options(), providers=["CPUExecutionProvider"])
        chain = ort.InferenceSession(chain_model.SerializeToString(), options(str(library)),
                                     providers=["CPUExecutionProvider"])
        chain_outputs = ort.InferenceSession(outputs_model.SerializeToString(), options(str(library)),
                                             providers=["CPUExecutionProvider"])
        delta_chain, _ = bench_node_cost.conv_chain(k, 1, "blocked", True, C, size)
        delta = ort.InferenceSession(delta_chain.model.SerializeToString(), options(deltaonnx.library_path()),
                                     providers=["CPUExecutionProvider"])
        runs = {"dense ORT": bound(dense, x), "DeltaConv": bound(delta, x, delta_chain.state,
                                                                 np.ones((1, 1, size, size), np.uint8)),
                "ConvChain": bound(chain, x), "ConvChainOutputs": bound(chain_outputs, x)}
        times = {name: [] for name in runs}
        for run in runs.values():
            for _ in range(50):
                run()
        for _ in range(args.rounds):
            for name, run in runs.items():
                n, start = 0, time.perf_counter()
                while time.perf_counter() - start < args.seconds:
                    run()
                    n += 1
                times[name].append((time.perf_counter() - start) / n / k * 1e6)
        med = {name: statistics.median(t) for name, t in times.items()}
        print(f"{size:>5} {med['dense ORT']:>10.2f} {med['DeltaConv']:>10.2f} {med['ConvChain']:>10.2f} "
              f"{med['ConvChainOutputs']:>10.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

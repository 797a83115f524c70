"""Frames per second of MTCNN PNet served by a real Triton server, dense against converted, for 1, 4 and 16
cameras (docs/serving.md's table).

One server (nvidia-pytriton's bundled tritonserver, python backend) holds both models, written by
`deltaonnx triton` with the same options: `pnet_dense` (--dense) and `pnet_delta` (--threshold, the input gate).
Each camera is a client thread sending its own clip over gRPC, one frame after the other (a camera waits for
its answer before sending the next frame), all cameras at once. Camera i plays vtest.avi (a static surveillance
camera) from its own offset, back and forth, resized to HxW. Every camera first runs --warmup frames; fps is
counted from the moment the last camera is past its warm-up until every camera has answered --warmup +
--frames frames: frames answered in that window / its length. Dense and converted alternate, --repeats times; the table gives the median and
the range. The clients run on the same machine as the server and use part of its CPU (the same work per
frame for both models).

--transport shm sends each camera's frames and outputs through system shared memory regions registered with
the server (same-host clients: gRPC carries the headers only), so the table shows the server without the
clients' encoding. --breakdown serves with model.py's debug timing output and prints where a frame's ms go:
the client's (building the request, the round trip, reading the outputs), Triton's per-model statistics
(queue, compute_input, compute_infer, compute_output) and model.py's (the session run, the whole request).
The floor is the same model.onnx run in this process on one camera's clip.

    python benchmarks/bench_triton.py [--cameras 1 4 16] [--repeats 3] [--transport grpc shm] [--breakdown]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "models"))

import real_material  # noqa: E402

from deltaonnx.serving import bundled_server, write_triton_repository  # noqa: E402
from deltaonnx.serving.triton_repository import TIMING_OUTPUT  # noqa: E402
from deltaonnx.video import Preprocess, read_frames  # noqa: E402


def camera_frames(size, count: int) -> list[np.ndarray]:
    """`count` vtest frames, PNet's preprocessing ((x - 127.5) / 128, RGB, NHWC), float32 [1,H,W,3]."""
    preprocess = Preprocess(size=size, resize="resize", scale=1.0, mean=(127.5,), std=(128.0,), layout="NHWC")
    return [np.ascontiguousarray(preprocess(frame), dtype=np.float32)
            for frame in read_frames(real_material.vtest_avi(), count)]


def play(pool: list, offset: int, count: int) -> list:
    """`count` frames of the pool from `offset`, back and forth (no jump at the end of the clip)."""
    cycle = pool + pool[-2:0:-1]
    return [cycle[(offset + t) % len(cycle)] for t in range(count)]


class GrpcTransport:
    """The frame travels inside the gRPC message (the default: what a remote client does)."""

    def __init__(self, client, input_name: str, outputs: dict, index: int):
        self.client, self.input_name, self.outputs = client, input_name, outputs

    def request(self, frame):
        import tritonclient.grpc as grpcclient

        tensor = grpcclient.InferInput(self.input_name, list(frame.shape), "FP32")
        tensor.set_data_from_numpy(frame)
        return [tensor], [grpcclient.InferRequestedOutput(name) for name in self.outputs]

    def read(self, result, name):
        return result.as_numpy(name)

    def close(self):
        pass


class SharedMemoryTransport:
    """The frame and the outputs go through system shared memory regions of this camera, registered with the
    server (same-host clients): gRPC carries only the request's header."""

    def __init__(self, client, input_name: str, outputs: dict, index: int, frame_bytes: int):
        import tritonclient.utils.shared_memory as shm

        self.client, self.input_name, self.outputs, self.shm = client, input_name, outputs, shm
        tag = f"deltaonnx_bench_{os.getpid()}_{index}"
        self.names = (f"{tag}_in", f"{tag}_out")
        self.offsets, size = {}, 0
        for name, (shape, dtype) in outputs.items():
            self.offsets[name] = size
            size += int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.sizes = (frame_bytes, size)
        self.regions = []
        for name, byte_size in zip(self.names, self.sizes):
            self.regions.append(shm.create_shared_memory_region(name, "/" + name, byte_size))
            client.register_system_shared_memory(name, "/" + name, byte_size)

    def request(self, frame):
        import tritonclient.grpc as grpcclient

        self.shm.set_shared_memory_region(self.regions[0], [frame])
        tensor = grpcclient.InferInput(self.input_name, list(frame.shape), "FP32")
        tensor.set_shared_memory(self.names[0], frame.nbytes)
        wanted = []
        for name, (shape, dtype) in self.outputs.items():
            output = grpcclient.InferRequestedOutput(name)
            output.set_shared_memory(self.names[1], int(np.prod(shape)) * np.dtype(dtype).itemsize,
                                     offset=self.offsets[name])
            wanted.append(output)
        return [tensor], wanted

    def read(self, result, name):
        shape, dtype = self.outputs[name]
        return self.shm.get_contents_as_numpy(self.regions[1], dtype, shape, offset=self.offsets[name]).copy()

    def close(self):
        from tritonclient.utils import InferenceServerException

        for name, region in zip(self.names, self.regions):
            try:
                # The server lets a region go a moment after the last response: "currently in use" until then.
                for attempt in range(50):
                    try:
                        self.client.unregister_system_shared_memory(name)
                        break
                    except InferenceServerException as error:
                        if "in use" not in str(error) or attempt == 49:
                            raise
                        time.sleep(0.02)
            finally:
                self.shm.destroy_shared_memory_region(region)


def server_statistics(client, model: str) -> dict:
    """Triton's cumulative per-model counters: request count and ns in each stage."""
    stats = client.get_inference_statistics(model).model_stats[0].inference_stats
    return {"count": stats.success.count, **{stage: getattr(stats, stage).ns
                                              for stage in ("queue", "compute_input", "compute_infer",
                                                            "compute_output")}}


def run_cameras(url: str, model: str, input_name: str, outputs: dict, pool: list, cameras: int, warmup: int,
                frames: int, transport: str = "grpc") -> dict:
    """All cameras stream until each has `warmup + frames` answers; fps over the window from the moment the
    last camera finished its warm-up to that end (cameras served unevenly still count as they were served).
    `outputs`: name -> (shape, dtype) of what each request asks for. Per frame in the window: the client's
    ms (building the request, the round trip, reading the outputs), the server's (Triton's statistics), and
    model.py's own when the model returns the debug timing output."""
    import tritonclient.grpc as grpcclient

    done_times: list[list[float]] = [[] for _ in range(cameras)]
    parts: list[list[dict]] = [[] for _ in range(cameras)]
    errors = []
    start_gate = threading.Barrier(cameras)
    stop = threading.Event()
    lock = threading.Lock()
    reached: list[float] = []  # when each camera reached warmup + frames answers
    warmed: list[float] = []
    snapshots = {}

    def camera(index: int) -> None:
        try:
            clip = play(pool, offset=37 * index, count=len(pool) * 2 - 2)
            with grpcclient.InferenceServerClient(url) as client:
                sender = (GrpcTransport(client, input_name, outputs, index) if transport == "grpc" else
                          SharedMemoryTransport(client, input_name, outputs, index, clip[0].nbytes))
                start_gate.wait(timeout=60)
                t = 0
                while not stop.is_set():
                    began = time.perf_counter()
                    inputs, wanted = sender.request(clip[t % len(clip)])
                    sent = time.perf_counter()
                    result = client.infer(model, inputs, outputs=wanted, sequence_id=10_000 + index,
                                          sequence_start=t == 0, client_timeout=120)
                    answered = time.perf_counter()
                    read = {name: sender.read(result, name) for name in outputs}
                    done_times[index].append(time.perf_counter())
                    parts[index].append({"request": sent - began, "round_trip": answered - sent,
                                         "read": done_times[index][-1] - answered,
                                         "model": read.get(TIMING_OUTPUT)})
                    t += 1
                    with lock:
                        if t == warmup:
                            warmed.append(done_times[index][-1])
                            if len(warmed) == cameras:
                                snapshots["begin"] = server_statistics(client, model)
                        if t == warmup + frames:
                            reached.append(done_times[index][-1])
                            if len(reached) == cameras:
                                snapshots["end"] = server_statistics(client, model)
                                stop.set()
                # END frees the slot at once (not after the idle timeout) for the next run
                inputs, wanted = sender.request(clip[t % len(clip)])
                client.infer(model, inputs, outputs=wanted, sequence_id=10_000 + index, sequence_end=True,
                             client_timeout=120)
                sender.close()
        except Exception as error:  # noqa: BLE001 - reported after the run
            errors.append(f"camera {index}: {error}")
            stop.set()

    threads = [threading.Thread(target=camera, args=(i,)) for i in range(cameras)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=3600)
    if errors:
        raise RuntimeError("; ".join(errors[:3]))
    begin = max(times[warmup - 1] for times in done_times)
    end = max(reached)
    window = [part for times, camera_parts in zip(done_times, parts)
              for t, part in zip(times, camera_parts) if begin < t <= end]
    return {"fps": len(window) / (end - begin), "window_s": end - begin, "frames": len(window),
            "breakdown": breakdown(window, snapshots["begin"], snapshots["end"])}


def breakdown(window: list[dict], before: dict, after: dict) -> dict:
    """Mean ms per frame of each part (model.py's parts only when the model returned them)."""
    mean = lambda key: 1e3 * statistics.fmean(part[key] for part in window)  # noqa: E731
    served = max(after["count"] - before["count"], 1)
    parts = {"client request": mean("request"), "client round trip": mean("round_trip"),
             "client read": mean("read")}
    for stage in ("queue", "compute_input", "compute_infer", "compute_output"):
        parts[f"server {stage}"] = (after[stage] - before[stage]) / served / 1e6
    server = sum(parts[f"server {stage}"] for stage in ("queue", "compute_input", "compute_infer", "compute_output"))
    parts["gRPC and front end (round trip - server stages)"] = parts["client round trip"] - server
    timed = [part["model"].reshape(-1) for part in window if part["model"] is not None]
    if timed:
        parts["model.py session run"] = statistics.fmean(float(t[0]) for t in timed)
        parts["model.py request"] = statistics.fmean(float(t[1]) for t in timed)
        parts["requests per execute"] = statistics.fmean(float(t[2]) for t in timed)
        # Triton charges every request of a batch the whole execute(): per frame, divide by the batch.
        parts["backend IPC per frame (compute_infer / batch - model.py request)"] = (
            parts["server compute_infer"] / parts["requests per execute"] - parts["model.py request"])
    return parts


def in_process_floor(model_path: Path, converted: bool, input_name: str, clip: list, warmup: int) -> float:
    """ms per frame of the served model.onnx run in this process on one camera's clip (1 thread, the same
    session kind model.py holds), after `warmup` frames: what the server could at best achieve."""
    import onnxruntime as ort

    from deltaonnx import DeltaSession

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    if converted:
        session = DeltaSession(str(model_path), sess_options=options)
        run = lambda frame: session.run(None, {input_name: frame})  # noqa: E731
    else:
        plain = ort.InferenceSession(str(model_path), sess_options=options, providers=["CPUExecutionProvider"])
        run = lambda frame: plain.run(None, {input_name: frame})  # noqa: E731
    for frame in clip[:warmup]:
        run(frame)
    began = time.perf_counter()
    for frame in clip[warmup:]:
        run(frame)
    return (time.perf_counter() - began) * 1e3 / (len(clip) - warmup)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--size", default="288x384", help="HxW of the model input (default 288x384)")
    parser.add_argument("--threshold", type=float, default=0.1, help="input gate of the converted model (PNet units)")
    parser.add_argument("--instances", type=int, default=2, help="model instances (default 2: this machine's cores)")
    parser.add_argument("--max-sequences", type=int, default=8, help="cameras per instance (default 8)")
    parser.add_argument("--warmup", type=int, default=150, help="frames per camera before counting (default 150)")
    parser.add_argument("--frames", type=int, default=100, help="frames per camera counted (default 100)")
    parser.add_argument("--pool", type=int, default=240, help="distinct vtest frames played (default 240)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--transport", nargs="+", choices=TRANSPORTS, default=["grpc"],
                        help="grpc: frames inside the gRPC messages (default); shm: through system shared memory "
                             "regions registered per camera (same host), gRPC carrying the headers only")
    parser.add_argument("--breakdown", action="store_true",
                        help="serve with model.py's debug timing output and print where each frame's ms go")
    parser.add_argument("--venv", default=str(bundled_server.DEFAULT_VENV), help="the server's environment")
    args = parser.parse_args(argv)
    reason = bundled_server.unsupported_reason()
    if reason:
        print(f"cannot run the bundled server: {reason}")
        return 2
    size = tuple(int(s) for s in args.size.split("x"))
    if max(args.cameras) > args.instances * args.max_sequences:
        parser.error("more cameras than instances x max-sequences: the rest would wait in the backlog")
    venv = bundled_server.prepare_server_venv(Path(args.venv))
    pnet = real_material.mtcnn_pnet()
    pool = camera_frames(size, args.pool)
    common = dict(instances=args.instances, max_sequences=args.max_sequences, idle_timeout_us=30_000_000,
                  debug_timing=args.breakdown)
    results: dict[tuple, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="deltaonnx-bench-triton-") as tmp:
        write_triton_repository(pnet, Path(tmp), name="pnet_dense", dense=True, **common)
        write_triton_repository(pnet, Path(tmp), name="pnet_delta", conversion={"threshold": args.threshold}, **common)
        outputs = served_outputs(Path(tmp) / "pnet_dense" / "1" / "model.onnx", INPUT, pool[0], args.breakdown)
        floor_clip = play(pool, 0, args.warmup + args.frames)
        floor = {model: in_process_floor(Path(tmp) / model / "1" / "model.onnx", model == "pnet_delta", INPUT,
                                         floor_clip, args.warmup) for model in MODELS}
        with bundled_server.BundledTritonServer(tmp, venv) as server:
            for repeat in range(args.repeats):
                for transport in args.transport:
                    for cameras in args.cameras:
                        for model in MODELS:
                            run = run_cameras(server.grpc_url, model, INPUT, outputs, pool, cameras, args.warmup,
                                              args.frames, transport)
                            results.setdefault((transport, cameras, model), []).append(run)
                            print(f"repeat {repeat + 1}: {transport:4s} {model:10s} {cameras:2d} cameras: "
                                  f"{run['fps']:7.1f} fps ({run['frames']} frames in {run['window_s']:.1f} s)",
                                  flush=True)
    print(f"\nPNet {size[0]}x{size[1]}, vtest, gate {args.threshold}, {args.instances} instances x "
          f"{args.max_sequences} sequences, 1 ORT thread each; median (min-max) of {args.repeats} runs")
    print(f"in this process, one camera, same model.onnx: dense {floor['pnet_dense']:.2f} ms, converted "
          f"{floor['pnet_delta']:.2f} ms, {floor['pnet_dense'] / floor['pnet_delta']:.2f}x\n")
    print_table(results, args)
    if args.breakdown:
        print_breakdown(results, args)
    return 0


INPUT = "input_1"
MODELS = ("pnet_dense", "pnet_delta")
TRANSPORTS = ("grpc", "shm")


def served_outputs(model_path: Path, input_name: str, frame: np.ndarray, timing: bool) -> dict:
    """name -> (shape, dtype) of every output a request asks for (PNet's outputs have the same shapes dense
    and converted)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    values = session.run(None, {input_name: frame})
    outputs = {o.name: (v.shape, v.dtype) for o, v in zip(session.get_outputs(), values)}
    if timing:
        outputs[TIMING_OUTPUT] = ((1, 3), np.float64)
    return outputs


def _spread(values) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def print_table(results: dict, args) -> None:
    print("| transport | cameras | dense fps | converted fps | converted / dense |")
    print("| --- | --- | --- | --- | --- |")
    for transport in args.transport:
        for cameras in args.cameras:
            dense = [r["fps"] for r in results[(transport, cameras, "pnet_dense")]]
            delta = [r["fps"] for r in results[(transport, cameras, "pnet_delta")]]
            ratios = [d / s for d, s in zip(delta, dense)]
            print(f"| {transport} | {cameras} | {_spread(dense)} | {_spread(delta)} | "
                  f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |")


def print_breakdown(results: dict, args) -> None:
    """ms per frame of each part, median over the repeats: dense / converted for each transport and camera count."""
    columns = [(t, c) for t in args.transport for c in args.cameras]
    print("\nms per frame (median of the repeats), dense / converted; the server's stages are Triton's statistics")
    print("| part | " + " | ".join(f"{t} {c} cam" for t, c in columns) + " |")
    print("| --- |" + " --- |" * len(columns))
    parts = list(results[(columns[0][0], columns[0][1], "pnet_dense")][0]["breakdown"])
    for part in parts:
        cells = []
        for transport, cameras in columns:
            pair = [statistics.median(r["breakdown"].get(part, float("nan")) for r in results[(transport, cameras, m)])
                    for m in MODELS]
            cells.append(f"{pair[0]:.2f} / {pair[1]:.2f}")
        print(f"| {part} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    sys.exit(main())

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

    python benchmarks/bench_triton.py [--cameras 1 4 16] [--repeats 3] [--venv DIR]
"""
from __future__ import annotations

import argparse
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


def run_cameras(url: str, model: str, input_name: str, pool: list, cameras: int, warmup: int, frames: int) -> dict:
    """All cameras stream until each has `warmup + frames` answers; fps over the window from the moment the
    last camera finished its warm-up to that end (cameras served unevenly still count as they were served)."""
    import tritonclient.grpc as grpcclient

    done_times: list[list[float]] = [[] for _ in range(cameras)]
    errors = []
    start_gate = threading.Barrier(cameras)
    stop = threading.Event()
    lock = threading.Lock()
    reached: list[float] = []  # when each camera reached warmup + frames answers

    def camera(index: int) -> None:
        try:
            clip = play(pool, offset=37 * index, count=len(pool) * 2 - 2)
            with grpcclient.InferenceServerClient(url) as client:
                start_gate.wait(timeout=60)
                t = 0
                while not stop.is_set():
                    frame = clip[t % len(clip)]
                    tensor = grpcclient.InferInput(input_name, list(frame.shape), "FP32")
                    tensor.set_data_from_numpy(frame)
                    client.infer(model, [tensor], sequence_id=10_000 + index, sequence_start=t == 0,
                                 client_timeout=120)
                    done_times[index].append(time.perf_counter())
                    t += 1
                    if t == warmup + frames:
                        with lock:
                            reached.append(done_times[index][-1])
                            if len(reached) == cameras:
                                stop.set()
                # END frees the slot at once (not after the idle timeout) for the next run
                tensor.set_data_from_numpy(clip[t % len(clip)])
                client.infer(model, [tensor], sequence_id=10_000 + index, sequence_end=True, client_timeout=120)
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
    answered = sum(sum(1 for t in times if begin < t <= end) for times in done_times)
    return {"fps": answered / (end - begin), "window_s": end - begin, "frames": answered}


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
    common = dict(instances=args.instances, max_sequences=args.max_sequences, idle_timeout_us=30_000_000)
    results: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="deltaonnx-bench-triton-") as tmp:
        write_triton_repository(pnet, Path(tmp), name="pnet_dense", dense=True, **common)
        write_triton_repository(pnet, Path(tmp), name="pnet_delta", conversion={"threshold": args.threshold}, **common)
        with bundled_server.BundledTritonServer(tmp, venv) as server:
            for repeat in range(args.repeats):
                for cameras in args.cameras:
                    for model in ("pnet_dense", "pnet_delta"):
                        run = run_cameras(server.grpc_url, model, "input_1", pool, cameras, args.warmup, args.frames)
                        results.setdefault((model, cameras), []).append(run["fps"])
                        print(f"repeat {repeat + 1}: {model:10s} {cameras:2d} cameras: {run['fps']:7.1f} fps "
                              f"({run['frames']} frames in {run['window_s']:.1f} s)", flush=True)
    print(f"\nPNet {size[0]}x{size[1]}, vtest, gate {args.threshold}, {args.instances} instances x "
          f"{args.max_sequences} sequences, 1 ORT thread each; median (min-max) of {args.repeats} runs\n")
    print("| cameras | dense fps | converted fps | converted / dense |")
    print("| --- | --- | --- | --- |")
    for cameras in args.cameras:
        dense, delta = results[("pnet_dense", cameras)], results[("pnet_delta", cameras)]
        ratios = [d / s for d, s in zip(delta, dense)]
        print(f"| {cameras} | {statistics.median(dense):.1f} ({min(dense):.1f}-{max(dense):.1f}) | "
              f"{statistics.median(delta):.1f} ({min(delta):.1f}-{max(delta):.1f}) | "
              f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

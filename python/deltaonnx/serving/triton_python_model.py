"""model.py of a deltaonnx model served by Triton's Python backend (written by `deltaonnx triton`).

Each model instance (a process of its own) holds one session on 1/model.onnx: a DeltaSession when the model is
converted, an onnxruntime.InferenceSession when it is served dense. Every sequence (a camera, one correlation
ID) is one DeltaSession stream: START resets it, END drops it after its request, and a stream with no request
for the sequence batcher's idle timeout is dropped here too (Triton frees the slot but does not tell the
model). Requests carry exactly the original model's inputs and get exactly its outputs. A request that fails
gets an error response and its stream is dropped; the instance keeps serving.

Runs inside the server's Python (the first `python3` on its PATH), which needs deltaonnx and numpy < 2.
"""
import json
import os
import time

import numpy as np
import onnx
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

from deltaonnx import DeltaSession
from deltaonnx.graph_passes.metadata import is_converted


def _flag(request, name: str) -> bool:
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    return tensor is not None and bool(np.asarray(tensor.as_numpy()).reshape(-1)[0])


def _sequence_id(request) -> int:
    tensor = pb_utils.get_input_tensor_by_name(request, "CORRID")
    if tensor is not None:
        return int(np.asarray(tensor.as_numpy()).reshape(-1)[0])
    return int(request.correlation_id())


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        parameters = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
        self.idle_timeout_s = int(parameters.get("idle_timeout_us", "5000000")) / 1e6
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(parameters.get("intra_op_threads", "1"))
        options.inter_op_num_threads = 1
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.input_names = [entry["name"] for entry in config["input"]]
        self.output_names = [entry["name"] for entry in config["output"]]
        self.converted = _is_converted(path)
        if self.converted:
            self.session = DeltaSession(path, sess_options=options)
        else:
            self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        self.last_request = {}  # sequence id -> time.monotonic() of its last request

    def execute(self, requests):
        now = time.monotonic()
        responses = [self._respond(request, now) for request in requests]
        self._drop_idle(now)
        return responses

    def _respond(self, request, now: float):
        sequence = _sequence_id(request)
        try:
            feed = {}
            for name in self.input_names:
                tensor = pb_utils.get_input_tensor_by_name(request, name)
                if tensor is None:
                    raise ValueError(f"the request has no input {name!r}")
                feed[name] = tensor.as_numpy()
            if self.converted:
                if _flag(request, "START"):
                    self.session.reset(sequence)
                outputs = self.session.run(self.output_names, feed, stream=sequence)
            else:
                outputs = self.session.run(self.output_names, feed)
        except Exception as error:  # noqa: BLE001 - any failure is this request's error, never the instance's
            self._drop(sequence)
            return pb_utils.InferenceResponse(
                output_tensors=[], error=pb_utils.TritonError(f"deltaonnx: sequence {sequence}: {error}"))
        if _flag(request, "END"):
            self._drop(sequence)
        elif self.converted:
            self.last_request[sequence] = now
        tensors = [pb_utils.Tensor(name, np.ascontiguousarray(value)) for name, value in zip(self.output_names, outputs)]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def _drop(self, sequence) -> None:
        self.last_request.pop(sequence, None)
        if self.converted:
            self.session.reset(sequence)

    def _drop_idle(self, now: float) -> None:
        idle = [s for s, seen in self.last_request.items() if now - seen > self.idle_timeout_s]
        for sequence in idle:
            self._drop(sequence)

    def finalize(self):
        self.last_request.clear()
        self.session = None


def _is_converted(path: str) -> bool:
    return is_converted(onnx.load(path, load_external_data=False))

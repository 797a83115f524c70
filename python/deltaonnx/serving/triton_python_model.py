"""model.py of a deltaonnx model served by Triton's Python backend (written by `deltaonnx triton`).

Each model instance (a process of its own) holds one session on 1/model.onnx: a DeltaSession when the model is
converted, an onnxruntime.InferenceSession when it is served dense. Every sequence (a camera, one correlation
ID) is one DeltaSession stream: START resets it, END drops it after its request, and a stream with no request
for the sequence batcher's idle timeout is dropped here too (Triton frees the slot but does not tell the
model). Requests carry exactly the original model's inputs and get exactly its outputs. A request that fails
gets an error response and its stream is dropped; the instance keeps serving.

With the config parameter `debug_timing_output` (write_triton_repository(debug_timing=True)), every response
also carries that output, float64 [3]: the ms in the session's run, the ms this request took in execute()
(reading its inputs, the run, building its response), and the number of requests in that execute() call.

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


def _flag(inputs: dict, name: str) -> bool:
    tensor = inputs.get(name)
    return tensor is not None and bool(np.asarray(tensor.as_numpy()).reshape(-1)[0])


def _sequence_id(request, inputs: dict) -> int:
    tensor = inputs.get("CORRID")
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
        self.timing_output = parameters.get("debug_timing_output") or None
        self.output_names = [entry["name"] for entry in config["output"] if entry["name"] != self.timing_output]
        self.converted = _is_converted(path)
        if self.converted:
            self.session = DeltaSession(path, sess_options=options)
        else:
            self.session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
        self.last_request = {}  # sequence id -> time.monotonic() of its last request

    def execute(self, requests):
        now = time.monotonic()
        responses = [self._respond(request, now, len(requests)) for request in requests]
        self._drop_idle(now)
        return responses

    def _respond(self, request, now: float, batch: int):
        began = time.perf_counter()
        # One pass over the request's tensors (pb_utils.get_input_tensor_by_name walks them all on every call).
        inputs = {tensor.name(): tensor for tensor in request.inputs()}
        sequence = _sequence_id(request, inputs)
        try:
            feed = {}
            for name in self.input_names:
                tensor = inputs.get(name)
                if tensor is None:
                    raise ValueError(f"the request has no input {name!r}")
                feed[name] = tensor.as_numpy()
            if self.converted and _flag(inputs, "START"):
                self.session.reset(sequence)
            run_began = time.perf_counter()
            if self.converted:
                outputs = self.session.run(self.output_names, feed, stream=sequence)
            else:
                outputs = self.session.run(self.output_names, feed)
            run_ms = (time.perf_counter() - run_began) * 1e3
        except Exception as error:  # noqa: BLE001 - any failure is this request's error, never the instance's
            self._drop(sequence)
            return pb_utils.InferenceResponse(
                output_tensors=[], error=pb_utils.TritonError(f"deltaonnx: sequence {sequence}: {error}"))
        if _flag(inputs, "END"):
            self._drop(sequence)
        elif self.converted:
            self.last_request[sequence] = now
        # pb_utils.Tensor keeps a C-contiguous array as it is (and makes others so); the stub copies it once into
        # the shared memory the server reads (from_dlpack takes the same path on the CPU, it saves nothing).
        tensors = [pb_utils.Tensor(name, value) for name, value in zip(self.output_names, outputs)]
        if self.timing_output:
            request_ms = (time.perf_counter() - began) * 1e3
            timing = np.array([[run_ms, request_ms, batch]], dtype=np.float64)
            tensors.append(pb_utils.Tensor(self.timing_output, timing))
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

"""model.py that stands in for Triton's onnxruntime backend (which the bundled server lacks) in
test_triton_server.py: it runs the onnxruntime repository's own model.onnx, with the op libraries its
config's model_operations name, on exactly the tensors Triton hands each request (the model's inputs,
START, and the implicit state), and returns the model's outputs and its present states.

The python backend of Triton 2.51 hands the implicit state in but does not store what is returned, so every
request sees the first-request state: this model checks that it is what docs/serving.md says ([1,1,1,1])."""
import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

FIRST_STATE_SHAPE = (1, 1, 1, 1)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        for library in config["model_operations"]["op_library_filename"]:
            options.register_custom_ops_library(library)  # fails the load if the path does not work
        path = os.path.join(args["model_repository"], args["model_version"], "model.onnx")
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.states = [(s["input_name"], s["output_name"]) for s in config["sequence_batching"]["state"]]
        self.outputs = list(dict.fromkeys([o["name"] for o in config["output"]] + [s[1] for s in self.states]))

    def execute(self, requests):
        responses = []
        for request in requests:
            feed = {tensor.name(): tensor.as_numpy() for tensor in request.inputs()}
            wrong = {name: feed[name].shape for name, _ in self.states
                     if name not in feed or feed[name].shape != FIRST_STATE_SHAPE}
            if wrong:
                responses.append(pb_utils.InferenceResponse(
                    output_tensors=[], error=pb_utils.TritonError(f"unexpected state handed in: {wrong}")))
                continue
            values = self.session.run(self.outputs, feed)
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(n, np.ascontiguousarray(v)) for n, v in zip(self.outputs, values)]))
        return responses

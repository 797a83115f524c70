"""Models and plumbing shared by the Triton tests (test_triton_repository.py, test_triton_server.py)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def pnet_like(channels: int = 3, seed: int = 0, grey_head: bool = False) -> onnx.ModelProto:
    """A small MTCNN-PNet-shaped fully convolutional net, NCHW with free batch and size: conv 3x3, max pool
    2x2, conv 3x3, conv 3x3, then a softmax head and a box head (1x1 convs). On a 12x12 input its deepest
    maps are 1x1 (what PNet sees on a 12x12 crop)."""
    rng = np.random.default_rng(seed)
    initializers, nodes = [], []

    def conv(x, c_in, c_out, k, name, activation="Relu"):
        w = (rng.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k)).astype(np.float32)
        b = (rng.standard_normal(c_out) * 0.1 + 0.05).astype(np.float32)
        initializers.extend([numpy_helper.from_array(w, name + ".w"), numpy_helper.from_array(b, name + ".b")])
        nodes.append(helper.make_node("Conv", [x, name + ".w", name + ".b"], [name + ".out"], name=name,
                                      kernel_shape=[k, k]))
        if not activation:
            return name + ".out"
        nodes.append(helper.make_node(activation, [name + ".out"], [name + ".act"], name=name + "_act"))
        return name + ".act"

    x = conv("image", channels, 10, 3, "conv1")
    nodes.append(helper.make_node("MaxPool", [x], ["pool1"], name="pool1", kernel_shape=[2, 2], strides=[2, 2]))
    x = conv(conv("pool1", 10, 16, 3, "conv2"), 16, 32, 3, "conv3")
    nodes.append(helper.make_node("Softmax", [conv(x, 32, 2, 1, "conv4_1", None)], ["prob"], name="softmax", axis=1))
    nodes.append(helper.make_node("Identity", [conv(x, 32, 4, 1, "conv4_2", None)], ["boxes"], name="boxes"))
    outputs = [helper.make_tensor_value_info("prob", TensorProto.FLOAT, ["N", 2, "h", "w"]),
               helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 4, "h", "w"])]
    graph = helper.make_graph(nodes, "pnet_like",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", channels, "H", "W"])],
                              outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def pixel_classifier(seed: int = 1) -> onnx.ModelProto:
    """A grey-level per-pixel classifier (1x1 convs on a 1-channel image): on a 1x1 input its first state,
    X_ref [1,1,1,1], has exactly the shape Triton hands the first request of a sequence."""
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((4, 1, 1, 1)).astype(np.float32)
    b1 = np.array([0.5, 0.2, -0.1, 0.3], np.float32)
    w2 = rng.standard_normal((2, 4, 1, 1)).astype(np.float32)
    b2 = np.array([0.1, -0.2], np.float32)
    nodes = [helper.make_node("Conv", ["image", "w1", "b1"], ["h"], name="conv1", kernel_shape=[1, 1]),
             helper.make_node("Relu", ["h"], ["h.act"], name="relu1"),
             helper.make_node("Conv", ["h.act", "w2", "b2"], ["scores"], name="conv2", kernel_shape=[1, 1])]
    graph = helper.make_graph(
        nodes, "pixel_classifier", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2, "H", "W"])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


def clip(shape, n_frames: int, seed: int) -> list[np.ndarray]:
    """A static-camera clip: a fixed textured background with a few moving blobs and small sensor noise."""
    rng = np.random.default_rng(seed)
    _, c, h, w = shape
    background = rng.uniform(0.1, 0.9, size=(1, c, h, w)).astype(np.float32)
    frames = []
    yy, xx = np.mgrid[0:h, 0:w]
    for t in range(n_frames):
        frame = background + rng.normal(0, 0.01, size=background.shape).astype(np.float32)
        cy, cx = (h // 3 + 2 * t) % h, (w // 4 + 3 * t) % w
        frame[0, :, (yy - cy) ** 2 + (xx - cx) ** 2 < max(2, h // 8) ** 2] = 1.0
        frames.append(np.ascontiguousarray(frame, dtype=np.float32))
    return frames

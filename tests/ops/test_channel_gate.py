"""DeltaChannelGate (docs/ops.md#deltachannelgate): a squeeze-excite gate in one node, S = act2(W2 act1(W1 mean(X)
+ B1) + B2) with X NCHW or blocked, and its per-item change map.

Against ORT's own GlobalAveragePool -> Conv -> activation -> Conv -> activation on the NCHW tensor and the numpy
reference, in both layouts, padded channel counts, batch 2, with and without biases, for the activations a
squeeze-excite block uses; map_out marks exactly the items with a marked pixel (all without a map); the weights
given as graph inputs (transposed per run) give what constant ones give; bad shapes and attributes are refused with
the node named. The CUDA library's host code runs through its emulation.
"""
from __future__ import annotations

import numpy as np
import pytest
from onnx import helper, numpy_helper

from builders import DOMAIN, op_model, op_session, value_info
from deltaonnx import reference as ref
from test_reorder import channel_block

# (N, C, R, H, W): MobileNetV3's gates (16 -> 4 at 56 x 56, 72 -> 18, 120 -> 30), fewer channels than a block, batch 2
SHAPES = [(1, 16, 4, 14, 14), (1, 72, 18, 7, 7), (2, 120, 30, 5, 3), (1, 3, 2, 4, 6), (2, 40, 10, 1, 1)]
ACTIVATIONS = [("Relu", [], "HardSigmoid", []), ("SiLU", [], "Sigmoid", []), ("", [], "HardSigmoid", [0.25, 0.4]),
               ("LeakyRelu", [0.1], "Clip", [0.0, 1.0])]


def gate_model(weights=None, layout="blocked", channels=None, activations=ACTIVATIONS[0], name="gate_0", biases=True,
               map_in=False, map_out=True, attrs=None):
    """The op alone; `weights` (W1, B1, W2, B2) as initializers, or None: graph inputs."""
    act, act_params, gate_act, gate_params = activations
    attrs = dict(attrs or {}, activation=act, gate_activation=gate_act)
    if layout is not None:
        attrs["layout"] = layout
    if channels is not None:
        attrs["channels"] = channels
    if act_params:
        attrs["activation_params"] = act_params
    if gate_params:
        attrs["gate_activation_params"] = gate_params
    names = ["X", "W1", "B1" if biases else "", "W2", "B2" if biases else "", "M" if map_in else ""]
    node = helper.make_node("DeltaChannelGate", names, ["S", "map"] if map_out else ["S"], domain=DOMAIN, name=name,
                            **attrs)
    inputs = [value_info("X")] + ([value_info("M", 2)] if map_in else [])
    initializers = []
    if weights is None:
        inputs += [value_info(n) for n in names[1:5] if n]
    else:
        initializers = [numpy_helper.from_array(w, n) for n, w in zip(names[1:5], weights) if n]
    outputs = [value_info("S")] + ([value_info("map", 2)] if map_out else [])
    return op_model([node], inputs, outputs, initializers=initializers)


def dense_gate(x, w1, b1, w2, b2, activations):
    """ORT's own ops on the NCHW tensor: the squeeze-excite gate the op replaces."""
    from deltaonnx.graph_passes.dense_twin import _activation_nodes

    act, act_params, gate_act, gate_params = activations
    initializers = [numpy_helper.from_array(w, n) for n, w in (("W1", w1), ("B1", b1), ("W2", w2), ("B2", b2))
                    if w is not None]
    nodes = [helper.make_node("GlobalAveragePool", ["X"], ["p"])]
    extra: list = []
    source = "p"
    for w, b, a, params, out in (("W1", "B1", act, act_params, "h"), ("W2", "B2", gate_act, gate_params, "S")):
        conv_out = out if not a else f"{out}.conv"
        nodes.append(helper.make_node("Conv", [source, w] + ([b] if b1 is not None else []), [conv_out]))
        if a:
            nodes += _activation_nodes(out, a, params, conv_out, out, 17, 0, extra)
        source = out
    model = op_model(nodes, [value_info("X")], [value_info("S")], initializers=initializers + extra)
    return op_session(model, custom=False).run(None, {"X": x})[0]


def random_weights(rng, c, r, biases=True):
    w1 = (rng.standard_normal((r, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    w2 = (rng.standard_normal((c, r, 1, 1)) / np.sqrt(r)).astype(np.float32)
    b1 = rng.standard_normal(r).astype(np.float32) if biases else None
    b2 = rng.standard_normal(c).astype(np.float32) if biases else None
    return w1, b1, w2, b2


def laid_out(x, layout, b):
    return ref.to_blocked(x, b) if layout == "blocked" and b > 1 else x


def check_against_ort(seed=5, library=None, block=None):
    rng = np.random.default_rng(seed)
    b = channel_block() if block is None else block
    for layout in ("nchw", "blocked"):
        for (n, c, r, h, w), activations in zip(SHAPES, ACTIVATIONS * 2):
            for biases in (True, False):
                x = (rng.standard_normal((n, c, h, w)) * 2).astype(np.float32)
                xb = laid_out(x, layout, b)
                w1, b1, w2, b2 = random_weights(rng, c, r, biases)
                session = op_session(gate_model((w1, b1, w2, b2), layout, c, activations, biases=biases),
                                     library=library)
                s, changed = session.run(None, {"X": xb})
                want = dense_gate(x, w1, b1, w2, b2, activations)
                np.testing.assert_allclose(s, want, rtol=2e-5, atol=2e-6)
                np.testing.assert_array_equal(changed, np.ones((n, 1, 1, 1), np.uint8))
                ref_s, ref_map = ref.delta_channel_gate(
                    xb, w1, b1, w2, b2, layout=layout, channels=c, activation=activations[0],
                    activation_params=activations[1], gate_activation=activations[2],
                    gate_activation_params=activations[3], block=b)
                np.testing.assert_allclose(s, ref_s, rtol=2e-5, atol=2e-6)
                np.testing.assert_array_equal(changed, ref_map)
                # the weights as graph inputs: transposed per run, the same result
                inputs = op_session(gate_model(None, layout, c, activations, biases=biases), library=library)
                feed = {"X": xb, "W1": w1, "W2": w2, **({"B1": b1, "B2": b2} if biases else {})}
                np.testing.assert_array_equal(inputs.run(None, feed)[0], s)


@pytest.mark.sanitizer
def test_equal_ort_and_the_reference():
    check_against_ort()


@pytest.mark.sanitizer
def test_map_out_marks_items_with_a_marked_pixel(rng):
    b = channel_block()
    w1, b1, w2, b2 = random_weights(rng, 24, 6)
    session = op_session(gate_model((w1, b1, w2, b2), "blocked", 24, map_in=True))
    x = laid_out(rng.standard_normal((3, 24, 5, 7)).astype(np.float32), "blocked", b)
    marks = np.zeros((3, 1, 5, 7), np.uint8)
    marks[1, 0, 4, 6] = 1  # the last pixel of item 1
    marks[2, 0, 0, 0] = 7  # any nonzero value marks
    s, changed = session.run(None, {"X": x, "M": marks})
    np.testing.assert_array_equal(changed.reshape(-1), [0, 1, 1])
    assert changed.shape == (3, 1, 1, 1)
    np.testing.assert_array_equal(ref.delta_channel_gate(x, w1, b1, w2, b2, marks, layout="blocked", channels=24,
                                                         activation="Relu", gate_activation="HardSigmoid")[1], changed)
    # S is recomputed whatever the map says (no state): the same S as without a map
    np.testing.assert_array_equal(s, op_session(gate_model((w1, b1, w2, b2), "blocked", 24)).run(None, {"X": x})[0])
    # an empty map: every item changed
    np.testing.assert_array_equal(session.run(None, {"X": x, "M": np.zeros((0, 1, 5, 7), np.uint8)})[1].reshape(-1),
                                  [1, 1, 1])


def test_nan_reaches_s_and_no_map_output_is_fine(rng):
    w1, b1, w2, b2 = random_weights(rng, 16, 4)
    x = rng.standard_normal((1, 16, 3, 3)).astype(np.float32)
    x[0, 5, 1, 1] = np.nan
    session = op_session(gate_model((w1, b1, w2, b2), "nchw", 16, map_out=False))
    (s,) = session.run(None, {"X": x})
    assert np.isnan(s).all()  # channel 5's mean is NaN, and every hidden unit reads it


def test_bad_shapes_and_attributes_are_refused(rng):
    w1, b1, w2, b2 = random_weights(rng, 16, 4)
    x = np.zeros((1, 16, 4, 4), np.float32)
    good = (w1, b1, w2, b2)
    with pytest.raises(Exception, match=r"DeltaChannelGate node 'g'.*W1 must be \[outputs, 16, 1, 1\]"):
        op_session(gate_model((w1[:, :8], b1, w2, b2), "nchw", 16, name="g")).run(None, {"X": x})
    with pytest.raises(Exception, match=r"DeltaChannelGate node 'g'.*W2 must be \[outputs, 4, 1, 1\]"):
        op_session(gate_model((w1, b1, np.zeros((16, 5, 1, 1), np.float32), b2), "nchw", 16, name="g")).run(
            None, {"X": x})
    with pytest.raises(Exception, match=r"DeltaChannelGate node 'g'.*B2 must have shape \[16\]"):
        op_session(gate_model((w1, b1, w2, b2[:3]), "nchw", 16, name="g")).run(None, {"X": x})
    with pytest.raises(Exception, match="DeltaChannelGate node 'g'.*X has 16 channels .*not the 24"):
        op_session(gate_model(good, "nchw", 24, name="g")).run(None, {"X": x})
    with pytest.raises(Exception, match=r"DeltaChannelGate node 'g'.*map_in must be \[1, 1, 4, 4\]"):
        op_session(gate_model(good, "nchw", 16, name="g", map_in=True)).run(
            None, {"X": x, "M": np.zeros((1, 1, 4, 3), np.uint8)})
    with pytest.raises(Exception, match="DeltaChannelGate node 'h'.*unknown value 'Gelu'.*'gate_activation'"):
        op_session(gate_model(good, "nchw", 16, ("Relu", [], "Gelu", []), name="h"))
    with pytest.raises(Exception, match="DeltaChannelGate node 'h'.*'activation' does not take the channel"):
        op_session(gate_model(good, "nchw", 16, ("Softmax", [], "Sigmoid", []), name="h"))
    with pytest.raises(Exception, match="DeltaChannelGate node 'h'.*PRelu takes one slope"):
        op_session(gate_model(good, "nchw", 16, ("PRelu", [0.1, 0.2, 0.3, 0.4], "Sigmoid", []), name="h"))
    with pytest.raises(Exception, match="DeltaChannelGate node 'h'.*'layout' must be"):
        op_session(gate_model(good, "nhwc", 16, name="h"))


def test_emulated_cuda_library(emulated_cuda_library, rng):
    """b = 1 on CUDA: "blocked" is NCHW; the pool's kernel, a thread per output of each layer, one per item for the
    map."""
    check_against_ort(seed=13, library=emulated_cuda_library, block=1)
    w1, b1, w2, b2 = random_weights(rng, 16, 4)
    session = op_session(gate_model((w1, b1, w2, b2), "nchw", 16, map_in=True), library=emulated_cuda_library)
    marks = np.zeros((2, 1, 3, 3), np.uint8)
    marks[1, 0, 2, 1] = 1
    x = rng.standard_normal((2, 16, 3, 3)).astype(np.float32)
    np.testing.assert_array_equal(session.run(None, {"X": x, "M": marks})[1].reshape(-1), [0, 1])
    with pytest.raises(Exception, match=r"DeltaChannelGate node 'g'.*W1 must be"):
        op_session(gate_model((w1[:, :8], b1, w2, b2), "nchw", 16, name="g"), library=emulated_cuda_library).run(
            None, {"X": np.zeros((1, 16, 4, 4), np.float32)})

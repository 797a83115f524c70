"""One op definition for every execution provider (ops/op_definition/): the CPU library and the CUDA library
(its host code and kernel logic, through the host-emulated build) accept the same nodes, read each attribute
set the same way, refuse the same bad ones with the node and attribute named, and compute the same outputs,
single ops and whole converted models alike."""
from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import deltaonnx
from deltaonnx import reference as ref
from builders import EMPTY, conv_model, op_model, op_session, pool_model



@pytest.fixture
def libraries(cpu_op_library, emulated_cuda_library) -> dict[str, str]:
    return {"cpu": cpu_op_library, "cuda (emulated)": emulated_cuda_library}


# Attribute sets that must mean the same on every provider, each checked against the numpy reference too.
CONV_ATTRIBUTE_SETS = [
    dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], activation="Relu6"),  # Relu6 without params clips to 0..6
    dict(kernel_shape=[3, 3], activation="Clip", activation_params=[-0.5, 0.5]),
    dict(kernel_shape=[3, 3], activation="Clip"),  # no params: no clipping
    dict(kernel_shape=[3, 3], strides=[2, 1], dilations=[1, 2], pads=[2, 0, 1, 1], activation="LeakyRelu"),
    dict(activation="HardSigmoid", auto_pad="SAME_UPPER"),  # kernel_shape from W
    dict(kernel_shape=[3, 3], auto_pad="SAME_LOWER", strides=[2, 2], activation="HardSwish"),
    dict(kernel_shape=[3, 3], auto_pad="VALID", activation="PRelu", activation_params=[0.25]),
    dict(kernel_shape=[3, 3], group=2, pads=[1, 1, 1, 1], activation="PRelu", activation_params=[0.1, 0.2, 0.3, 0.4]),
    dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], activation="SiLU", threshold=0.25),
    dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], activation="Softmax", dense_fraction=1.0),
    dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], activation="Sigmoid", dense_fraction=0.0),
    dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], activation="Softmax", activation_params=[2.0]),  # 2 groups of 2
]


def _frames(rng, shape, count=4, scale=3.0):
    frames = [rng.standard_normal(shape).astype(np.float32) * scale]
    for _ in range(count - 1):
        f = frames[-1].copy()
        y, x = rng.integers(0, shape[2] - 2), rng.integers(0, shape[3] - 2)
        f[:, :, y:y + 2, x:x + 3] += rng.standard_normal((shape[0], shape[1], 2, 3)).astype(np.float32)
        frames.append(f)
    return frames


def _run_conv_stream(sess, frames):
    x_ref, y_prev, outputs = EMPTY, EMPTY, []
    for f in frames:
        y, x_ref, map_out = sess.run(None, {"X": f, "X_ref": x_ref, "Y_prev": y_prev})
        y_prev = y
        outputs.append((y, map_out))
    return outputs


@pytest.mark.parametrize("attrs", CONV_ATTRIBUTE_SETS, ids=lambda a: ",".join(f"{k}={v}" for k, v in a.items()))
def test_each_conv_attribute_set_means_the_same_on_every_provider(libraries, attrs, rng):
    W = rng.standard_normal((4, 2 if attrs.get("group", 1) == 2 else 4, 3, 3)).astype(np.float32)
    frames = _frames(rng, (1, 4, 9, 11))
    results = {kind: _run_conv_stream(op_session(conv_model(attrs, W=W, name="conv_0"), lib), frames) for kind, lib in libraries.items()}
    ref_attrs = {k: v for k, v in attrs.items()}
    x_ref, y_prev = None, None
    for i, f in enumerate(frames):
        y_ref, x_ref, _ = ref.delta_conv(f, W, None, x_ref, y_prev, **ref_attrs)
        y_prev = y_ref
        for kind, outs in results.items():
            np.testing.assert_allclose(outs[i][0], y_ref, rtol=1e-4, atol=1e-5, err_msg=f"{kind}, frame {i}")
        np.testing.assert_array_equal(results["cpu"][i][1], results["cuda (emulated)"][i][1], err_msg=f"map, frame {i}")
    if attrs.get("activation") == "Relu6":
        assert results["cpu"][0][0].max() <= 6.0 and results["cuda (emulated)"][0][0].max() <= 6.0
        assert results["cpu"][0][0].max() == 6.0  # the frames are large enough to clip


# Bad attribute sets: both libraries refuse them when the session is created, naming the node and attribute.
BAD_CONV_ATTRIBUTES = [
    (dict(kernel_shape=[3, 3], strides=[2 ** 62, 2 ** 62]), "strides"),
    (dict(kernel_shape=[3, 3], strides=[1, 2 ** 62 + 1]), "strides"),
    (dict(kernel_shape=[3, 3], strides=[2 ** 20, 1]), "strides"),
    (dict(kernel_shape=[3, 3], dilations=[2 ** 40, 1]), "dilations"),
    (dict(kernel_shape=[3, 3], pads=[0, 0, 2 ** 63 - 1, 0]), "pads"),
    (dict(kernel_shape=[3, 3], pads=[-1, 0, 0, 0]), "pads"),
    (dict(kernel_shape=[2 ** 62, 3]), "kernel_shape"),
    (dict(kernel_shape=[3, 3], threshold=1), "threshold"),  # an INT where a FLOAT belongs: never the default 0
    (dict(kernel_shape=[3, 3], threshold="0.5"), "threshold"),
    (dict(kernel_shape=[3, 3], activation=1), "activation"),
    (dict(kernel_shape=[3, 3], activation="LeakyRelu", activation_params=[0.1, 0.2]), "activation_params"),
    (dict(kernel_shape=[3, 3], activation="LeakyRelu", activation_params=[1]), "activation_params"),  # INTS
    (dict(kernel_shape=3), "kernel_shape"),  # an INT where INTS belong
    (dict(kernel_shape=[3, 3], activation="Clip", activation_params=[1.0, -1.0]), "min <= max"),
    (dict(kernel_shape=[3, 3], group=0), "group"),
    (dict(kernel_shape=[3, 3], group=[1]), "group"),
    (dict(kernel_shape=[3, 3], dense_fraction=1.5), "dense_fraction"),
    (dict(kernel_shape=[3, 3], auto_pad="SAME"), "auto_pad"),
    (dict(kernel_shape=[3, 3], activation="Softmax", activation_params=[0.0]), "positive integer"),
    (dict(kernel_shape=[3, 3], activation="Softmax", activation_params=[-2.0]), "positive integer"),
    (dict(kernel_shape=[3, 3], activation="Softmax", activation_params=[1.5]), "positive integer"),
    (dict(kernel_shape=[3, 3], activation="Softmax", activation_params=[1.0, 1.0]), "0 or 1 activation_params"),
]


@pytest.mark.parametrize("attrs, message", BAD_CONV_ATTRIBUTES, ids=lambda v: str(v)[:40])
def test_bad_conv_attributes_fail_at_session_creation_on_every_provider(libraries, attrs, message):
    W = np.ones((2, 2, 3, 3), np.float32)
    for kind, library in libraries.items():
        with pytest.raises(Exception, match=f"DeltaConv node 'conv_bad'.*{message}"):
            op_session(conv_model(attrs, W=W, name="conv_bad"), library)


def test_softmax_groups_that_do_not_divide_w_are_refused_on_every_provider(libraries, rng):
    """activation_params [G] must divide W's M: the CPU library refuses at session creation (W is constant and
    packed there), the CUDA library on the first run (it reads W then), both naming the node."""
    attrs = dict(kernel_shape=[3, 3], activation="Softmax", activation_params=[3.0])
    frame = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    for kind, library in libraries.items():
        with pytest.raises(Exception, match="DeltaConv node 'conv_bad'.*groups of 3 .* do not divide the 2"):
            session = op_session(conv_model(attrs, W=np.ones((2, 2, 3, 3), np.float32), name="conv_bad"), library)
            _run_conv_stream(session, [frame])


BAD_POOL_ATTRIBUTES = [
    (dict(kernel_shape=[2 ** 62, 2], dilations=[4, 1]), "kernel_shape"),  # used to hang
    (dict(kernel_shape=[2, 2], pads=[2 ** 63 - 1] * 4), "pads"),           # used to return lowest floats
    (dict(kernel_shape=[2, 2], strides=[2 ** 62, 1]), "strides"),
    (dict(kernel_shape=[2, 2], ceil_mode=2), "ceil_mode"),
    (dict(kernel_shape=[2, 2], storage_order=1), "storage_order"),
    (dict(strides=[2, 2]), "kernel_shape"),
    (dict(kernel_shape=[2, 2], threshold=1), "threshold"),
]


@pytest.mark.parametrize("attrs, message", BAD_POOL_ATTRIBUTES, ids=lambda v: str(v)[:40])
def test_bad_pool_attributes_fail_at_session_creation_on_every_provider(libraries, attrs, message):
    for kind, library in libraries.items():
        with pytest.raises(Exception, match=f"DeltaPool node 'pool_bad'.*{message}"):
            op_session(pool_model(attrs, name="pool_bad"), library)


def test_a_dropped_reference_runs_on_every_provider(libraries, rng):
    # What convert writes by default behind a change map: no X_ref, no X_ref_next, threshold 0.
    W = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    model = conv_model(dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), W=W, with_map=True, ref_input=False)
    frames = _frames(rng, (2, 2, 8, 9), count=5)
    maps = [np.ones((2, 1, 8, 9), np.uint8)] + [
        (np.abs(b - a).max(axis=1, keepdims=True) > 0).astype(np.uint8) for a, b in zip(frames, frames[1:])]
    for kind, library in libraries.items():
        sess = op_session(model, library)
        y_prev = EMPTY
        for i, (f, m) in enumerate(zip(frames, maps)):
            y, map_out = sess.run(None, {"X": f, "Y_prev": y_prev, "map_in": m})
            dense = ref.conv2d(f, W, None, pads=[1, 1, 1, 1])
            np.testing.assert_allclose(y, dense, rtol=1e-4, atol=1e-5, err_msg=f"{kind}, frame {i}")
            if i > 0:  # only what the map reaches is marked
                assert map_out.mean() < 1.0, kind
            y_prev = y


@pytest.mark.sanitizer
def test_shapes_of_more_than_eight_dimensions_on_every_provider(libraries, rng):
    """The ops hold shapes inline, up to 8 dimensions (op_definition/tensor_shape.h): a longer state is another
    shape (rule 1, every pixel redone), a longer X or map is refused, naming the shape."""
    W = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    long_state = np.zeros((1, 2, 5, 6, 1, 1, 1, 1, 1), np.float32)
    union = helper.make_node("DeltaMapUnion", ["a", "b"], ["u"], domain=deltaonnx.DOMAIN, name="union_0")
    union_model = op_model([union], [("a", TensorProto.UINT8), ("b", TensorProto.UINT8)], [("u", TensorProto.UINT8)])
    long_map = np.ones((1,) * 8 + (2,), np.uint8)
    for kind, library in libraries.items():
        sess = op_session(conv_model(dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), W=W), library)
        y, _, map_out = sess.run(None, {"X": x, "X_ref": long_state, "Y_prev": long_state})
        np.testing.assert_allclose(y, ref.conv2d(x, W, None, pads=[1, 1, 1, 1]), rtol=1e-4, atol=1e-5, err_msg=kind)
        assert map_out.all(), kind
        with pytest.raises(Exception, match=r"X must be 4-D NCHW, got shape \[1,2,5,6,1,1,1,1,\.\.\. \(9 dimensions\)\]"):
            sess.run(None, {"X": long_state, "X_ref": EMPTY, "Y_prev": EMPTY})
        with pytest.raises(Exception, match=r"union_0.*at most 8 dimensions, got \[1,1,1,1,1,1,1,1,\.\.\. \(9 dimensions\)\]"):
            op_session(union_model, library).run(None, {"a": long_map, "b": long_map})


def test_an_empty_batch_gives_empty_outputs_on_every_provider(libraries):
    W = np.ones((2, 2, 3, 3), np.float32)
    model = conv_model(dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), W=W, with_map=True, ref_input=False)
    for kind, library in libraries.items():
        y, map_out = op_session(model, library).run(
            None, {"X": np.zeros((0, 2, 5, 5), np.float32), "Y_prev": EMPTY, "map_in": np.zeros((0, 1, 5, 5), np.uint8)})
        assert y.shape == (0, 2, 5, 5) and map_out.shape == (0, 1, 5, 5), kind


# ---------------------------------------------------------------------------------------------------------
# whole converted models, default options, CPU library against the CUDA library's emulation
# ---------------------------------------------------------------------------------------------------------

def _state_pairs(sess: ort.InferenceSession) -> list[tuple[str, str]]:
    meta = json.loads(sess.get_modelmeta().custom_metadata_map["deltaonnx"])
    return [(s["past"], s["present"]) for s in meta["state"]]


def _run_protocol(sess: ort.InferenceSession, input_name: str, frames) -> list[list[np.ndarray]]:
    """The state protocol of docs/state_protocol.md with plain ORT: empty state first, then each present output
    fed back as the next past input."""
    pairs = _state_pairs(sess)
    types = {i.name: i.type for i in sess.get_inputs()}
    state = {past: np.zeros((0, 0, 0, 0), np.uint8 if types[past] == "tensor(uint8)" else np.float32)
             for past, _ in pairs}
    names = [o.name for o in sess.get_outputs()]
    results = []
    for f in frames:
        out = dict(zip(names, sess.run(None, {input_name: f, **state})))
        state = {past: out[present] for past, present in pairs}
        results.append([out[o.name] for o in sess.get_outputs() if not o.name.startswith("deltaonnx.")])
    return results


def test_every_zoo_model_converted_with_defaults_runs_the_same_on_every_provider(libraries):
    pytest.importorskip("torch")
    import zoo

    rng = np.random.default_rng(5)
    for name in sorted(zoo.BUILDERS):
        model = zoo.BUILDERS[name]()
        converted = deltaonnx.convert(model)  # defaults: threshold 0, references dropped behind maps
        dense = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        (inp,) = dense.get_inputs()
        frames = _frames(rng, tuple(inp.shape), count=4, scale=1.0)
        frames.insert(2, frames[1].copy())  # an identical frame
        runs = {kind: _run_protocol(op_session(converted, lib), inp.name, frames) for kind, lib in libraries.items()}
        for i, f in enumerate(frames):
            expected = dense.run(None, {inp.name: f})
            for kind, outs in runs.items():
                for got, want in zip(outs[i], expected):
                    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=f"{name} on {kind}, frame {i}")


def test_a_converted_model_with_dropped_references_takes_an_empty_batch_as_dense_ort_does(cpu_op_library, rng):
    # A frame with batch 0 gives dense ORT empty outputs; the converted model (references dropped behind maps)
    # must do the same, not fail for want of a change map (an empty map has a null data pointer).
    conv = lambda name, i, o, w: (helper.make_node("Conv", [i, name + "_w"], [o], pads=[1, 1, 1, 1], name=name),
                                  numpy_helper.from_array(rng.standard_normal(w).astype(np.float32), name + "_w"))
    c0, w0 = conv("c0", "x", "a", (4, 3, 3, 3))
    c1, w1 = conv("c1", "p", "y", (2, 4, 3, 3))
    nodes = [c0, helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]), c1]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, None, None])],
                              initializer=[w0, w1])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    converted = deltaonnx.convert(model)
    assert json.loads(dict((p.key, p.value) for p in converted.metadata_props)["deltaonnx"]).get("dropped_references")
    session = deltaonnx.DeltaSession(converted)
    dense = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for batch in (1, 0, 2):
        x = rng.standard_normal((batch, 3, 8, 10)).astype(np.float32)
        (got,) = session.run(None, {"x": x})
        (want,) = dense.run(None, {"x": x})
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("hw", [(64, 128), (96, 100)])  # 8192 and 9600 marks: past the count's byte lanes
def test_a_dropped_reference_counts_a_large_marked_map(hw, rng):
    """Behind a map with a dropped reference, the op counts the map's marks to find what changed
    (ops/common/change_map.cc count_marks, byte lanes summed before any passes 255). Every pixel marked and
    changed on a plane past that limit: every output is new (a count that wrapped to 0 would keep Y_prev)."""
    W = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    sess = op_session(conv_model(dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), W=W, with_map=True, ref_input=False))
    ones = np.ones((1, 1, *hw), np.uint8)
    y_prev = EMPTY
    for i in range(3):
        x = rng.standard_normal((1, 2, *hw)).astype(np.float32)
        y, map_out = sess.run(None, {"X": x, "Y_prev": y_prev, "map_in": ones})
        np.testing.assert_allclose(y, ref.conv2d(x, W, None, pads=[1, 1, 1, 1]), rtol=1e-4, atol=1e-5,
                                   err_msg=f"frame {i}")
        assert map_out.all(), f"frame {i}"
        y_prev = y

"""The block rule (docs/design.md#rule-2b) for the inner thresholds of DeltaConv/DeltaPool: the engines (through
deltaonnx._native, every SIMD variant) against the numpy reference, exactness at tau 0, the block invariants,
the attributes through ORT (CPU library; the CUDA library refuses them) and through convert."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from deltaonnx import reference as ref

native = pytest.importorskip("deltaonnx._native")
from test_gate_engine import EMPTY, VARIANTS, variant  # noqa: E402 - after the skip when _native is not built
from test_gate_engine import frames as gate_frames  # noqa: E402
from builders import conv_model, op_session, pool_model  # noqa: E402


def frames(rng, shape, count):
    """test_gate_engine's noisy scene with a moving patch and NaNs, at noise small enough that most blocks'
    means stay within tau while single pixels do not."""
    return gate_frames(rng, shape, count, noise=0.04)


def block_invariants_hold(x, x_ref_next, tau, k, hard):
    """Rule 5 under 2b: every block mean of X - X_ref_next within tau per channel, every pixel within tau_hard."""
    d = (x - x_ref_next).astype(np.float32)
    assert np.all(np.abs(d) <= np.float32(hard)), "a pixel left beyond tau_hard"
    n, c, h, w = d.shape
    for y0 in range(0, h, k):
        for x0 in range(0, w, k):
            mean = d[:, :, y0:y0 + k, x0:x0 + k].astype(np.float64).mean(axis=(2, 3))
            assert np.all(np.abs(mean) <= tau * (1 + 1e-5) + 1e-7), f"block ({y0},{x0}) mean beyond tau"


CONV_CASES = [  # (kernel, strides, pads, group, k, tau, hard)
    ((3, 3), (1, 1), (1, 1, 1, 1), 1, 4, 0.1, None),
    ((3, 3), (2, 2), (1, 1, 1, 1), 1, 2, 0.1, 0.3),
    ((1, 1), (1, 1), (0, 0, 0, 0), 1, 3, 0.05, 0.4),
    ((3, 3), (1, 1), (1, 1, 1, 1), 6, 8, 0.02, None),  # depthwise
]


@pytest.mark.parametrize("simd", VARIANTS)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: f"k{c[0][0]}s{c[1][0]}g{c[3]}b{c[4]}")
@pytest.mark.parametrize("with_map", [False, True])
def test_delta_conv_block_rule_equals_reference(simd, case, with_map):
    simd = variant(simd)
    kernel, strides, pads, group, k, tau, hard = case
    rng = np.random.default_rng(hash(case) % 2**32)
    shape = (2, 6, 19, 23)
    W = rng.standard_normal((6, 6 // group) + kernel).astype(np.float32)
    B = rng.standard_normal(6).astype(np.float32)
    x_ref_r = y_prev_r = x_ref_c = y_prev_c = None
    for i, x in enumerate(frames(rng, shape, 6)):
        map_in = (rng.random((2, 1) + shape[2:]) < 0.7).astype(np.uint8) if with_map and i else None
        want = ref.delta_conv(x, W, B, x_ref_r, y_prev_r, map_in, strides=strides, pads=pads, group=group,
                              activation="Relu", threshold=tau, gate="block", gate_block=k, gate_hard=hard)
        got = native.delta_conv(x, W, B, EMPTY if x_ref_c is None else x_ref_c,
                                EMPTY if y_prev_c is None else y_prev_c, map_in, strides=list(strides),
                                pads=list(pads), group=group, activation="Relu", threshold=tau, gate="block",
                                gate_block=k, gate_hard=-1.0 if hard is None else hard, simd=simd)
        np.testing.assert_array_equal(got[2], want[2], err_msg=f"map_out, frame {i}")
        np.testing.assert_array_equal(got[1], want[1], err_msg=f"X_ref_next, frame {i}")
        np.testing.assert_allclose(got[0], want[0], rtol=1e-4, atol=1e-4, err_msg=f"Y, frame {i}")
        x_ref_r, y_prev_r, x_ref_c, y_prev_c = want[1], want[0], got[1], got[0]
        if i and not with_map and not np.isnan(x).any():
            block_invariants_hold(x, got[1], tau, k, 3 * tau if hard is None else hard)


@pytest.mark.parametrize("simd", VARIANTS)
@pytest.mark.parametrize("k, tau, hard", [(2, 0.1, None), (4, 0.3, 0.6)])
def test_delta_pool_block_rule_equals_reference(simd, k, tau, hard):
    simd = variant(simd)
    rng = np.random.default_rng(k)
    shape = (1, 5, 17, 22)
    state_r = state_c = (None, None)
    for i, x in enumerate(frames(rng, shape, 6)):
        want = ref.delta_pool(x, *state_r, kernel_shape=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), threshold=tau,
                              gate="block", gate_block=k, gate_hard=hard)
        got = native.delta_pool(x, *(EMPTY if s is None else s for s in state_c), kernel_shape=[3, 3],
                                strides=[2, 2], pads=[1, 1, 1, 1], threshold=tau, gate="block", gate_block=k,
                                gate_hard=-1.0 if hard is None else hard, simd=simd)
        np.testing.assert_array_equal(got[2], want[2], err_msg=f"map_out, frame {i}")
        np.testing.assert_array_equal(got[1], want[1], err_msg=f"X_ref_next, frame {i}")
        np.testing.assert_array_equal(got[0], want[0], err_msg=f"Y, frame {i}")
        state_r, state_c = (want[1], want[0]), (got[1], got[0])
        if i and not np.isnan(x).any():
            block_invariants_hold(x, got[1], tau, k, 3 * tau if hard is None else hard)


@pytest.mark.parametrize("simd", VARIANTS)
@pytest.mark.parametrize("k", [1, 4, 8])
def test_block_rule_at_tau_zero_equals_dense_conv(simd, k):
    simd = variant(simd)
    rng = np.random.default_rng(5)
    W = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    x_ref = y_prev = EMPTY
    for x in frames(rng, (1, 4, 20, 26), 5):
        x = np.nan_to_num(x, nan=0.5)
        y, x_ref, _ = native.delta_conv(x, W, None, x_ref, y_prev, pads=[1, 1, 1, 1], threshold=0.0, gate="block",
                                        gate_block=k, simd=simd)
        y_prev = y
        np.testing.assert_allclose(y, ref.conv2d(x, W, None, pads=(1, 1, 1, 1)), rtol=1e-4, atol=1e-4)
        np.testing.assert_array_equal(x_ref, x)


def test_block_rule_differs_from_pixel_rule():
    """Small changes spread over a block pass the block rule but not the pixel rule (else the attribute would
    mean nothing); one large pixel moves its whole block."""
    x0 = np.zeros((1, 1, 8, 8), np.float32)
    x1 = x0.copy()
    x1[0, 0, 0:4, 0:4] = np.where(np.indices((4, 4)).sum(0) % 2, 0.15, -0.15)  # mean 0, pixels beyond 0.1
    x1[0, 0, 6, 6] = 0.5  # beyond tau_hard 0.3
    W = np.ones((1, 1, 1, 1), np.float32)
    y0, r0, _ = native.delta_conv(x0, W, None, EMPTY, EMPTY, threshold=0.1, gate="block", gate_block=4)
    _, r_block, m_block = native.delta_conv(x1, W, None, r0, y0, threshold=0.1, gate="block", gate_block=4)
    _, _, m_pixel = native.delta_conv(x1, W, None, r0, y0, threshold=0.1)
    assert m_pixel[0, 0, 0:4, 0:4].all() and m_block[0, 0, 0:4, 0:4].sum() == 0
    assert m_block[0, 0, 4:8, 4:8].all() and m_block.sum() == 16
    np.testing.assert_array_equal(r_block[0, 0, 4:8, 4:8], x1[0, 0, 4:8, 4:8])


@pytest.mark.parametrize("bad, message", [(dict(gate="blocks"), "rule must be"), (dict(gate="block", gate_block=0), "gate_block"),
                                          (dict(gate="block", threshold=0.1, gate_hard=0.05), "gate_hard")])
def test_pybind_refuses_bad_gate_arguments(bad, message):
    x = np.zeros((1, 1, 4, 4), np.float32)
    with pytest.raises(ValueError, match=message):
        native.delta_conv(x, np.ones((1, 1, 1, 1), np.float32), None, EMPTY, EMPTY, **bad)


# --- through ORT: the attributes gate, gate_block, gate_hard ------------------------------------------------

BLOCK_ATTRIBUTES = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], threshold=0.1, gate="block", gate_block=4, gate_hard=0.3)


def test_cpu_library_runs_the_block_rule_as_the_reference(cpu_op_library):

    rng = np.random.default_rng(3)
    W = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    sess = op_session(conv_model(BLOCK_ATTRIBUTES, W=W, name="conv_0"), cpu_op_library)
    x_ref, y_prev, r_ref, r_prev = EMPTY, EMPTY, None, None
    for i, x in enumerate(frames(rng, (1, 3, 18, 21), 6)):
        y, x_ref, map_out = sess.run(None, {"X": x, "X_ref": x_ref, "Y_prev": y_prev})
        y_prev = y
        r_prev, r_ref, r_map = ref.delta_conv(x, W, None, r_ref, r_prev, pads=(1, 1, 1, 1), threshold=0.1,
                                              gate="block", gate_block=4, gate_hard=0.3)
        np.testing.assert_array_equal(map_out, r_map, err_msg=f"frame {i}")
        np.testing.assert_array_equal(x_ref, r_ref, err_msg=f"frame {i}")
        np.testing.assert_allclose(y, r_prev, rtol=1e-4, atol=1e-4, err_msg=f"frame {i}")


@pytest.mark.parametrize("bad, message", [(dict(gate="blocks"), "attribute 'gate'"), (dict(gate=1), "gate"),
                                          (dict(gate="block", gate_block=0), "gate_block"),
                                          (dict(gate="block", gate_hard=0.05), "gate_hard")])
def test_bad_gate_attributes_are_refused_at_session_creation(cpu_op_library, bad, message):

    attrs = dict(kernel_shape=[1, 1], threshold=0.1, **bad)
    with pytest.raises(Exception, match=message):
        op_session(conv_model(attrs, W=np.ones((1, 1, 1, 1), np.float32), name="conv_bad"), cpu_op_library)


def test_cuda_library_refuses_the_block_rule(emulated_cuda_library):

    W = np.ones((2, 3, 3, 3), np.float32)
    with pytest.raises(Exception, match="attribute 'gate' = \"block\" is not implemented by the CUDA"):
        op_session(conv_model(BLOCK_ATTRIBUTES, W=W, name="conv_0"), emulated_cuda_library)
    pool = dict(kernel_shape=[2, 2], strides=[2, 2], threshold=0.1, gate="block")
    with pytest.raises(Exception, match="attribute 'gate'"):
        op_session(pool_model(pool, name="pool_0"), emulated_cuda_library)
    op_session(conv_model({**BLOCK_ATTRIBUTES, "gate": "pixel"}, W=W, name="conv_0"), emulated_cuda_library)


# --- convert(inner_gate=...) --------------------------------------------------------------------------------

def _inner_ops(converted):
    from builders import DOMAIN

    return [n for n in converted.graph.node if n.domain == DOMAIN and n.op_type in ("DeltaConv", "DeltaPool")]


def test_convert_writes_the_block_rule_on_inner_ops_only(rng):
    import deltaonnx
    from conversion import attr
    zoo = pytest.importorskip("zoo")

    model = zoo.yolov8_like()
    converted = deltaonnx.convert(model, threshold=0.05, inner_threshold=0.1, inner_gate="block", inner_gate_block=2)
    ops = _inner_ops(converted)
    inner = [n for n in ops if attr(n, "threshold") == pytest.approx(0.1)]
    outer = [n for n in ops if n not in inner]
    assert inner and outer
    assert all(attr(n, "gate") in ("block", b"block") and attr(n, "gate_block") == 2 for n in inner)
    assert all(not any(a.name == "gate" for a in n.attribute) for n in outer)
    pixel = deltaonnx.convert(model, threshold=0.05, inner_threshold=0.1)
    assert not any(a.name.startswith("gate") for n in _inner_ops(pixel) for a in n.attribute)


def test_convert_per_node_inner_gates_and_clear_errors(rng):
    import deltaonnx
    from deltaonnx.convert import ConversionError
    from conversion import attr
    zoo = pytest.importorskip("zoo")

    model = zoo.yolov8_like()
    from conversion import metadata_of

    plain = metadata_of(deltaonnx.convert(model, inner_threshold=0.1))["nodes"]
    names = [entry["source"] for entry in plain if entry["decision"] == "converted"][1:3]
    converted = deltaonnx.convert(model, inner_threshold=0.1, inner_gates={names[0]: "block:4:0.5", names[1]: "pixel"},
                                  inner_gate="block")
    by_source = {entry["source"]: entry for entry in metadata_of(converted)["nodes"]}
    assert by_source[names[0]]["inner_gate"] == {"gate_block": 4, "gate_hard": 0.5}
    assert by_source[names[1]]["inner_gate"] is None
    node = next(n for n in _inner_ops(converted) if n.name == by_source[names[0]]["name"])
    assert attr(node, "gate_block") == 4 and attr(node, "gate_hard") == pytest.approx(0.5)
    with pytest.raises(ConversionError, match="unknown node names in inner_gates"):
        deltaonnx.convert(model, inner_gates={"no_such_node": "block"})
    with pytest.raises(ConversionError, match="inner_gates"):
        deltaonnx.convert(model, inner_gates={names[0]: "blocky"})
    with pytest.raises(ConversionError, match="inner_gate must be one of"):
        deltaonnx.convert(model, inner_gate="tile")
    with pytest.raises(ConversionError, match="gate_hard"):
        deltaonnx.convert(model, inner_threshold=0.3, inner_gates={names[0]: "block:4:0.1"})


def test_converted_model_with_inner_block_rule_runs_as_the_reference_evaluator(cpu_op_library, rng):
    import deltaonnx
    from conversion import StatefulRunner, video
    zoo = pytest.importorskip("zoo")

    model = zoo.yolov8_like()
    converted = deltaonnx.convert(model, threshold=0.02, inner_threshold=0.1, inner_gate="block", inner_gate_block=2)
    shape = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    name = model.graph.input[0].name
    in_ort, in_numpy = StatefulRunner(converted, cpu_op_library), StatefulRunner(converted)
    outputs = [o.name for o in model.graph.output]
    for index, frame in enumerate(video(shape, 6, rng)):
        got, want = in_ort.run({name: frame}), in_numpy.run({name: frame})
        for out in outputs:
            np.testing.assert_allclose(got[out], want[out], rtol=1e-3, atol=1e-3, err_msg=f"{out}, frame {index}")


# --- CLI: convert --inner-gate, bench --inner-gate sweeps --------------------------------------------------

def test_cli_convert_and_bench_sweep_the_inner_gate(cpu_op_library, tmp_path, capsys):
    import json

    from test_bench import run_cli, write_clip
    from conversion import attr
    zoo = pytest.importorskip("zoo")

    model, clip = tmp_path / "yolo.onnx", write_clip(tmp_path / "clip.avi", (64, 96), n_frames=6)
    onnx.save(zoo.with_plausible_boxes(zoo.yolov8_like((64, 64))), model)
    per_node = tmp_path / "gates.json"
    per_node.write_text(json.dumps({"no_such_node": "block"}))
    code, _, err = run_cli(capsys, "convert", model, "-o", tmp_path / "bad.onnx", "--inner-gates", per_node)
    assert code == 2 and "unknown node names in inner_gates" in err
    code, _, err = run_cli(capsys, "convert", model, "-o", tmp_path / "c.onnx", "--inner-threshold", "0.1",
                           "--inner-gate", "block", "--inner-gate-block", "2", "--inner-gate-hard", "0.4")
    assert code == 0, err
    inner = [n for n in _inner_ops(onnx.load(str(tmp_path / "c.onnx"))) if attr(n, "threshold") > 0]
    assert inner and all(attr(n, "gate_block") == 2 and attr(n, "gate_hard") == pytest.approx(0.4) for n in inner)
    out = tmp_path / "sweep.json"
    code, stdout, err = run_cli(capsys, "bench", model, "--video", clip, "--frames", 4, "--warmup", 1,
                                "--profile-frames", 0, "--inner-threshold", "0.1", "--inner-gate", "pixel,block:2",
                                "--json", out, "--quiet")
    assert code == 0, err
    runs = json.loads(out.read_text())["runs"]
    assert [r["inner_gate"]["rule"] for r in runs] == ["pixel", "block"] and runs[1]["inner_gate"]["block"] == 2
    assert "inner_gate=block2" in stdout

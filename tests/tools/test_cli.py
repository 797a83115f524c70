"""`python -m deltaonnx convert|inspect`: outputs, the report, and user errors (one line on stderr starting
with `deltaonnx: error:`, exit code 2, no traceback unless --verbose, the input file untouched)."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from deltaonnx.cli import main


def _model(with_conv: bool = True) -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    weight = numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "W")
    if with_conv:
        nodes = [helper.make_node("Conv", ["x", "W"], ["y"], name="conv", pads=[1, 1, 1, 1]),
                 helper.make_node("Relu", ["y"], ["r"], name="relu"),
                 helper.make_node("MaxPool", ["r"], ["out"], name="pool", kernel_shape=[2, 2], strides=[2, 2])]
        inits = [weight]
    else:
        nodes, inits = [helper.make_node("Relu", ["x"], ["out"])], []
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 10
    return model


@pytest.fixture
def model_path(tmp_path):
    path = tmp_path / "model.onnx"
    onnx.save(_model(), str(path))
    return path


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_user_error(code, err, message_part):
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("deltaonnx: error: "), err
    assert message_part in lines[0], err
    assert "Traceback" not in err


# --- convert -------------------------------------------------------------------------------------------


def test_convert_writes_beside_the_input_and_prints_the_report(capsys, model_path):
    before = _digest(model_path)
    code, out, err = run_cli(capsys, "convert", model_path, "--threshold", "0.05")
    assert code == 0, err
    output = model_path.with_name("model.delta.onnx")
    assert output.is_file()
    assert _digest(model_path) == before
    converted = onnx.load(str(output))
    meta = json.loads({p.key: p.value for p in converted.metadata_props}["deltaonnx"])
    assert meta["threshold"] == pytest.approx(0.05)
    assert [n["source"] for n in meta["nodes"]] == ["conv", "pool"]
    assert "conv" in out and "DeltaConv_0" in out and "converted" in out and "GFLOPs" in out
    assert f"wrote {output}" in out
    assert "of conv FLOPs" in out


def test_convert_options_reach_the_model(capsys, model_path, tmp_path):
    thresholds = tmp_path / "taus.json"
    thresholds.write_text(json.dumps({"pool": 0.2}))
    output = tmp_path / "out" / "converted.onnx"
    output.parent.mkdir()
    code, _, err = run_cli(capsys, "convert", model_path, "-o", output, "--inner-threshold", "0.01",
                           "--thresholds", thresholds, "--dense-fraction", "0.25", "--all")
    assert code == 0, err
    converted = onnx.load(str(output))
    attrs = {n.name: {a.name: helper.get_attribute_value(a) for a in n.attribute} for n in converted.graph.node}
    assert attrs["DeltaPool_0"]["threshold"] == pytest.approx(0.2)
    assert attrs["DeltaConv_0"]["threshold"] == 0.0  # reads the model input: the (default) input gate
    assert attrs["DeltaConv_0"]["dense_fraction"] == pytest.approx(0.25)


def test_refuses_to_overwrite_the_input(capsys, model_path):
    before = _digest(model_path)
    code, _, err = run_cli(capsys, "convert", model_path, "-o", model_path)
    assert_user_error(code, err, "refusing to overwrite the input model")
    link = model_path.with_name("link.onnx")
    os.symlink(model_path, link)
    code, _, err = run_cli(capsys, "convert", model_path, "-o", link)
    assert_user_error(code, err, "refusing to overwrite the input model")
    hard = model_path.with_name("hard.onnx")
    os.link(model_path, hard)
    code, _, err = run_cli(capsys, "convert", hard, "-o", model_path)
    assert_user_error(code, err, "refusing to overwrite the input model")
    assert _digest(model_path) == before


def test_user_errors_are_one_line_with_exit_code_2(capsys, tmp_path, model_path):
    code, _, err = run_cli(capsys, "convert", tmp_path / "missing.onnx")
    assert_user_error(code, err, "no such file")

    not_onnx = tmp_path / "notes.onnx"
    not_onnx.write_text("these are not the weights you are looking for\n")
    code, _, err = run_cli(capsys, "convert", not_onnx)
    assert_user_error(code, err, "is not an ONNX model")

    code, _, err = run_cli(capsys, "convert", model_path, "-o", tmp_path)
    assert_user_error(code, err, "is a directory")

    code, _, err = run_cli(capsys, "convert", model_path, "-o", tmp_path / "no" / "dir" / "x.onnx")
    assert_user_error(code, err, "does not exist")

    relu_only = tmp_path / "relu.onnx"
    onnx.save(_model(with_conv=False), str(relu_only))
    code, _, err = run_cli(capsys, "convert", relu_only)
    assert_user_error(code, err, "no convertible node")
    assert not (tmp_path / "relu.delta.onnx").exists()

    for name, text, message in [("bad.json", "{conv: 0.1", "is not valid JSON"),
                                ("list.json", "[0.1]", "must hold a JSON object"),
                                ("negative.json", '{"conv": -1}', "must be a number >= 0"),
                                ("unknown.json", '{"conv": 0.1, "not_a_node": 0.2}', "unknown node names in thresholds")]:
        thresholds = tmp_path / name
        thresholds.write_text(text)
        code, _, err = run_cli(capsys, "convert", model_path, "--thresholds", thresholds)
        assert_user_error(code, err, message)
    assert "'not_a_node'" in err and "'conv'" not in err  # the last: only the unknown name is listed

    code, _, err = run_cli(capsys, "convert", model_path, "--threshold", "-0.1")
    assert_user_error(code, err, "--threshold")

    code, _, err = run_cli(capsys, "convert", model_path, "--dense-fraction", "1.5")
    assert_user_error(code, err, "--dense-fraction")


def test_already_converted_model_is_refused(capsys, model_path):
    assert run_cli(capsys, "convert", model_path)[0] == 0
    converted = model_path.with_name("model.delta.onnx")
    before = _digest(converted)
    code, _, err = run_cli(capsys, "convert", converted, "-o", model_path.with_name("again.onnx"))
    assert_user_error(code, err, "already converted")
    assert _digest(converted) == before
    assert not model_path.with_name("again.onnx").exists()


def test_verbose_shows_the_traceback(capsys, tmp_path):
    relu_only = tmp_path / "relu.onnx"
    onnx.save(_model(with_conv=False), str(relu_only))
    code, _, err = run_cli(capsys, "convert", relu_only, "--verbose")
    assert code == 2
    assert "Traceback" in err and "ConversionError" in err
    assert err.strip().splitlines()[-1].startswith("deltaonnx: error: no convertible node")


# --- inspect -------------------------------------------------------------------------------------------


def test_inspect_unconverted_model_shows_what_convert_would_do(capsys, model_path):
    before = _digest(model_path)
    code, out, err = run_cli(capsys, "inspect", model_path)
    assert code == 0, err
    assert "not converted" in out and "would convert 1/1 Conv and 1/1 MaxPool" in out
    assert _digest(model_path) == before
    assert sorted(p.name for p in model_path.parent.iterdir()) == ["model.onnx"]


def test_inspect_converted_model_reads_its_metadata(capsys, model_path):
    run_cli(capsys, "convert", model_path, "--threshold", "0.1")
    code, out, err = run_cli(capsys, "inspect", model_path.with_name("model.delta.onnx"))
    assert code == 0, err
    assert "converted by deltaonnx" in out
    assert "DeltaConv_0" in out and "DeltaPool_0" in out
    assert "threshold 0.1" in out
    # The block gate (convert's default, 0.1): its X_ref; Conv and MaxPool exact behind maps: Y only.
    assert "state: 3 past inputs / present outputs; change maps: 3 outputs" in out
    assert "input gate: block 8x8, every pixel within 0.4 (DeltaGate_0)" in out
    run_cli(capsys, "convert", model_path, "--threshold", "0.1", "--gate", "pixel", "-o",
            str(model_path.with_name("pixel.delta.onnx")))
    code, out, err = run_cli(capsys, "inspect", model_path.with_name("pixel.delta.onnx"))
    # Conv (the pixel gate, 0.1): X_ref and Y; MaxPool (exact, behind the conv's map): Y only (no X_ref kept).
    assert code == 0 and "state: 3 past inputs / present outputs; change maps: 2 outputs" in out
    assert "input gate: per pixel, in each op reading the frame" in out


def _dynamic_model_path(tmp_path):
    """_model() with dynamic H and W, as PNet and NudeNet's 320n are exported."""
    model = _model()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "H", "W"
    path = tmp_path / "dynamic.onnx"
    onnx.save(model, str(path))
    return path


CONV_GFLOPS_480x640 = f"{2 * 8 * 3 * 9 * 480 * 640 / 1e9:.3f}"  # 0.133


def test_inspect_counts_flops_of_a_dynamic_model_at_the_given_input_shape(capsys, tmp_path):
    path = _dynamic_model_path(tmp_path)
    code, out, _ = run_cli(capsys, "inspect", path)
    assert code == 0 and "conv FLOPs unknown for 1 of 1 convs" in out and "--input-shape" in out

    code, out, err = run_cli(capsys, "inspect", path, "--input-shape", "x=1x3x480x640")
    assert code == 0, err
    assert f"covering 100.0% of conv FLOPs ({CONV_GFLOPS_480x640} of {CONV_GFLOPS_480x640} GFLOPs" in out, out
    assert "--input-shape" not in out

    run_cli(capsys, "convert", path)
    converted = tmp_path / "dynamic.delta.onnx"
    code, out, _ = run_cli(capsys, "inspect", converted)
    assert code == 0 and "conv FLOPs unknown for 1 of 1 convs" in out
    code, out, err = run_cli(capsys, "inspect", converted, "--input-shape", "1x3x480x640")  # the one input, unnamed
    assert code == 0, err
    assert f"covering 100.0% of conv FLOPs ({CONV_GFLOPS_480x640} of {CONV_GFLOPS_480x640} GFLOPs" in out, out
    pool_row = next(line for line in out.splitlines() if line.startswith("pool "))
    assert f"{8 * 4 * 240 * 320 / 1e9:.3f}" in pool_row.split(), pool_row  # 0.002: the pool counted too


@pytest.mark.parametrize("shape, message", [
    ("y=1x3x64x64", "no such input"),
    ("x=1x3x64", "rank 4"),
    ("x=2x3x64x64", "dim 0 is fixed at 1"),
    ("1x3xHx64", "[NAME=]DIMS"),
    ("x=1x0x64x64", "[NAME=]DIMS"),
])
def test_inspect_input_shape_errors(capsys, tmp_path, shape, message):
    code, _, err = run_cli(capsys, "inspect", _dynamic_model_path(tmp_path), "--input-shape", shape)
    assert_user_error(code, err, message)


def test_inspect_errors(capsys, tmp_path):
    code, _, err = run_cli(capsys, "inspect", tmp_path / "missing.onnx")
    assert_user_error(code, err, "no such file")


# --- the real entry point ------------------------------------------------------------------------------


def test_python_dash_m_entry_point(model_path):
    ok = subprocess.run([sys.executable, "-m", "deltaonnx", "convert", str(model_path)],
                        capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert model_path.with_name("model.delta.onnx").is_file()
    refused = subprocess.run([sys.executable, "-m", "deltaonnx", "convert", str(model_path), "-o", str(model_path)],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2
    assert refused.stderr.startswith("deltaonnx: error: refusing to overwrite")
    assert "Traceback" not in refused.stderr
    usage = subprocess.run([sys.executable, "-m", "deltaonnx"], capture_output=True, text=True, timeout=120)
    assert usage.returncode == 2
    assert usage.stderr.startswith("deltaonnx: error:")

"""Real third-party models (fetched into a cache by models/real_material.py; skipped when offline) convert
and equal dense ORT at threshold 0."""
from __future__ import annotations


import numpy as np
import onnx
import pytest

import deltaonnx
from deltaonnx.convert import convert_with_report, inspect_model
from conversion import REAL_MODELS, assert_same_as_dense, fetched_real_model


@pytest.mark.parametrize("name", sorted(REAL_MODELS))
def test_real_model_at_threshold_zero_equals_dense_ort(cpu_op_library, name):
    synthetic_video = pytest.importorskip("synthetic_video")
    _, layout, resolutions = REAL_MODELS[name]
    path = fetched_real_model(name)
    original = onnx.load(str(path))
    original.ir_version = min(original.ir_version, 10)
    converted, report = convert_with_report(path, threshold=0.0)
    assert not [row for row in report.rows if row.decision == "ineligible"]
    input_name = original.graph.input[0].name
    frames = []
    for seed, shape in enumerate(resolutions):  # a resolution change mid-stream: the state restarts
        frames += [{input_name: f.data} for f in synthetic_video.sequence(shape, 4, seed, layout=layout)]
    assert_same_as_dense(original, converted, frames, cpu_op_library)


@pytest.mark.parametrize("name", sorted(REAL_MODELS))
def test_real_model_flops_at_an_input_shape_agree_between_inspect_and_stats(cpu_op_library, name):
    """PNet and 320n have dynamic input sizes: inspect --input-shape and DeltaSession.stats() (at the shapes of
    the last run) both count their FLOPs, and agree, for the original and the converted model."""
    path = fetched_real_model(name)
    converted, report = convert_with_report(path, threshold=0.1)
    assert any(row.flops is None for row in report.rows if row.is_conv)  # unknown without a shape
    shape = REAL_MODELS[name][2][0]
    input_name = onnx.load(str(path), load_external_data=False).graph.input[0].name
    would = inspect_model(path, input_shapes={input_name: shape})
    did = inspect_model(converted, input_shapes={input_name: shape})
    for found in (would, did):
        assert all(row.flops for row in found.rows if row.is_conv)
    assert would.conv_flops() == did.conv_flops()

    session = deltaonnx.DeltaSession(converted)
    session.run(None, {input_name: np.random.default_rng(0).random(shape, dtype=np.float32)})
    stats = session.stats()
    converted_rows = {row.delta_name: row.flops for row in did.rows if row.converted}
    gates = {gate["node"] for gate in session.metadata["gates"]}  # the DeltaGate: a map, no FLOPs
    assert gates and all(stats["nodes"][gate]["flops"] is None for gate in gates)
    assert {node: entry["flops"] for node, entry in stats["nodes"].items() if node not in gates} == converted_rows

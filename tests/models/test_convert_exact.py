"""The converter's key property: at threshold 0 the converted model, run in ORT with the op library and its
state fed from run to run, equals dense ORT on the original model on every frame of a sequence; thresholds
and options as given."""
from __future__ import annotations


import numpy as np
import pytest

from builders import DOMAIN
import deltaonnx
from deltaonnx.convert import ConversionError, convert_with_report, inspect_model
from conversion import ZOO_MODELS, StatefulRunner, assert_same_as_dense, attr, model_input_shape, video


# --------------------------------------------------------------------------------------------------
# the key property: exact at threshold 0, frame after frame, in ORT with the op library
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ZOO_MODELS)
def test_zoo_model_at_threshold_zero_equals_dense_ort_on_every_frame(zoo, cpu_op_library, name, rng):
    original = getattr(zoo, name)()
    converted, report = convert_with_report(original)
    assert report.converted_rows, report.render()
    shape = model_input_shape(original)
    spatial = (1, 2) if name == "nhwc_input" else (-2, -1)
    frames = [{original.graph.input[0].name: f} for f in video(shape, 6, rng, spatial)]
    assert_same_as_dense(original, converted, frames, cpu_op_library)


def test_identical_frame_recomputes_nothing(zoo, cpu_op_library, rng):
    original = zoo.resnet18_like()
    converted = deltaonnx.convert(original)
    runner = StatefulRunner(converted, cpu_op_library)
    name = original.graph.input[0].name
    frame = rng.standard_normal(model_input_shape(original)).astype(np.float32)
    first = runner.run({name: frame})
    assert all(first[m].all() for m in runner.map_outputs)  # empty state: everything recomputed
    second = runner.run({name: frame.copy()})
    assert not any(second[m].any() for m in runner.map_outputs)


@pytest.mark.parametrize("name", ["cnn1", "resnet18_like", "mobilenetv3_like"])
def test_all_nodes_converts_every_eligible_node_and_stays_exact(zoo, cpu_op_library, name, rng):
    original = getattr(zoo, name)()
    converted, report = convert_with_report(original, all_nodes=True)
    assert all(row.decision != "dense" for row in report.rows)
    shape = model_input_shape(original)
    frames = [{original.graph.input[0].name: f} for f in video(shape, 4, rng)]
    assert_same_as_dense(original, converted, frames, cpu_op_library)


def test_batch_of_streams_is_exact(zoo, cpu_op_library, rng):
    original = zoo.resnet18_like(batch=2)
    converted = deltaonnx.convert(original)
    shape = model_input_shape(original)
    assert shape[0] == 2
    frames = [{original.graph.input[0].name: f} for f in video(shape, 4, rng)]
    assert_same_as_dense(original, converted, frames, cpu_op_library)


@pytest.mark.parametrize("name", ["cnn1", "nhwc_input"])
def test_numpy_reference_evaluator_agrees_with_dense(zoo, name, rng):
    """Library-independent check of the rewritten graph (the reference ops implement docs/ops.md)."""
    original = getattr(zoo, name)()
    converted = deltaonnx.convert(original)
    shape = model_input_shape(original)
    spatial = (1, 2) if name == "nhwc_input" else (-2, -1)
    frames = [{original.graph.input[0].name: f} for f in video(shape, 4, rng, spatial)]
    assert_same_as_dense(original, converted, frames, library=None)


def test_input_gate_applies_through_transpose_and_inner_threshold_elsewhere(zoo, rng):
    original = zoo.nhwc_input()
    converted, report = convert_with_report(original, threshold=0.05, inner_threshold=0.01, gate="pixel")
    by_source = {row.node: row for row in report.converted_rows}
    first = report.converted_rows[0]
    # NHWC: the first conv reads the input through a Transpose, so it gets the input gate.
    assert first.threshold == pytest.approx(0.05)
    assert all(row.threshold == pytest.approx(0.01) for row in report.converted_rows[1:])
    delta_nodes = {n.name: n for n in converted.graph.node if n.domain == DOMAIN and n.op_type.startswith("Delta") and n.op_type != "DeltaMapUnion"}
    for row in by_source.values():
        assert attr(delta_nodes[row.delta_name], "threshold") == pytest.approx(row.threshold)


def test_per_node_threshold_overrides_and_unknown_names_are_an_error(zoo):
    original = zoo.cnn1()
    names = [n.name for n in original.graph.node if n.op_type == "Conv"]
    _, report = convert_with_report(original, threshold=0.1, thresholds={names[1]: 0.25})
    taus = {row.node: row.threshold for row in report.converted_rows}
    assert taus[names[0]] == pytest.approx(0.1)
    assert taus[names[1]] == pytest.approx(0.25)
    with pytest.raises(ConversionError, match="unknown node names in thresholds.*'no_such_node'"):
        deltaonnx.convert(original, thresholds={"no_such_node": 0.1})
    with pytest.raises(ConversionError, match="threshold"):
        deltaonnx.convert(original, threshold=-0.5)


def test_conversion_options_object_and_keywords_are_one_call(zoo):
    """ConversionOptions is what convert takes; its fields as keywords mean the same, and replace its values."""
    original = zoo.cnn1()
    names = [n.name for n in original.graph.node if n.op_type == "Conv"]
    options = deltaonnx.ConversionOptions(threshold=0.1, thresholds={names[1]: 0.25}, gate="block")
    by_options = deltaonnx.convert(original, options)
    by_keywords = deltaonnx.convert(original, threshold=0.1, thresholds={names[1]: 0.25}, gate="block")
    assert by_options.SerializeToString() == by_keywords.SerializeToString()
    _, report = convert_with_report(original, options, threshold=0.2)  # a keyword replaces the options' value
    assert {r.node: r.threshold for r in report.converted_rows}[names[0]] == pytest.approx(0.2)
    assert options.threshold == 0.1  # frozen: the caller's options are never changed
    planned = inspect_model(original, options, threshold=0.3)
    assert {r.node: r.threshold for r in planned.converted_rows}[names[0]] == pytest.approx(0.3)
    with pytest.raises(TypeError, match="unknown conversion option.*'treshold'"):
        deltaonnx.convert(original, treshold=0.1)
    with pytest.raises(TypeError, match="ConversionOptions"):
        deltaonnx.convert(original, {"threshold": 0.1})
    with pytest.raises(ConversionError, match="threshold"):
        deltaonnx.ConversionOptions(threshold=-1.0)

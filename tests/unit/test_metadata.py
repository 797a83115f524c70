"""The `deltaonnx` metadata of a converted model (docs/state_protocol.md), read by one typed reader that DeltaSession,
the dense twin, inspect, bench, calibrate and the Triton backends share: what it returns, and a clear error for
every entry it cannot read."""
from __future__ import annotations

import json

import onnx
import pytest
from onnx import helper

from deltaonnx.graph_passes.metadata import ConversionMetadata, MetadataError, StateEntry, is_converted
from deltaonnx.graph_passes.protocol import METADATA_FORMAT, METADATA_KEY

ENTRY = {
    "format": METADATA_FORMAT,
    "state": [{"node": "conv", "kind": "x_ref", "past": "deltaonnx.past.conv.x_ref",
               "present": "deltaonnx.present.conv.x_ref"}],
    "maps": [{"node": "conv", "output": "deltaonnx.map.conv"}],
    "gates": [{"input": "images", "change_map": "deltaonnx.change_map.images"}],
    "nodes": [{"name": "conv", "op": "DeltaConv", "flops": 10}, "not an entry"],
}


def test_a_valid_entry_reads_into_typed_fields():
    metadata = ConversionMetadata.parse(json.dumps(ENTRY))
    assert metadata.state == (StateEntry("conv", "x_ref", "deltaonnx.past.conv.x_ref", "deltaonnx.present.conv.x_ref"),)
    assert metadata.maps == {"conv": "deltaonnx.map.conv"}
    assert metadata.change_map_inputs == {"images": "deltaonnx.change_map.images"}
    assert metadata.node("conv")["flops"] == 10 and metadata.node("other") is None
    assert len(metadata.nodes) == 1  # entries that are no objects are left out
    assert metadata.entries == ENTRY


@pytest.mark.parametrize("text, message", [
    (None, "has no 'deltaonnx' metadata"),
    ("{", "not valid JSON"),
    ("[1, 2]", "unsupported 'deltaonnx' metadata format 'list'"),
    (json.dumps({**ENTRY, "format": 2}), "unsupported 'deltaonnx' metadata format 2; this deltaonnx reads format 1"),
    (json.dumps({**ENTRY, "state": [{"node": "conv"}]}), "lacks a field of its format"),
    (json.dumps({**ENTRY, "maps": [["conv"]]}), "lacks a field of its format"),
], ids=["none", "not-json", "not-an-object", "other-format", "state-without-names", "map-not-an-object"])
def test_entries_it_cannot_read_are_one_clear_error(text, message):
    with pytest.raises(MetadataError, match=message):
        ConversionMetadata.parse(text)


def test_of_a_model_reads_its_entry_or_says_it_has_none():
    graph = helper.make_graph([], "g", [], [])
    model = helper.make_model(graph)
    assert ConversionMetadata.of(model) is None and not is_converted(model)
    helper.set_model_props(model, {METADATA_KEY: json.dumps(ENTRY), "other": "x"})
    assert is_converted(model)
    assert ConversionMetadata.of(model).maps == {"conv": "deltaonnx.map.conv"}
    onnx.checker.check_model(model)


def test_the_calibration_stamp_round_trips_and_a_bad_one_is_a_clear_error():
    from deltaonnx.calibrate import CalibrationError, CalibrationStamp

    model = helper.make_model(helper.make_graph([], "g", [], []))
    assert CalibrationStamp.of(model) is None
    CalibrationStamp(refresh=5, budget={"min_f1": 0.99}, thresholds={"conv": 0.1}).write(model)
    CalibrationStamp(refresh=7, budget={"min_f1": 0.98}, thresholds={"conv": 0.2}).write(model)  # replaces it
    assert [p.key for p in model.metadata_props] == ["deltaonnx.calibration"]
    assert CalibrationStamp.of(model) == CalibrationStamp(7, {"min_f1": 0.98}, {"conv": 0.2})
    for text in ("{", "[1]", '{"refresh": "often"}'):
        with pytest.raises(CalibrationError, match="'deltaonnx.calibration' metadata cannot be read"):
            CalibrationStamp.parse(text)

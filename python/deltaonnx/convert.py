"""`deltaonnx.convert`: rewrite an ONNX CNN so its Conv/MaxPool nodes recompute only what changed.

    import deltaonnx
    converted = deltaonnx.convert("model.onnx", threshold=0.05)
    onnx.save(converted, "model.delta.onnx")

The passes live in `deltaonnx.graph_passes`; this module loads models, runs them and reports."""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from collections.abc import Sequence
from typing import Optional, Union

import onnx
import onnx_ir as ir
from onnx import external_data_helper

from .densify import dense_twin
# Submodules named explicitly: works whether or not the editable install knows graph_passes/__init__.py.
from .graph_passes.conversion_context import DEFAULT_GATE, DEFAULT_GATE_BLOCK, ConversionContext, ConversionOptions
from .graph_passes.cost_model import node_flops
from .graph_passes.errors import ConversionError
from .graph_passes.metadata import read_conversion_metadata
from .graph_passes.normalize import CANDIDATE_OPS, METADATA_KEY, InferShapes
from .graph_passes.pipeline import conversion_pass_manager, planning_passes, run_passes
from .graph_passes.report import Report, ReportRow
from .session import STATE_PREFIX, StateEntry, _identical_frame_plan

__all__ = [
    "ConversionError",
    "Report",
    "ReportRow",
    "convert",
    "convert_with_report",
    "inspect_model",
    "load_model",
    "model_input_names",
    "save_model",
]

ModelLike = Union[str, os.PathLike, bytes, onnx.ModelProto]

# Protobuf cannot serialise a message of 2 GiB or more: larger models keep their weights in a side file.
_PROTOBUF_LIMIT = 2**31 - 1


def load_model(model: ModelLike) -> onnx.ModelProto:
    """A private ModelProto for `model` (a path, serialized bytes or a ModelProto, never modified),
    with any external data loaded."""
    if isinstance(model, onnx.ModelProto):
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return _checked(copy, "the ModelProto")
    if isinstance(model, (bytes, bytearray, memoryview)):
        try:
            proto = onnx.load_from_string(bytes(model))
        except Exception as error:  # noqa: BLE001 - protobuf raises several types
            raise ConversionError(f"the bytes are not an ONNX model ({_first_line(error)})") from error
        return _checked(proto, "the bytes")
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.exists():
            raise ConversionError(f"no such file: {path}")
        if path.is_dir():
            raise ConversionError(f"{path} is a directory, not an ONNX model")
        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as error:  # noqa: BLE001
            raise ConversionError(f"{path} is not an ONNX model ({_first_line(error)})") from error
        _checked(proto, str(path))
        if _uses_external_data(proto):
            try:
                external_data_helper.load_external_data_for_model(proto, str(path.resolve().parent))
            except Exception as error:  # noqa: BLE001
                raise ConversionError(f"cannot read the external data of {path} ({_first_line(error)})") from error
        return proto
    raise TypeError(f"model must be a path, bytes or onnx.ModelProto, not {type(model).__name__}")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _checked(proto: onnx.ModelProto, what: str) -> onnx.ModelProto:
    # Protobuf parses many byte strings as *some* message: demand the parts every model has.
    if not proto.HasField("graph") or not proto.opset_import or proto.ir_version <= 0:
        raise ConversionError(f"{what} is not an ONNX model (no graph, opset import or IR version)")
    return proto


def _uses_external_data(proto: onnx.ModelProto) -> bool:
    return any(
        external_data_helper.uses_external_data(tensor)
        for tensor in external_data_helper._get_all_tensors(proto)  # noqa: SLF001 - onnx's own walker
    )


def _options(threshold, inner_threshold, thresholds, all_nodes, dense_fraction,
             keep_references=False, gate=DEFAULT_GATE, gate_block=DEFAULT_GATE_BLOCK, gate_hard=None,
             inner_gate="pixel", inner_gate_block=DEFAULT_GATE_BLOCK, inner_gate_hard=None,
             inner_gates=None) -> ConversionOptions:
    return ConversionOptions(
        gate=gate,
        gate_block=gate_block,
        gate_hard=gate_hard,
        inner_gate=inner_gate,
        inner_gate_block=inner_gate_block,
        inner_gate_hard=inner_gate_hard,
        inner_gates=dict(inner_gates) if isinstance(inner_gates, Mapping) else inner_gates,
        threshold=threshold,
        inner_threshold=inner_threshold,
        thresholds=dict(thresholds) if isinstance(thresholds, Mapping) else thresholds,
        all_nodes=bool(all_nodes),
        dense_fraction=dense_fraction,
        keep_references=bool(keep_references),
    )


def convert_with_report(
    model: ModelLike,
    *,
    threshold: float = 0.0,
    inner_threshold: float = 0.0,
    thresholds: Optional[Mapping[str, float]] = None,
    all_nodes: bool = False,
    dense_fraction: float = 0.5,
    keep_references: bool = False,
    gate: str = DEFAULT_GATE,
    gate_block: int = DEFAULT_GATE_BLOCK,
    gate_hard: Optional[float] = None,
    inner_gate: str = "pixel",
    inner_gate_block: int = DEFAULT_GATE_BLOCK,
    inner_gate_hard: Optional[float] = None,
    inner_gates: Optional[Mapping[str, str]] = None,
    verbose: bool = False,
) -> tuple[onnx.ModelProto, Report]:
    """Like `convert`, also returning the Report (one row per Conv/MaxPool-like node)."""
    options = _options(threshold, inner_threshold, thresholds, all_nodes, dense_fraction, keep_references,
                       gate, gate_block, gate_hard, inner_gate, inner_gate_block, inner_gate_hard, inner_gates)
    context = ConversionContext(options)
    model_ir = ir.serde.deserialize_model(load_model(model))
    run_passes(conversion_pass_manager(context), model_ir)
    converted = ir.serde.serialize_model(model_ir)
    _record_frame_skip(converted)
    report = Report.from_context(context)
    if verbose:
        print(report.render())
    return converted, report


def _record_frame_skip(proto: onnx.ModelProto) -> None:
    """Adds `frame_skip` to the `deltaonnx` metadata: when a client may skip a run because it provably changes
    nothing (docs/state_protocol.md, "Skipping a frame that changes nothing"), as DeltaSession proves it on the
    finished graph, for clients that cannot read the graph (examples/cpp). Mode "tau": each gate (every
    consumer of the model inputs) with the rule to ask deltaonnx_gate_finds_change and the transpose from its
    model input to its X (null: same layout); mode "bitwise": frames bitwise identical to the previous run's.
    Both: the x_ref states that must hold no NaN/Inf (rule 3 keeps a non-finite pixel changed on every run)."""
    prop = next((p for p in proto.metadata_props if p.key == METADATA_KEY), None)
    if prop is None:
        return
    metadata = json.loads(prop.value)
    entries = [StateEntry(s["node"], s.get("kind", ""), s["past"], s["present"]) for s in metadata.get("state", [])]
    plan, _ = _identical_frame_plan(proto.graph, model_input_names(proto), entries, gates_allowed=True)
    if plan is None:
        return
    gates = []
    for gate in plan.gates:
        # A Delta op as gate compares per pixel within its tau: enough for either rule (docs/state_protocol.md).
        rule = gate.block_rule or {"rule": "pixel", "gate_block": 1, "gate_hard": float(gate.tau)}
        gates.append({"node": gate.node, "input": gate.input, "present": gate.present,
                      "perm": list(gate.perm) if gate.perm else None, "threshold": float(gate.tau), **rule})
    metadata["frame_skip"] = {"mode": plan.mode, "gates": gates, "finite_checks": list(plan.finite_checks)}
    prop.value = json.dumps(metadata, separators=(",", ":"))


def convert(
    model: ModelLike,
    *,
    threshold: float = 0.0,
    inner_threshold: float = 0.0,
    thresholds: Optional[Mapping[str, float]] = None,
    all_nodes: bool = False,
    dense_fraction: float = 0.5,
    keep_references: bool = False,
    gate: str = DEFAULT_GATE,
    gate_block: int = DEFAULT_GATE_BLOCK,
    gate_hard: Optional[float] = None,
    inner_gate: str = "pixel",
    inner_gate_block: int = DEFAULT_GATE_BLOCK,
    inner_gate_hard: Optional[float] = None,
    inner_gates: Optional[Mapping[str, str]] = None,
    verbose: bool = False,
) -> onnx.ModelProto:
    """Convert `model` (a path, serialized bytes or an onnx.ModelProto; never modified).

    Folds BatchNormalization into Conv, fuses the following activation, turns each Conv/MaxPool worth
    it into DeltaConv/DeltaPool (domain com.deltaonnx), adds state inputs/outputs after the model's own
    (docs/state_protocol.md) and records what it did in the `deltaonnx` metadata entry.

    threshold: tau of the Delta ops that read a model input (possibly through Transpose/Cast/Identity),
        in the input's units; inner_threshold: tau of all other Delta ops (0: exact after the gate);
        thresholds: {source node name: tau} overrides for single Conv/MaxPool nodes;
        all_nodes: convert every eligible node, even where the cost model would keep it dense;
        dense_fraction: above this changed fraction of its output an op computes densely;
        keep_references: keep X_ref state on every Delta op; by default an op that compares exactly
            (threshold 0) behind a change map keeps none (the map says what changed; half the state memory,
            no comparison), and its threshold can then not be raised by editing the converted model;
        gate: how `threshold` decides what changed in a frame: "block" (the default: one DeltaGate per model
            input decides per gate_block x gate_block block on the block means, with gate_hard bounding every
            pixel, docs/design.md#rule-2b; the ops after it compare nothing; it takes an external change map,
            docs/state_protocol.md) or "pixel" (each op reading the frame compares per pixel, rule 2). The block
            rule ignores camera noise that the pixel rule keeps re-firing on: on every clip measured it redoes
            less work at no more error (docs/results.md); at threshold 0 both are exact and no gate is inserted;
        gate_block: k of the block gate (default 8); gate_hard: its per-pixel bound (default 4 x threshold);
        inner_gate: how inner_threshold decides, in each Delta op not reading a model input: "pixel" (rule 2)
            or "block" (rule 2b on the op's input, inner_gate_block x inner_gate_block blocks, every pixel
            within inner_gate_hard, default 3 x the node's threshold); inner_gates: {source node name: "pixel",
            "block", "block:K" or "block:K:HARD"} overrides for single nodes (also those reading an input);
        verbose: print the report.
    Raises ConversionError for models or options it cannot accept (already converted, nothing
    convertible, unknown node names in thresholds, ...)."""
    converted, _ = convert_with_report(
        model,
        threshold=threshold,
        inner_threshold=inner_threshold,
        thresholds=thresholds,
        all_nodes=all_nodes,
        dense_fraction=dense_fraction,
        keep_references=keep_references,
        gate=gate,
        gate_block=gate_block,
        gate_hard=gate_hard,
        inner_gate=inner_gate,
        inner_gate_block=inner_gate_block,
        inner_gate_hard=inner_gate_hard,
        inner_gates=inner_gates,
        verbose=verbose,
    )
    return converted


def inspect_model(
    model: ModelLike,
    *,
    threshold: float = 0.0,
    inner_threshold: float = 0.0,
    thresholds: Optional[Mapping[str, float]] = None,
    all_nodes: bool = False,
    dense_fraction: float = 0.5,
    gate: str = DEFAULT_GATE,
    gate_block: int = DEFAULT_GATE_BLOCK,
    gate_hard: Optional[float] = None,
    inner_gate: str = "pixel",
    inner_gate_block: int = DEFAULT_GATE_BLOCK,
    inner_gate_hard: Optional[float] = None,
    inner_gates: Optional[Mapping[str, str]] = None,
    input_shapes: Optional[Mapping[str, Sequence[int]]] = None,
) -> Report:
    """For a converted model, the report of what was done (from its metadata); for any other model,
    what `convert` with these options would do (nothing is written).

    input_shapes: {model input name: dims}, the sizes at which to count the FLOPs of a model with dynamic
    input sizes (otherwise unknown for it)."""
    proto = load_model(model)
    try:
        metadata = read_conversion_metadata({p.key: p.value for p in proto.metadata_props})
    except ValueError as error:
        raise ConversionError(f"the model's 'deltaonnx' metadata is not valid JSON ({error})") from error
    if metadata is not None:
        report = Report.from_metadata(metadata)
        if input_shapes:
            # The converted ops have no ONNX shape inference: count on the model's dense twin, whose Conv and
            # MaxPool nodes carry the Delta ops' names (the converted rows' names).
            outputs = [o.name for o in proto.graph.output if not o.name.startswith(STATE_PREFIX)]
            report = report.with_flops(flops_at_input_shapes(dense_twin(proto, outputs), input_shapes))
        return report
    if input_shapes:
        proto = with_input_shapes(proto, input_shapes)
    context = ConversionContext(_options(threshold, inner_threshold, thresholds, all_nodes, dense_fraction,
                                         gate=gate, gate_block=gate_block, gate_hard=gate_hard,
                                         inner_gate=inner_gate, inner_gate_block=inner_gate_block,
                                         inner_gate_hard=inner_gate_hard, inner_gates=inner_gates))
    model_ir = ir.serde.deserialize_model(proto)
    run_passes(ir.passes.PassManager(planning_passes(context), steps=1), model_ir)
    return Report.from_context(context, done=False)


def model_input_names(proto: onnx.ModelProto) -> list[str]:
    """The model's own inputs: no weights (IR 3 lists them as inputs), no deltaonnx state."""
    weights = {t.name for t in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name not in weights and not i.name.startswith(STATE_PREFIX)]


def with_input_shapes(proto: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> onnx.ModelProto:
    """A copy of `proto` whose inputs named in `input_shapes` have those dims. The dims must agree with the
    model's rank and with every dim it fixes."""
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    names = model_input_names(copy)
    inputs = {i.name: i for i in copy.graph.input if i.name in names}
    for name, dims in input_shapes.items():
        if name not in inputs:
            raise ConversionError(f"input shape for {name!r}: the model has no such input (its inputs: {names})")
        dims = list(dims)
        if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d <= 0 for d in dims):
            raise ConversionError(f"input shape for {name!r}: dims must be positive integers, got {dims}")
        tensor_type = inputs[name].type.tensor_type
        if tensor_type.HasField("shape"):
            declared = tensor_type.shape.dim
            if len(declared) != len(dims):
                raise ConversionError(f"input shape for {name!r}: the model declares rank {len(declared)}, "
                                      f"got {len(dims)} dims {dims}")
            for axis, (dim, value) in enumerate(zip(declared, dims)):
                if dim.HasField("dim_value") and dim.dim_value != value:
                    raise ConversionError(f"input shape for {name!r}: dim {axis} is fixed at {dim.dim_value} in "
                                          f"the model, got {value}")
        del tensor_type.shape.dim[:]
        for value in dims:
            tensor_type.shape.dim.add().dim_value = value
    return copy


def flops_at_input_shapes(proto: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> dict[str, int]:
    """{node name: FLOPs per batch item} of the Conv/MaxPool-like nodes of an ONNX model (no custom ops) with
    its inputs at `input_shapes`; nodes whose shapes stay unknown are left out."""
    model_ir = ir.serde.deserialize_model(with_input_shapes(proto, input_shapes))
    run_passes(ir.passes.PassManager([InferShapes()], steps=1), model_ir)
    found = {node.name: node_flops(node) for node in model_ir.graph.all_nodes() if node.op_type in CANDIDATE_OPS}
    return {name: flops for name, flops in found.items() if flops is not None}


def save_model(model: onnx.ModelProto, path: Union[str, os.PathLike], *, external_data: Optional[bool] = None) -> None:
    """Write `model` to `path`; weights go to `<file>.data` beside it when asked or when the model is too
    large for one protobuf file."""
    path = Path(path)
    if external_data is None:
        try:
            external_data = model.ByteSize() > _PROTOBUF_LIMIT
        except Exception:  # noqa: BLE001 - protobuf refuses to size some huge messages
            external_data = True
    if external_data:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=path.name + ".data",
            size_threshold=1024,
        )
    else:
        onnx.save_model(model, str(path))

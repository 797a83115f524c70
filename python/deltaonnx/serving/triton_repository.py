"""Write a Triton Inference Server model repository for a dense or converted model (docs/serving.md).

Two backends:
* ``python``: Triton's Python backend runs `triton_python_model.py` (copied as ``1/model.py``), which holds one
  DeltaSession per instance and one stream per sequence (camera). The client sends and receives exactly the
  original model's inputs and outputs; the state never leaves the server process.
* ``onnxruntime``: Triton's ONNX Runtime backend runs the converted model itself with the op library
  (``model_operations``) and carries every past/present pair of the state protocol as implicit state
  (``sequence_batching { state }``); the model is the START-gated variant of start_gate.py.

Both use Triton's sequence batcher: every request of one correlation ID (a camera) goes to the same instance,
START/END flags mark a sequence's ends, and a sequence idle longer than the idle timeout is dropped.
"""
from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Union

import onnx

from .._lib import library_path
from ..convert import convert_with_report, load_model, save_model
from ..graph_passes.metadata import ConversionMetadata, MetadataError
from ..graph_passes.protocol import STATE_PREFIX
from .start_gate import START_INPUT, gate_state_on_start, without_change_maps

BACKENDS = ("python", "onnxruntime")
DEVICES = ("cpu", "gpu")
DEFAULT_IDLE_TIMEOUT_US = 5_000_000
# Control inputs of the python backend's sequence batcher (uint64 CORRID: TYPE_STRING fails in Triton 2.51).
CONTROL_INPUTS = {"START": "CONTROL_SEQUENCE_START", "END": "CONTROL_SEQUENCE_END"}
CORRID_INPUT = "CORRID"
# python backend, debug_timing=True: float64 [3] per request (model.py's session run ms, request ms, batch size)
TIMING_OUTPUT = "DELTAONNX_TIMING"
MODEL_FILE = "model.onnx"
PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_python_model.py")

_TRITON_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.DOUBLE: "TYPE_FP64", onnx.TensorProto.BFLOAT16: "TYPE_BF16",
    onnx.TensorProto.INT8: "TYPE_INT8", onnx.TensorProto.INT16: "TYPE_INT16",
    onnx.TensorProto.INT32: "TYPE_INT32", onnx.TensorProto.INT64: "TYPE_INT64",
    onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.UINT16: "TYPE_UINT16",
    onnx.TensorProto.UINT32: "TYPE_UINT32", onnx.TensorProto.UINT64: "TYPE_UINT64",
    onnx.TensorProto.BOOL: "TYPE_BOOL",
}
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class RepositoryError(ValueError):
    """A model or option this writer cannot turn into a working Triton model (the message says why)."""


@dataclass(frozen=True)
class TritonRepository:
    """What write_triton_repository wrote."""
    repository: Path        # the model repository (tritonserver --model-repository)
    name: str               # the model's name in it (REPO/<name>/config.pbtxt, REPO/<name>/1/model.onnx)
    backend: str
    converted: bool         # the served model is a deltaonnx-converted one (False: served dense)
    sequences: int          # cameras served at once: instances x sequences per instance; more wait in a backlog
    op_library: Optional[str]  # onnxruntime backend: the op_library_filename written in config.pbtxt

    @property
    def model_dir(self) -> Path:
        return self.repository / self.name

    def launch_hint(self) -> str:
        """How to start a server on this repository (printed by the CLI)."""
        lines = [f"wrote {self.model_dir}/ ({self.backend} backend, "
                 f"{'converted' if self.converted else 'dense'} model, {self.sequences} cameras at once)",
                 f"start it with:  tritonserver --model-repository {self.repository.resolve()}"]
        if self.backend == "python":
            lines.append("  the first `python3` on the server's PATH runs model.py: it needs deltaonnx and numpy < 2")
        else:
            lines.append(f"  op_library_filename is {self.op_library}: it must exist at that path on the server "
                         "(rewrite it with --op-library-path when the repository is mounted elsewhere)")
        lines.append("  each camera is one sequence: send its frames with sequence_id=<camera id>, "
                     "sequence_start=True on the first")
        return "\n".join(lines)


@dataclass(frozen=True)
class _Tensor:
    name: str
    elem_type: int
    dims: tuple  # -1 where the graph leaves the dimension open


def _tensors(values) -> list[_Tensor]:
    tensors = []
    for value in values:
        kind = value.type.WhichOneof("value")
        if kind != "tensor_type":
            raise RepositoryError(f"{value.name!r} is a {kind}, not a tensor: Triton serves tensors only")
        tensor = value.type.tensor_type
        if tensor.elem_type not in _TRITON_TYPES:
            raise RepositoryError(f"{value.name!r} has element type "
                                  f"{onnx.TensorProto.DataType.Name(tensor.elem_type)}, which Triton has no type for")
        if not tensor.HasField("shape"):
            raise RepositoryError(f"{value.name!r} has no declared rank: Triton needs one")
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim)
        tensors.append(_Tensor(value.name, tensor.elem_type, dims))
    return tensors


def _dims_text(dims) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _tensor_entries(tensors: list[_Tensor], batched: bool) -> str:
    entries = []
    for t in tensors:
        dims = t.dims[1:] if batched else t.dims
        entries.append(f'  {{ name: "{t.name}" data_type: {_TRITON_TYPES[t.elem_type]} dims: {_dims_text(dims)} }}')
    return "[\n" + ",\n".join(entries) + "\n]"


def _control(name: str, kind: str) -> str:
    return f'    {{ name: "{name}" control [ {{ kind: {kind} int32_false_true: [ 0, 1 ] }} ] }}'


def _instance_group(instances: int, device: str) -> str:
    return f"instance_group [ {{ count: {instances} kind: {'KIND_GPU' if device == 'gpu' else 'KIND_CPU'} }} ]"


def _parameter(key: str, value) -> str:
    return f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}'


def _python_config(name, inputs, outputs, batched, max_sequences, instances, idle_timeout_us, threads,
                   debug_timing) -> str:
    if debug_timing:
        outputs = outputs + [_Tensor(TIMING_OUTPUT, onnx.TensorProto.DOUBLE, (1, 3))]
    controls = [_control(n, kind) for n, kind in CONTROL_INPUTS.items()]
    controls.append(f'    {{ name: "{CORRID_INPUT}" control [ {{ kind: CONTROL_SEQUENCE_CORRID '
                    f'data_type: TYPE_UINT64 }} ] }}')
    return "\n".join([
        f'name: "{name}"',
        'backend: "python"',
        f"max_batch_size: {max_sequences if batched else 0}",
        f"input {_tensor_entries(inputs, batched)}",
        f"output {_tensor_entries(outputs, batched)}",
        "sequence_batching {",
        f"  max_sequence_idle_microseconds: {idle_timeout_us}",
        "  direct { }",
        "  control_input [\n" + ",\n".join(controls) + "\n  ]",
        "}",
        _instance_group(instances, "cpu"),
        _parameter("intra_op_threads", threads),
        _parameter("idle_timeout_us", idle_timeout_us),
        _parameter("debug_timing_output", TIMING_OUTPUT) if debug_timing else "",
        "",
    ])


def _onnxruntime_config(name, inputs, outputs, states, instances, idle_timeout_us, threads, device,
                        op_library) -> str:
    state_entries = [
        f'    {{ input_name: "{past}" output_name: "{present}" data_type: {_TRITON_TYPES[elem_type]} '
        f"dims: [ -1, -1, -1, -1 ] }}"
        for past, present, elem_type in states
    ]
    return "\n".join([
        f'name: "{name}"',
        'backend: "onnxruntime"',
        "max_batch_size: 0",
        f'default_model_filename: "{MODEL_FILE}"',
        f"input {_tensor_entries(inputs, False)}",
        f"output {_tensor_entries(outputs, False)}",
        "sequence_batching {",
        f"  max_sequence_idle_microseconds: {idle_timeout_us}",
        "  direct { }",
        # Only a converted model has state, and the START input of start_gate.py that empties it.
        ("  control_input [\n" + _control(START_INPUT, "CONTROL_SEQUENCE_START") + "\n  ]\n"
         "  state [\n" + ",\n".join(state_entries) + "\n  ]") if state_entries else "",
        "}",
        _instance_group(instances, device),
        f'model_operations {{ op_library_filename: [ "{op_library}" ] }}',
        _parameter("intra_op_thread_count", threads),
        "",
    ])


def _default_name(model) -> str:
    """The model file's name without .onnx, with characters Triton's names do not take replaced; else "model"."""
    if not isinstance(model, (str, Path)):
        return "model"
    stem = Path(model).name
    stem = stem[: -len(".onnx")] if stem.endswith(".onnx") else stem
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) or "model"


def _load(model) -> onnx.ModelProto:
    return model if isinstance(model, onnx.ModelProto) else load_model(model)


def _metadata(model: onnx.ModelProto) -> Optional[dict]:
    try:
        metadata = ConversionMetadata.of(model)
    except MetadataError as error:
        raise RepositoryError(str(error)) from error
    return metadata.entries if metadata is not None else None


def _check_options(name, instances, backend, max_sequences, idle_timeout_us, threads, device) -> None:
    if backend not in BACKENDS:
        raise RepositoryError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if device not in DEVICES:
        raise RepositoryError(f"device must be one of {', '.join(DEVICES)}, not {device!r}")
    if device == "gpu" and backend == "python":
        raise RepositoryError("device gpu needs the onnxruntime backend (the python backend runs on the CPU)")
    if not _NAME.match(name):
        raise RepositoryError(f"model name {name!r}: use letters, digits, '_', '-' and '.' only")
    for option, value in (("instances", instances), ("max_sequences", max_sequences), ("threads", threads),
                          ("idle_timeout_us", idle_timeout_us)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise RepositoryError(f"{option} must be an integer >= 1, got {value!r}")
    if backend == "onnxruntime" and max_sequences != 1:
        raise RepositoryError("the onnxruntime backend holds one sequence per instance (its implicit state is "
                              "per request, unbatched): use --instances for more cameras and --max-sequences 1")


def write_triton_repository(
    model: Union[str, Path, bytes, onnx.ModelProto],
    repository: Union[str, Path],
    *,
    name: Optional[str] = None,
    instances: int = 1,
    backend: str = "python",
    max_sequences: int = 8,
    idle_timeout_us: int = DEFAULT_IDLE_TIMEOUT_US,
    threads: int = 1,
    device: str = "cpu",
    dense: bool = False,
    op_library_path: Optional[str] = None,
    conversion: Optional[Mapping] = None,
    debug_timing: bool = False,
) -> TritonRepository:
    """Write `repository`/`name`/ (config.pbtxt, 1/model.onnx, and 1/model.py or the op library).

    model: a dense model (converted here with `conversion`, convert()'s keyword options, unless `dense`)
        or an already converted one (then `conversion` must be empty). name: the model's name in the
        repository (default: the file name without .onnx, or "model"). instances: model instances (processes
        for the python backend, ORT sessions for onnxruntime). max_sequences: cameras one python instance
        serves at once (Triton's max_batch_size; must be 1 for onnxruntime); further cameras wait in Triton's
        backlog until a sequence ends or times out. idle_timeout_us: a sequence without a request for this
        long is dropped (its slot freed, its state with it). threads: ORT intra-op threads per instance.
        device: "gpu" puts the onnxruntime backend's instances on GPUs with the CUDA op library.
        op_library_path: the op library's path as the server sees it (onnxruntime backend; default: the copy
        written into the model folder, by absolute path). debug_timing (python backend): every response also
        carries TIMING_OUTPUT, where model.py's time went (docs/serving.md#throughput). The model folder is
        replaced if it exists."""
    if name is None:
        name = _default_name(model)
    _check_options(name, instances, backend, max_sequences, idle_timeout_us, threads, device)
    proto = _load(model)
    conversion = {k: v for k, v in (conversion or {}).items() if v is not None}
    converted = _metadata(proto) is not None
    if converted and conversion:
        raise RepositoryError(f"the model is already converted: conversion options {sorted(conversion)} "
                              "cannot apply (serve it as it is, or pass the dense model)")
    if dense and converted:
        raise RepositoryError("dense serving needs the dense model, not a converted one")
    if dense and conversion:
        raise RepositoryError("dense serving converts nothing: conversion options do not apply")
    if not converted and not dense:
        proto, _ = convert_with_report(proto, **conversion)
        converted = True
    metadata = _metadata(proto) or {}
    state = metadata.get("state", [])
    past_names = {s["past"] for s in state}
    map_names = {m["output"] for m in metadata.get("maps", [])}
    # The block gate's external change maps are not served: every request gates its whole frame.
    change_maps = [g["change_map"] for g in metadata.get("gates", [])]
    inputs = [t for t in _tensors(proto.graph.input) if t.name not in past_names and t.name not in change_maps]
    own_outputs = [t for t in _tensors(proto.graph.output)
                   if not t.name.startswith(STATE_PREFIX) and t.name not in map_names]
    taken = {t.name for t in inputs}
    reserved = set(CONTROL_INPUTS) | {CORRID_INPUT} if backend == "python" else {START_INPUT}
    clash = sorted(taken & reserved)
    if clash:
        raise RepositoryError(f"model inputs {clash} have the names of Triton's control inputs")
    if debug_timing and backend != "python":
        raise RepositoryError("debug_timing times model.py: it needs the python backend")
    if debug_timing and TIMING_OUTPUT in {t.name for t in own_outputs}:
        raise RepositoryError(f"the model has an output {TIMING_OUTPUT!r}, the name of the debug timing output")

    # Everything that can fail is done before the model folder is replaced.
    if backend == "python":
        # One camera per batch item: the batch axis must be free (or 1) on every input and output.
        batched = all(t.dims and t.dims[0] in (-1, 1) for t in inputs + own_outputs)
        if not batched and max_sequences != 1:
            raise RepositoryError("the model's batch dimension is fixed above 1, so an instance holds one sequence "
                                  "at a time: use --max-sequences 1 and --instances for more cameras")
    else:
        types = {i.name: i.type.tensor_type.elem_type for i in proto.graph.input}
        states = [(s["past"], s["present"], types[s["past"]]) for s in state]
        try:
            served = gate_state_on_start(proto, [s[0] for s in states]) if states else proto
            served = without_change_maps(served, change_maps)
        except ValueError as error:
            raise RepositoryError(str(error)) from error
        library = library_path("cuda" if device == "gpu" else "cpu")

    model_dir = Path(repository) / name
    if model_dir.exists():
        shutil.rmtree(model_dir)
    (model_dir / "1").mkdir(parents=True)
    op_library = None
    if backend == "python":
        config = _python_config(name, inputs, own_outputs, batched, max_sequences, instances, idle_timeout_us,
                                threads, debug_timing)
        save_model(proto, model_dir / "1" / MODEL_FILE)
        shutil.copyfile(PYTHON_MODEL_SOURCE, model_dir / "1" / "model.py")
        sequences = instances * max_sequences
    else:
        if op_library_path is None:
            copy = model_dir / Path(library).name
            shutil.copyfile(library, copy)
            op_library = str(copy.resolve())
        else:
            op_library = op_library_path
        # A present that is also one of the model's outputs stays listed as an output: Triton returns it too.
        config = _onnxruntime_config(name, inputs, own_outputs, states, instances, idle_timeout_us, threads,
                                     device, op_library)
        save_model(served, model_dir / "1" / MODEL_FILE)
        sequences = instances
    (model_dir / "config.pbtxt").write_text(config)
    return TritonRepository(Path(repository), name, backend, converted, sequences, op_library)

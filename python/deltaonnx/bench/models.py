"""What the benchmark reads from a model: its image input, its conv FLOPs; the ORT session options it runs with."""
from __future__ import annotations

from typing import Optional

import numpy as np
import onnx
import onnxruntime as ort

from ..graph_passes.metadata import ConversionMetadata
from ..graph_passes.protocol import STATE_PREFIX
from .options import BenchError


def conversion_metadata(proto: onnx.ModelProto) -> dict:
    """The converter's metadata entry of `proto` as written ({} for a model not converted)."""
    metadata = ConversionMetadata.of(proto)
    return metadata.entries if metadata is not None else {}


def session_options(threads: int, profile_prefix: Optional[str] = None) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return options


def image_input(proto: onnx.ModelProto) -> tuple[str, list]:
    """The model's one image input (name, shape with ints or symbolic names)."""
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers and not i.name.startswith(STATE_PREFIX)]
    if len(inputs) != 1:
        raise BenchError(f"bench feeds one image input, but the model has {len(inputs)}: {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    return inputs[0].name, shape


def conv_flops(proto: onnx.ModelProto, feed: dict) -> dict[str, float]:
    """Multiply-add FLOPs (2 per MAC) of every Conv node of the dense model at this input, by node name.

    Found by running the model once with every Conv output exposed, so the shapes are exact whatever the
    model's symbolic dimensions."""
    weights = {t.name: list(t.dims) for t in proto.graph.initializer}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    if not convs:
        return {}
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    declared = {o.name for o in probe.graph.output}
    elem_types = {}
    try:
        inferred = onnx.shape_inference.infer_shapes(proto)
        elem_types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    except Exception:  # noqa: BLE001 - then assume float outputs
        pass
    for node in convs:
        if node.output[0] not in declared:
            probe.graph.output.append(onnx.helper.make_tensor_value_info(
                node.output[0], elem_types.get(node.output[0], onnx.TensorProto.FLOAT), None))
    session = ort.InferenceSession(probe.SerializeToString(), session_options(1), providers=["CPUExecutionProvider"])
    names = [n.output[0] for n in convs]
    shapes = dict(zip(names, (o.shape for o in session.run(names, feed))))
    flops = {}
    for node in convs:
        w = weights.get(node.input[1])
        y = shapes.get(node.output[0])
        if w is None or y is None or len(w) < 3:
            continue
        per_output = int(np.prod(w[1:]))  # C/group * kh * kw multiply-adds per output value
        flops[node.name or node.output[0]] = 2.0 * per_output * float(np.prod(y[1:]))
    return flops

"""`deltaonnx triton` repositories without a server: their configs parsed with Triton's own protobuf, and the
onnxruntime backend's model run the way Triton runs it (implicit state, the first request's state shapes)."""
from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from triton_helpers import clip, pixel_classifier, pnet_like

import deltaonnx
from deltaonnx.cli import main as cli_main
from deltaonnx.serving import write_triton_repository
from deltaonnx.serving.start_gate import START_INPUT, gate_state_on_start, without_change_maps
from deltaonnx.serving.triton_repository import TIMING_OUTPUT, RepositoryError

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] not installed")
from google.protobuf import text_format  # noqa: E402 - after the importorskip that brings it

# What Triton 2.51 hands the first request of a sequence for a state declared dims [-1,-1,-1,-1] (seen through
# the python backend in test_triton_server.py): every variable dimension became 1.
TRITON_FIRST_STATE_SHAPE = (1, 1, 1, 1)


def parse_config(path) -> "model_config_pb2.ModelConfig":
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def state_entries(model: onnx.ModelProto) -> list[dict]:
    metadata = json.loads(next(p.value for p in model.metadata_props if p.key == "deltaonnx"))
    return metadata["state"]


class TritonLikeRunner:
    """Runs a converted model as Triton's onnxruntime backend does: the state each request gets is the
    previous request's present outputs, or (first request) what `first_state` makes of each past; the block
    gate's change map is a constant empty map, as in the served model."""

    def __init__(self, model: onnx.ModelProto, library: str, first_state):
        metadata = json.loads(next(p.value for p in model.metadata_props if p.key == "deltaonnx"))
        model = without_change_maps(model, [g["change_map"] for g in metadata["gates"]])
        options = ort.SessionOptions()
        options.register_custom_ops_library(library)
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.pairs = [(s["past"], s["present"]) for s in state_entries(model)]
        self.own_outputs = [o.name for o in model.graph.output if not o.name.startswith("deltaonnx.")]
        self.gated = START_INPUT in {i.name for i in model.graph.input}
        self.first_state = first_state
        self.state = None

    def run(self, frame: np.ndarray, start: bool) -> list[np.ndarray]:
        feed = {"image": frame}
        if self.state is None:
            self.state = {past: self.first_state(past) for past, _ in self.pairs}
        feed.update(self.state)
        if self.gated:
            feed[START_INPUT] = np.array([1 if start else 0], np.int32)
        names = self.own_outputs + [present for _, present in self.pairs]
        values = dict(zip(names, self.session.run(names, feed)))
        self.state = {past: values[present] for past, present in self.pairs}
        return [values[name] for name in self.own_outputs]


def zeros_like_triton(past: str) -> np.ndarray:
    return np.zeros(TRITON_FIRST_STATE_SHAPE, np.float32)


def dense_outputs(model: onnx.ModelProto, frame: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"image": frame})


# ------------------------------------------------------------------------- the configs, parsed by Triton's protobuf


def test_python_repository_config_is_a_valid_sequence_batching_config(tmp_path):
    onnx.save(pnet_like(), str(tmp_path / "pnet.onnx"))
    written = write_triton_repository(tmp_path / "pnet.onnx", tmp_path / "repo", instances=3, max_sequences=5,
                                      idle_timeout_us=1_500_000, conversion={"threshold": 0.05})
    config = parse_config(written.model_dir / "config.pbtxt")
    assert (config.name, config.backend, config.max_batch_size) == ("pnet", "python", 5)
    assert [(i.name, list(i.dims)) for i in config.input] == [("image", [3, -1, -1])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("prob", [2, -1, -1]), ("boxes", [4, -1, -1])]
    assert config.sequence_batching.max_sequence_idle_microseconds == 1_500_000
    controls = {c.name: c.control[0] for c in config.sequence_batching.control_input}
    assert controls["CORRID"].kind == model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_CORRID
    assert controls["CORRID"].data_type == model_config_pb2.TYPE_UINT64
    assert controls["START"].kind == model_config_pb2.ModelSequenceBatching.Control.CONTROL_SEQUENCE_START
    assert list(controls["END"].int32_false_true) == [0, 1]
    assert [(g.count, g.kind) for g in config.instance_group] == [(3, model_config_pb2.ModelInstanceGroup.KIND_CPU)]
    assert written.sequences == 15 and written.converted
    served = onnx.load(str(written.model_dir / "1" / "model.onnx"))
    assert any(p.key == "deltaonnx" for p in served.metadata_props)
    assert (written.model_dir / "1" / "model.py").is_file()


@pytest.mark.parametrize("batch, dims", [(None, [3]), (2, [1, 3])])  # batched: Triton adds the batch axis
def test_debug_timing_declares_its_output_and_names_it_to_model_py(tmp_path, batch, dims):
    model = pnet_like()
    if batch:  # a fixed batch: max_batch_size 0, the output's dims in full ([1, 3], what model.py returns)
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = batch
    written = write_triton_repository(model, tmp_path / "repo", max_sequences=1, debug_timing=True)
    config = parse_config(written.model_dir / "config.pbtxt")
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output][-1] == (
        TIMING_OUTPUT, model_config_pb2.TYPE_FP64, dims)
    assert config.parameters["debug_timing_output"].string_value == TIMING_OUTPUT
    plain = parse_config(write_triton_repository(pnet_like(), tmp_path / "plain").model_dir / "config.pbtxt")
    assert TIMING_OUTPUT not in [o.name for o in plain.output] and "debug_timing_output" not in plain.parameters


def test_debug_timing_refuses_a_model_with_an_output_of_its_name(tmp_path):
    model = pnet_like()
    model.graph.output[1].name = TIMING_OUTPUT  # "boxes", the last node's output
    model.graph.node[-1].output[0] = TIMING_OUTPUT
    with pytest.raises(RepositoryError, match="the name of the debug timing output"):
        write_triton_repository(model, tmp_path / "repo", debug_timing=True)


def test_onnxruntime_repository_lists_every_state_pair_and_an_op_library_that_exists(tmp_path):
    written = write_triton_repository(pnet_like(), tmp_path / "repo", name="pnet_ort", backend="onnxruntime",
                                      max_sequences=1, instances=2, conversion={"threshold": 0.05})
    config = parse_config(written.model_dir / "config.pbtxt")
    served = onnx.load(str(written.model_dir / "1" / "model.onnx"))
    pairs = [(s["past"], s["present"]) for s in state_entries(served)]
    assert pairs and [(s.input_name, s.output_name) for s in config.sequence_batching.state] == pairs
    assert all(list(s.dims) == [-1, -1, -1, -1] and s.data_type == model_config_pb2.TYPE_FP32
               for s in config.sequence_batching.state)
    assert [c.name for c in config.sequence_batching.control_input] == [START_INPUT]
    assert START_INPUT in {i.name for i in served.graph.input}
    assert config.max_batch_size == 0 and config.backend == "onnxruntime"
    library = config.model_operations.op_library_filename[0]
    assert library.startswith("/") and (written.model_dir / "libdeltaonnx_ops.so").samefile(library)
    # The state is not a request input: only the model's own inputs are listed.
    assert [i.name for i in config.input] == ["image"]
    # Nor is the block gate's change map: the served model holds it as a constant empty map (no map).
    (gate,) = json.loads(next(p.value for p in served.metadata_props if p.key == "deltaonnx"))["gates"]
    assert gate["change_map"] not in {i.name for i in served.graph.input}
    (empty,) = [t for t in served.graph.initializer if t.name == gate["change_map"]]
    assert list(empty.dims) == [0, 1, 0, 0] and empty.data_type == onnx.TensorProto.UINT8


def test_op_library_path_is_written_as_given_for_a_server_that_mounts_the_repository_elsewhere(tmp_path):
    written = write_triton_repository(pnet_like(), tmp_path / "repo", name="m", backend="onnxruntime",
                                      max_sequences=1, op_library_path="/models/m/libdeltaonnx_ops.so")
    config = parse_config(written.model_dir / "config.pbtxt")
    assert list(config.model_operations.op_library_filename) == ["/models/m/libdeltaonnx_ops.so"]
    assert not (written.model_dir / "libdeltaonnx_ops.so").exists()


def test_dense_serving_writes_the_model_unconverted(tmp_path):
    written = write_triton_repository(pnet_like(), tmp_path / "repo", name="dense", dense=True)
    served = onnx.load(str(written.model_dir / "1" / "model.onnx"))
    assert not written.converted and not any(p.key == "deltaonnx" for p in served.metadata_props)
    config = parse_config(written.model_dir / "config.pbtxt")
    assert [i.name for i in config.input] == ["image"]


@pytest.mark.parametrize("options, message", [
    (dict(backend="onnxruntime", max_sequences=4), "one sequence per instance"),
    (dict(backend="tensorrt"), "backend must be one of"),
    (dict(instances=0), "instances must be an integer >= 1"),
    (dict(device="gpu"), "needs the onnxruntime backend"),
    (dict(name="a b"), "model name"),
    (dict(dense=True, conversion={"threshold": 0.1}), "conversion options do not apply"),
    (dict(backend="onnxruntime", max_sequences=1, debug_timing=True), "debug_timing times model.py"),
])
def test_bad_options_are_refused_with_the_reason(tmp_path, options, message):
    with pytest.raises(RepositoryError, match=message):
        write_triton_repository(pnet_like(), tmp_path / "repo", **options)
    assert not (tmp_path / "repo").exists()


def test_a_fixed_batch_above_one_needs_one_sequence_per_instance_and_keeps_the_old_folder(tmp_path):
    model = pnet_like()
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2
    old = write_triton_repository(pnet_like(), tmp_path / "repo", name="m")
    with pytest.raises(RepositoryError, match="fixed above 1"):
        write_triton_repository(model, tmp_path / "repo", name="m", max_sequences=8)
    assert (old.model_dir / "config.pbtxt").is_file()  # refused before anything was replaced
    written = write_triton_repository(model, tmp_path / "repo", name="m", max_sequences=1, instances=4)
    config = parse_config(written.model_dir / "config.pbtxt")
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [2, 3, -1, -1] and written.sequences == 4


def test_a_converted_model_is_served_as_is_and_refuses_conversion_options(tmp_path):
    converted = deltaonnx.convert(pnet_like(), threshold=0.05)
    written = write_triton_repository(converted, tmp_path / "repo", name="c")
    assert written.converted
    with pytest.raises(RepositoryError, match="already converted"):
        write_triton_repository(converted, tmp_path / "repo", name="c", conversion={"threshold": 0.1})


def test_cli_writes_the_repository_and_prints_how_to_start_it(tmp_path, capsys):
    onnx.save(pnet_like(), str(tmp_path / "pnet.onnx"))
    code = cli_main(["triton", str(tmp_path / "pnet.onnx"), "-o", str(tmp_path / "repo"), "--instances", "2",
                     "--max-sequences", "3", "--idle-timeout-us", "2000000", "--threshold", "0.05",
                     "--debug-timing"])
    printed = capsys.readouterr().out
    assert code == 0 and "tritonserver --model-repository" in printed and "6 cameras at once" in printed
    config = parse_config(tmp_path / "repo" / "pnet" / "config.pbtxt")
    assert config.max_batch_size == 3 and config.instance_group[0].count == 2
    assert config.parameters["debug_timing_output"].string_value == TIMING_OUTPUT
    metadata = json.loads(next(p.value for p in onnx.load(str(tmp_path / "repo" / "pnet" / "1" / "model.onnx"))
                               .metadata_props if p.key == "deltaonnx"))
    assert metadata["threshold"] == 0.05
    code = cli_main(["triton", str(tmp_path / "pnet.onnx"), "-o", str(tmp_path / "repo"), "--backend",
                     "onnxruntime", "--max-sequences", "2"])
    assert code == 2 and "one sequence per instance" in capsys.readouterr().err


# ------------------------------------------------------------------------- Triton's first-request state, through the ops


@pytest.mark.parametrize("size", [(24, 32), (12, 12)], ids=["pnet-24x32", "pnet-12x12-deepest-maps-1x1"])
@pytest.mark.parametrize("gated", [False, True], ids=["converted", "start-gated"])
def test_the_ops_treat_tritons_first_state_as_empty(cpu_op_library, size, gated):
    """Every past fed the [1,1,1,1] zeros Triton hands a new sequence: no state of this model has that shape
    (rule 1: every pixel recomputed), so with or without the START gate each frame equals dense ORT (tau 0)."""
    dense_model = pnet_like()
    converted = deltaonnx.convert(dense_model)
    model = gate_state_on_start(converted, [s["past"] for s in state_entries(converted)]) if gated else converted
    runner = TritonLikeRunner(model, cpu_op_library, zeros_like_triton)
    for index, frame in enumerate(clip((1, 3, *size), 4, seed=5)):
        for got, want in zip(runner.run(frame, start=index == 0), dense_outputs(dense_model, frame)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert all(v.shape != TRITON_FIRST_STATE_SHAPE for v in runner.state.values())


FITTING_CASES = {  # model, input shape, input gate, first frame's value, the first state Triton hands
    "pixel-classifier-1x1-triton-zeros": (pixel_classifier, (1, 1, 1, 1), 0.0, 0.0, "triton"),
    "pnet-12x12-zeros-of-the-state-shape": (pnet_like, (1, 3, 12, 12), 0.0, 0.0, "full"),
    "pnet-24x32-zeros-dark-frame-under-the-gate": (pnet_like, (1, 3, 24, 32), 0.05, 0.02, "full"),
}


@pytest.mark.parametrize("case", list(FITTING_CASES))
def test_a_first_state_that_fits_is_mistaken_for_a_real_one_unless_gated_on_start(cpu_op_library, case):
    """Where Triton's first state fits X (a 1-channel 1x1 map with dims [-1,-1,-1,-1]; any map when the dims
    are declared in full or an initial_state is given), zeros look like a valid reference for a black frame,
    or for a dark one under the input gate: the plain converted model then returns wrong outputs, or (a
    reference that fits beside a Y_prev that does not) refuses the state, so every request of the sequence
    fails. The START-gated model empties the state on START whatever it holds, and continues it afterwards
    exactly as a fresh DeltaSession stream does."""
    build, shape, threshold, level, kind = FITTING_CASES[case]
    dense_model = build()
    converted = deltaonnx.convert(dense_model, threshold=threshold)
    pasts = [s["past"] for s in state_entries(converted)]
    # The shapes of a real state of this model (what Triton hands when the dims are declared in full).
    probe = TritonLikeRunner(converted, cpu_op_library, lambda past: np.zeros((0, 0, 0, 0), np.float32))
    probe.run(np.zeros(shape, np.float32), start=True)
    shapes = {past: value.shape for past, value in probe.state.items()}
    first_state = zeros_like_triton if kind == "triton" else (lambda past: np.zeros(shapes[past], np.float32))
    first = np.full(shape, level, np.float32)

    plain = TritonLikeRunner(converted, cpu_op_library, first_state)
    try:
        mistaken = plain.run(first, start=True)
    except Exception as error:  # noqa: BLE001 - ORT's InvalidArgument
        assert "Y_prev has shape" in str(error)
    else:
        want = dense_outputs(dense_model, first)
        assert not all(np.allclose(g, w, atol=1e-4) for g, w in zip(mistaken, want)), "the hazard did not show"

    gated = TritonLikeRunner(gate_state_on_start(converted, pasts), cpu_op_library, first_state)
    fresh = deltaonnx.DeltaSession(converted, skip_identical_frames=False, dense_fallback=False,
                                   stateless_runs=False)
    for index, frame in enumerate([first] + clip(shape, 3, seed=8)):
        for got, expected in zip(gated.run(frame, start=index == 0), fresh.run(None, {"image": frame})):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_start_restarts_the_gated_model_from_empty_state_mid_sequence(cpu_op_library):
    """With a gate threshold the result depends on the state: after START the gated model must return exactly
    what a fresh DeltaSession stream returns on the new clip, not a continuation of the old one."""
    converted = deltaonnx.convert(pnet_like(), threshold=0.05)
    gated = gate_state_on_start(converted, [s["past"] for s in state_entries(converted)])
    runner = TritonLikeRunner(gated, cpu_op_library, zeros_like_triton)
    for index, frame in enumerate(clip((1, 3, 24, 32), 3, seed=1)):
        runner.run(frame, start=index == 0)
    fresh = deltaonnx.DeltaSession(converted, skip_identical_frames=False, dense_fallback=False,
                                   stateless_runs=False)
    second = [frame * 0.98 + 0.01 for frame in clip((1, 3, 24, 32), 4, seed=1)]  # close to the old state
    for index, frame in enumerate(second):
        got = runner.run(frame, start=index == 0)
        want = fresh.run(None, {"image": frame})
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
    # Without START the same frames continue the old state and give other outputs (so the test can fail).
    unrestarted = TritonLikeRunner(gated, cpu_op_library, zeros_like_triton)
    for index, frame in enumerate(clip((1, 3, 24, 32), 3, seed=1)):
        unrestarted.run(frame, start=index == 0)
    continued = unrestarted.run(second[0], start=False)
    first_fresh = deltaonnx.DeltaSession(converted, dense_fallback=False, stateless_runs=False).run(None, {"image": second[0]})
    continued_differs = any(not np.allclose(c, f, rtol=1e-5, atol=1e-6) for c, f in zip(continued, first_fresh))
    assert continued_differs

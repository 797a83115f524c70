"""The C++ example (examples/cpp): built with CMake against ORT's C++ headers and the pip wheel's libonnxruntime,
it must carry the state exactly as DeltaSession does, so its outputs equal DeltaSession's bit for bit on the
same frames (both with one intra-op thread)."""
from __future__ import annotations

import glob
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import deltaonnx
import synthetic_video
import zoo
from edge_build import REPO_ROOT, cmake_build, missing, ort_include_dir, require_tool

EXAMPLE_SOURCE = REPO_ROOT / "examples" / "cpp"
N_FRAMES = 8  # first, static, blob, blob, noise, static, global, blob: every kind but a reset
GATE = 0.05   # the input threshold: noise frames stay below it, so the state decides the outputs
FRAME_LINE = re.compile(r"^frame (\d+): ([0-9.]+) ms, recomputed ([0-9.]+)%, checksum (\S+)( \(skipped\))?$", re.M)
SKIPPED_TOTAL = re.compile(r", (\d+) skipped \(the gate saw no change\)$", re.M)


@dataclass(frozen=True)
class Example:
    binary: Path
    opencv: bool


def wheel_onnxruntime_library() -> str:
    """The libonnxruntime the installed onnxruntime package ships, so the example runs the same ORT as DeltaSession."""
    capi = Path(ort.__file__).resolve().parent / "capi"
    found = sorted(glob.glob(str(capi / "libonnxruntime.so.*")))
    if not found:
        pytest.skip(f"the onnxruntime package ships no libonnxruntime.so.* in {capi} (not a Linux wheel?)")
    return found[0]


@pytest.fixture(scope="module")
def example(tmp_path_factory) -> Example:
    require_tool("c++", "apt-get install g++")
    build = tmp_path_factory.mktemp("cpp_example_build")
    configured = cmake_build(EXAMPLE_SOURCE, build, {
        "ORT_INCLUDE_DIR": ort_include_dir(),
        "ONNXRUNTIME_LIBRARY": wheel_onnxruntime_library(),
    })
    binary = build / "deltaonnx_video"
    assert binary.is_file(), configured
    return Example(binary, "deltaonnx_video: OpenCV ON" in configured)


@pytest.fixture(scope="module")
def op_library() -> str:
    try:
        return deltaonnx.library_path("cpu")
    except FileNotFoundError as error:
        missing(f"the CPU op library is not built: {error}")


@dataclass(frozen=True)
class ConvertedModel:
    path: Path
    original: onnx.ModelProto
    input_name: str
    output_names: list[str]
    frames: list[np.ndarray]
    gate: str = "block"


def _convert(directory: Path, name: str, layout: str, gate: str) -> ConvertedModel:
    original = zoo.BUILDERS[name]()
    converted = deltaonnx.convert(original, threshold=GATE, gate=gate)
    path = directory / f"{name}.delta.onnx"
    onnx.save(converted, path)
    shape = [d.dim_value for d in original.graph.input[0].type.tensor_type.shape.dim]
    frames = [f.data for f in synthetic_video.sequence(shape, N_FRAMES, seed=7, layout=layout)]
    return ConvertedModel(path, original, original.graph.input[0].name, [o.name for o in original.graph.output], frames,
                          gate)


@pytest.fixture(scope="module", params=[("yolov8_like", "NCHW", "block"), ("nhwc_input", "NHWC", "block"),
                                        ("yolov8_like", "NCHW", "pixel")], ids=lambda p: f"{p[0]}-{p[2]}")
def converted(request, tmp_path_factory) -> ConvertedModel:
    """yolov8_like: 53 state tensors and 53 change maps behind the block gate (convert's default; 104 and 52 with
    the pixel gate); nhwc_input: an NHWC input (the gate reads it through a Transpose) and a model output ('box')
    that is also a state buffer."""
    name, layout, gate = request.param
    return _convert(tmp_path_factory.mktemp(name), name, layout, gate)


def delta_session_outputs(model: ConvertedModel, frames: list[np.ndarray], change_map=None,
                          skipped: list | None = None) -> list[list[np.ndarray]]:
    """DeltaSession's outputs (it skips what the gate does not pass too); `skipped` gets its skipped runs."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = deltaonnx.DeltaSession(model.path, sess_options=options, dense_fallback=False)  # the delta path, bit for bit
    assert [o.name for o in session.get_outputs()] == model.output_names
    kwargs = {} if change_map is None else {"change_map": change_map}
    outputs = [session.run(None, {model.input_name: frame}, **kwargs) for frame in frames]
    if skipped is not None:
        skipped.append(session.stats()["skipped_runs"])
    return outputs


def run_example(example: Example, op_library: str, model: Path, *args: str, timeout: float = 300):
    command = [str(example.binary), "--model", str(model), "--ops", op_library, "--threads", "1", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def read_dump(path: Path, reference: list[list[np.ndarray]]) -> list[list[np.ndarray]]:
    """Splits the program's --dump file (per frame, each model output's raw bytes in graph order) like `reference`."""
    raw = path.read_bytes()
    frames, offset = [], 0
    for outputs in reference:
        frame = []
        for expected in outputs:
            count = expected.size * expected.dtype.itemsize
            frame.append(np.frombuffer(raw[offset:offset + count], dtype=expected.dtype).reshape(expected.shape))
            offset += count
        frames.append(frame)
    assert offset == len(raw), f"the dump holds {len(raw)} bytes, the outputs of {len(reference)} frames {offset}"
    return frames


def test_example_outputs_equal_delta_session(example, op_library, converted, tmp_path):
    frames_file = tmp_path / "frames.f32"
    np.stack(converted.frames).astype("<f4").tofile(frames_file)
    dump = tmp_path / "outputs.bin"
    result = run_example(example, op_library, converted.path, "--raw", str(frames_file), "--dump", str(dump))
    assert result.returncode == 0, result.stderr

    expected = delta_session_outputs(converted, converted.frames)
    got = read_dump(dump, expected)
    for index, (got_frame, expected_frame) in enumerate(zip(got, expected)):
        for name, g, e in zip(converted.output_names, got_frame, expected_frame):
            assert np.array_equal(g, e), f"frame {index}, output {name}: max |diff| {np.abs(g - e).max()}"

    # The comparison can fail: with the input gate, carried state gives other outputs than dense inference,
    # which is what a program dropping its state would compute.
    dense = ort.InferenceSession(converted.original.SerializeToString(), providers=["CPUExecutionProvider"])
    dense_outputs = [dense.run(None, {converted.input_name: f}) for f in converted.frames]
    assert any(not np.array_equal(d[0], e[0]) for d, e in zip(dense_outputs, expected))

    lines = FRAME_LINE.findall(result.stdout)
    assert [int(line[0]) for line in lines] == list(range(N_FRAMES)), result.stdout
    recomputed = [float(line[2]) for line in lines]
    assert recomputed[0] == 100.0        # first frame: empty state, everything computed
    assert recomputed[1] == 0.0          # a static frame: the carried state says nothing changed
    assert max(recomputed[2:]) > 0.0
    for line, outputs in zip(lines, expected):
        checksum = sum(float(np.sum(o, dtype=np.float64)) for o in outputs)
        assert float(line[3]) == pytest.approx(checksum, rel=1e-6, abs=1e-6)
    assert f"{N_FRAMES} frames: first" in result.stdout


def test_example_describes_the_state_layout(example, op_library, converted):
    result = run_example(example, op_library, converted.path, "--describe")
    assert result.returncode == 0, result.stderr
    metadata = deltaonnx.DeltaSession(converted.path).metadata
    states = re.findall(r"^state\s+(\S+)\s+(\S+)\s+(\S+) -> (\S+)$", result.stdout, re.M)
    assert states == [(s["node"], s["kind"], s["past"], s["present"]) for s in metadata["state"]]
    assert re.findall(r"^output (\S+)$", result.stdout, re.M) == converted.output_names
    assert re.findall(r"^input\s+(\S+) ", result.stdout, re.M) == [converted.input_name]
    assert len(re.findall(r"^map ", result.stdout, re.M)) == len(metadata["maps"])


def write_ppm(path: Path, rgb: np.ndarray) -> None:
    height, width, _ = rgb.shape
    path.write_bytes(f"P6\n{width} {height}\n255\n".encode() + rgb.astype(np.uint8).tobytes())


def test_example_reads_video_through_opencv(example, op_library, converted, tmp_path):
    """An image sequence read by OpenCV's VideoCapture: the program's RGB / 255 frames give DeltaSession's outputs."""
    if not example.opencv:
        missing("the example was built without OpenCV (apt-get install libopencv-videoio-dev libopencv-imgproc-dev)")
    nhwc = converted.frames[0].shape[-1] == 3
    images = []
    for index, frame in enumerate(converted.frames):
        rgb = frame[0] if nhwc else frame[0].transpose(1, 2, 0)
        rgb8 = np.round(rgb * 255).astype(np.uint8)
        write_ppm(tmp_path / f"frame_{index:03d}.ppm", rgb8)
        images.append(rgb8)
    dump = tmp_path / "outputs.bin"
    result = run_example(example, op_library, converted.path, "--video", str(tmp_path / "frame_%03d.ppm"),
                         "--dump", str(dump))
    assert result.returncode == 0, result.stderr

    # OpenCV scales by a float factor 1/255 (x * (1/255), not x / 255).
    scale = np.float32(1.0 / 255.0)
    frames = [(img.astype(np.float32) * scale)[None] if nhwc else (img.astype(np.float32) * scale).transpose(2, 0, 1)[None]
              for img in images]
    expected = delta_session_outputs(converted, [np.ascontiguousarray(f) for f in frames])
    got = read_dump(dump, expected)
    assert len(FRAME_LINE.findall(result.stdout)) == N_FRAMES
    for index, (got_frame, expected_frame) in enumerate(zip(got, expected)):
        for name, g, e in zip(converted.output_names, got_frame, expected_frame):
            assert np.array_equal(g, e), f"frame {index}, output {name}: max |diff| {np.abs(g - e).max()}"


def test_example_refuses_an_unconverted_model(example, op_library, converted, tmp_path):
    original = tmp_path / "original.onnx"
    onnx.save(converted.original, original)
    frames_file = tmp_path / "frames.f32"
    converted.frames[0].astype("<f4").tofile(frames_file)
    result = run_example(example, op_library, original, "--raw", str(frames_file))
    assert result.returncode == 1
    assert "not a deltaonnx-converted model" in result.stderr


def test_example_refuses_a_frame_file_of_the_wrong_size(example, op_library, converted, tmp_path):
    frames_file = tmp_path / "frames.f32"
    np.zeros(converted.frames[0].size + 3, dtype="<f4").tofile(frames_file)
    result = run_example(example, op_library, converted.path, "--raw", str(frames_file))
    assert result.returncode == 1
    assert "not a whole number of" in result.stderr


def test_example_usage_errors(example, op_library, converted):
    result = run_example(example, op_library, converted.path)  # neither --raw nor --video
    assert result.returncode == 2
    assert "usage: deltaonnx_video" in result.stderr


# --- the block gate: external change maps and skipping on the gate's answer (docs/state_protocol.md) -----------

def run_frames(example, op_library, model: Path, frames, directory: Path, *args: str):
    """Runs the program on `frames`; returns its stdout, the frames it reported skipped and the dump file."""
    frames_file, dump = directory / "frames.f32", directory / f"outputs{len(list(directory.iterdir()))}.bin"
    np.stack(frames).astype("<f4").tofile(frames_file)
    result = run_example(example, op_library, model, "--raw", str(frames_file), "--dump", str(dump), *args)
    assert result.returncode == 0, result.stderr
    lines = FRAME_LINE.findall(result.stdout)
    assert len(lines) == len(frames), result.stdout
    skipped = [int(line[0]) for line in lines if line[4]]
    assert [int(n) for n in SKIPPED_TOTAL.findall(result.stdout)] == [len(skipped)], result.stdout
    return result.stdout, skipped, dump


def assert_same_outputs(got, expected, names):
    for index, (got_frame, expected_frame) in enumerate(zip(got, expected)):
        for name, g, e in zip(names, got_frame, expected_frame):
            assert np.array_equal(g, e), f"frame {index}, output {name}: max |diff| {np.abs(g - e).max()}"


def test_example_skips_the_frames_the_gate_does_not_pass(example, op_library, converted, tmp_path):
    """Repeated frames and noise under the gate are not run (counted), the outputs stay exactly what DeltaSession
    (which skips the same frames) and the program without skipping return; the NHWC model's gate reads the input
    through a Transpose, which the check follows (frame_skip's perm)."""
    first, blob, moved, everywhere = (converted.frames[i] for i in (0, 2, 3, 6))  # synthetic_video's kinds
    noise = blob + np.float32(0.01) * np.sign(np.random.default_rng(3).standard_normal(blob.shape)).astype(np.float32)
    sequence = [first, blob, blob, noise, moved, moved, everywhere, everywhere]
    stdout, skipped, dump = run_frames(example, op_library, converted.path, sequence, tmp_path)
    # The repeats, and noise the block gate absorbs; the pixel gate keeps references within tau of the last frame
    # (rule 3), so noise on top of them fires (the selection effect that the block rule removes).
    assert skipped == ([2, 3, 5, 7] if converted.gate == "block" else [2, 5, 7]), stdout
    session_skipped = []
    expected = delta_session_outputs(converted, sequence, skipped=session_skipped)
    assert session_skipped == [len(skipped)]
    assert_same_outputs(read_dump(dump, expected), expected, converted.output_names)
    stdout, none_skipped, unskipped_dump = run_frames(example, op_library, converted.path, sequence, tmp_path, "--no-skip")
    assert none_skipped == []
    assert unskipped_dump.read_bytes() == dump.read_bytes()  # skipping changes no result
    for index in skipped:  # a skipped frame returns the previous frame's outputs
        assert_same_outputs(read_dump(dump, expected)[index:index + 1], expected[index - 1:index], converted.output_names)


def test_example_at_threshold_0_skips_repeats_and_equals_dense_ort(example, op_library, tmp_path):
    """No gate at tau 0: the Delta ops reading the frame are the gates (pixel rule at 0: a repeat only)."""
    original = zoo.BUILDERS["yolov8_like"]()
    path = tmp_path / "exact.delta.onnx"
    onnx.save(deltaonnx.convert(original, threshold=0.0), path)
    shape = [d.dim_value for d in original.graph.input[0].type.tensor_type.shape.dim]
    first, blob, moved, everywhere = (f.data for i, f in enumerate(synthetic_video.sequence(shape, 8, seed=5))
                                      if i in (0, 2, 3, 6))
    sequence = [first, first, blob, moved, moved, moved, everywhere]
    (directory := tmp_path / "run").mkdir()
    stdout, skipped, dump = run_frames(example, op_library, path, sequence, directory)
    assert skipped == [1, 4, 5], stdout
    dense = ort.InferenceSession(original.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = [dense.run(None, {original.graph.input[0].name: frame}) for frame in sequence]
    for index, (got, want) in enumerate(zip(read_dump(dump, expected), expected)):
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5, err_msg=f"frame {index}")


def test_example_mask_keeps_the_masked_region_and_skips_frames_that_change_only_there(example, op_library, tmp_path):
    """--exclude over the top rows (a timestamp overlay): frames that change only there are not run; the outputs
    only those rows reach keep their first values exactly; everything equals DeltaSession with the same mask."""
    from conversion import conv_block_model, weights
    from test_gate_convert import noisy_video, outputs_reached_from_outside

    rng = np.random.default_rng(11)
    relu = onnx.helper.make_node("Relu", ["y"], ["r"])
    conv2 = onnx.helper.make_node("Conv", ["r", "W2"], ["out"], name="conv2", pads=[1, 1, 1, 1])
    original = conv_block_model(rng, [relu, conv2], [weights(rng, "W2", (2, 4, 3, 3))], hw=24)
    path = tmp_path / "masked.delta.onnx"
    onnx.save(deltaonnx.convert(original, threshold=0.1, gate_block=4), path)
    model = ConvertedModel(path, original, "x", ["out"], [])
    shape = (1, 3, 24, 24)
    mask = np.ones((1, 1, 24, 24), np.uint8)
    mask[..., :8, :] = 0
    reached_outside = outputs_reached_from_outside(original, mask[0, 0] == 0, shape, rng)[0]
    assert not reached_outside.all()

    def overlay(frame):
        frame = frame.copy()
        frame[..., :8, :] += rng.normal(0, 2.0, frame[..., :8, :].shape).astype(np.float32)
        return frame

    scenes = noisy_video(shape, 3, rng)
    sequence = [scenes[0], overlay(scenes[0]), overlay(scenes[0]), overlay(scenes[1]), overlay(scenes[2])]
    (masked_dir := tmp_path / "masked").mkdir()
    stdout, skipped, dump = run_frames(example, op_library, path, sequence, masked_dir, "--exclude", "0,0,24,8")
    assert "change map [1,1,24,24]" in stdout
    assert skipped[:2] == [1, 2] and 3 not in skipped, stdout  # frame 3: a new scene outside the overlay
    session_skipped = []
    expected = delta_session_outputs(model, sequence, change_map=mask, skipped=session_skipped)
    assert session_skipped == [len(skipped)]
    got = read_dump(dump, expected)
    assert_same_outputs(got, expected, ["out"])
    for frame in got[1:]:
        np.testing.assert_array_equal(frame[0][~reached_outside], got[0][0][~reached_outside])
    # Without the mask the overlay is a change: every frame runs, and the region's outputs move.
    (plain_dir := tmp_path / "plain").mkdir()
    stdout, skipped, dump = run_frames(example, op_library, path, sequence, plain_dir)
    assert skipped == []
    unmasked = read_dump(dump, expected)
    assert not np.array_equal(unmasked[1][0][~reached_outside], unmasked[0][0][~reached_outside])


def test_example_map_of_all_ones_equals_no_map(example, op_library, converted, tmp_path):
    """--change-map of ones, at the gate's resolution or one cell per block, changes nothing. A model without the
    block gate has no change-map input: the program says so."""
    if converted.gate == "pixel":
        ones = tmp_path / "ones.u8"
        np.ones(converted.frames[0].size, np.uint8).tofile(ones)
        frames_file = tmp_path / "frames.f32"
        converted.frames[0].astype("<f4").tofile(frames_file)
        result = run_example(example, op_library, converted.path, "--raw", str(frames_file), "--change-map", str(ones))
        assert result.returncode == 1 and "need a model with one block gate; this one has 0" in result.stderr
        return
    stdout, _, no_map = run_frames(example, op_library, converted.path, converted.frames, tmp_path)
    gate = deltaonnx.DeltaSession(converted.path).metadata["gates"][0]
    shape = converted.frames[0].shape
    h, w = (shape[1], shape[2]) if gate["perm"] else (shape[2], shape[3])
    k = gate["gate_block"]
    for cells in ((h, w), (-(-h // k), -(-w // k))):
        ones = tmp_path / f"ones_{cells[0]}x{cells[1]}.u8"
        np.ones(cells, np.uint8).tofile(ones)
        stdout, _, dump = run_frames(example, op_library, converted.path, converted.frames, tmp_path,
                                     "--change-map", str(ones))
        assert f"change map [1,1,{cells[0]},{cells[1]}]" in stdout
        assert dump.read_bytes() == no_map.read_bytes()


def test_example_refuses_a_change_map_of_the_wrong_size(example, op_library, converted, tmp_path):
    if converted.gate == "pixel":
        pytest.skip("no change-map input (test_example_map_of_all_ones_equals_no_map checks the refusal)")
    frames_file, bad = tmp_path / "frames.f32", tmp_path / "bad.u8"
    converted.frames[0].astype("<f4").tofile(frames_file)
    np.ones(7, np.uint8).tofile(bad)
    result = run_example(example, op_library, converted.path, "--raw", str(frames_file), "--change-map", str(bad))
    assert result.returncode == 1 and "holds 7 bytes: a change map is" in result.stderr
    result = run_example(example, op_library, converted.path, "--raw", str(frames_file), "--exclude", "1,2,3")
    assert result.returncode == 2 and "X,Y,W,H" in result.stderr

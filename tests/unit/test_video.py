"""deltaonnx.video: reading clips (files, folders, arrays) and turning frames into model inputs."""
from __future__ import annotations

import numpy as np
import pytest

from deltaonnx.video import Geometry, Preprocess, VideoError, frame_count, image_files, read_frames, write_video

cv2 = pytest.importorskip("cv2")


def random_frames(rng, count, h=48, w=64):
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(count)]


# ------------------------------------------------------------------ preprocessing


def test_letterbox_keeps_aspect_centres_and_pads(rng):
    frame = rng.integers(0, 256, (100, 200, 3), dtype=np.uint8)
    prep = Preprocess(size=(64, 64), resize="letterbox", scale=1.0, color="BGR")
    geometry = prep.geometry(frame.shape[:2])
    assert (geometry.scale_y, geometry.scale_x) == (0.32, 0.32)
    assert (geometry.pad_top, geometry.pad_left) == (16, 0)
    fitted = prep.fit(frame)
    assert fitted.shape == (64, 64, 3)
    assert np.all(fitted[:16] == 114) and np.all(fitted[48:] == 114)  # grey borders top and bottom
    assert not np.all(fitted[16:48] == 114)
    x = prep(frame)
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0].transpose(1, 2, 0), fitted.astype(np.float32))


def test_geometry_maps_boxes_back_to_the_frame():
    geometry = Preprocess(size=(480, 640)).geometry((576, 768))  # vtest.avi into YOLO's 480x640: same aspect
    assert geometry.pad_top == geometry.pad_left == 0
    boxes = geometry.to_frame(np.array([[0, 0, 640, 480], [320, 240, 330, 250]]))
    np.testing.assert_allclose(boxes[0], [0, 0, 768, 576], rtol=1e-6)
    np.testing.assert_allclose(boxes[1], [384, 288, 396, 300], rtol=1e-6)
    padded = Geometry((100, 200), (64, 64), 0.32, 0.32, 16, 0)
    np.testing.assert_allclose(padded.to_frame(np.array([[0, 16, 64, 48]]))[0], [0, 0, 200, 100], rtol=1e-6)


def test_resize_stretches_and_none_keeps_the_frame(rng):
    frame = rng.integers(0, 256, (50, 100, 3), dtype=np.uint8)
    assert Preprocess(size=(32, 32), resize="resize").fit(frame).shape == (32, 32, 3)
    kept = Preprocess(size=None, scale=1.0, color="BGR", layout="NHWC")(frame)
    np.testing.assert_array_equal(kept[0], frame.astype(np.float32))
    with pytest.raises(VideoError, match="resize is 'none'"):
        Preprocess(size=(32, 32), resize="none")(frame)


def test_values_colour_order_and_layout(rng):
    frame = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)
    prep = Preprocess(size=None, scale=0.5, mean=(1.0, 2.0, 3.0), std=(2.0, 4.0, 8.0), color="RGB", layout="NHWC")
    x = prep(frame)
    assert x.shape == (1, 8, 10, 3)
    rgb = frame[:, :, ::-1].astype(np.float64)
    expected = (rgb * 0.5 - np.array([1.0, 2.0, 3.0])) / np.array([2.0, 4.0, 8.0])
    np.testing.assert_allclose(x[0], expected, rtol=1e-6, atol=1e-6)
    bgr = Preprocess(size=None, scale=1.0, color="BGR")(frame)
    np.testing.assert_array_equal(bgr[0], frame.transpose(2, 0, 1).astype(np.float32))


def test_grey_input_is_one_channel_and_exact_for_grey_frames(rng):
    grey = rng.integers(0, 256, (8, 10), dtype=np.uint8)
    x = Preprocess(size=None, color="GRAY")(np.repeat(grey[:, :, None], 3, axis=2))
    assert x.shape == (1, 1, 8, 10)
    np.testing.assert_array_equal(x[0, 0], grey.astype(np.float32) * np.float32(1 / 255))
    colour = Preprocess(size=None, color="GRAY", scale=1.0)(np.full((2, 2, 3), (10, 20, 30), np.uint8))
    np.testing.assert_allclose(colour, 0.114 * 10 + 0.587 * 20 + 0.299 * 30, rtol=1e-6)


def test_defaults_from_the_model_input_shape():
    pnet_like = Preprocess.for_model_input([1, 288, 384, 3])
    assert (pnet_like.layout, pnet_like.size, pnet_like.color) == ("NHWC", (288, 384), "RGB")
    yolo_dynamic = Preprocess.for_model_input(["batch", 3, "height", "width"])
    assert (yolo_dynamic.layout, yolo_dynamic.size) == ("NCHW", None)
    grey = Preprocess.for_model_input([1, 1, 64, 64])
    assert grey.color == "GRAY" and grey.channels == 1
    asked = Preprocess.for_model_input(["batch", 3, "height", "width"], size=(480, 640), scale=1.0)
    assert asked.size == (480, 640) and asked.scale == 1.0


def test_options_that_do_not_fit_the_model_are_refused():
    with pytest.raises(VideoError, match="3 channels"):
        Preprocess.for_model_input([1, 3, 32, 32], color="GRAY")
    with pytest.raises(VideoError, match="32x32"):
        Preprocess.for_model_input([1, 3, 32, 32], size=(64, 64))
    with pytest.raises(VideoError, match="4-D"):
        Preprocess.for_model_input([1, 10])
    with pytest.raises(VideoError, match="resize"):
        Preprocess(size=(8, 8), resize="crop")
    with pytest.raises(VideoError, match="std"):
        Preprocess(std=(1.0, 0.0, 1.0))
    with pytest.raises(VideoError, match="uint8"):
        Preprocess(size=None)(np.zeros((4, 4, 3), np.float32))


# ------------------------------------------------------------------ reading and writing


def test_video_file_round_trip_with_start_step_and_count(tmp_path, rng):
    frames = random_frames(rng, 12)
    path = write_video(tmp_path / "clip.avi", frames, codec="FFV1")  # lossless: frames come back exactly
    assert frame_count(path) == 12
    read = list(read_frames(path))
    assert len(read) == 12
    for got, want in zip(read, frames):
        np.testing.assert_array_equal(got, want)
    picked = list(read_frames(path, count=3, start=2, step=4))
    assert len(picked) == 3
    for got, index in zip(picked, (2, 6, 10)):
        np.testing.assert_array_equal(got, frames[index])
    assert len(list(read_frames(path, count=50))) == 12  # a short clip just ends


def test_folder_of_images_in_natural_order(tmp_path, rng):
    frames = random_frames(rng, 11, 16, 20)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(tmp_path / f"frame{i}.png"), frame)
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in image_files(tmp_path)][:3] == ["frame0.png", "frame1.png", "frame2.png"]
    assert frame_count(tmp_path) == 11
    for got, want in zip(read_frames(tmp_path), frames):
        np.testing.assert_array_equal(got, want)


def test_arrays_and_grey_frames_are_accepted(rng):
    stack = rng.integers(0, 256, (4, 6, 8, 3), dtype=np.uint8)
    assert len(list(read_frames(stack, start=1))) == 3
    grey = [rng.integers(0, 256, (6, 8), dtype=np.uint8)]
    (frame,) = read_frames(grey)
    assert frame.shape == (6, 8, 3) and np.array_equal(frame[:, :, 0], grey[0])


def test_missing_or_unreadable_sources_raise_video_error(tmp_path):
    with pytest.raises(VideoError, match="no such"):
        read_frames(tmp_path / "missing.mp4")
    with pytest.raises(VideoError, match="no images"):
        list(read_frames(tmp_path))
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video at all")
    with pytest.raises(VideoError):
        list(read_frames(broken))
    with pytest.raises(VideoError, match="no frames"):
        write_video(tmp_path / "empty.avi", [])
    with pytest.raises(VideoError, match="step"):
        read_frames([np.zeros((2, 2, 3), np.uint8)], step=0)

"""`demo`: the embedded digit detector, the clip it generates, reading its output, and the command itself."""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from deltaonnx import demo


def test_generated_clip_is_deterministic_static_and_knows_its_digits():
    clip = demo.make_clip(12, size=(96, 128), n_digits=3, seed=5)
    again = demo.make_clip(12, size=(96, 128), n_digits=3, seed=5)
    assert len(clip.frames) == len(clip.truth) == 12
    assert all(np.array_equal(a, b) for a, b in zip(clip.frames, again.frames))
    frame = clip.frames[0]
    assert frame.shape == (96, 128, 3) and frame.dtype == np.uint8
    assert np.array_equal(frame[:, :, 0], frame[:, :, 2])  # grey
    for digits in clip.truth:
        assert len(digits) == 3
        for digit, y, x in digits:
            assert 0 <= digit <= 9 and demo.GLYPH / 2 <= y <= 96 - demo.GLYPH / 2 and 0 < x < 128
    # a static camera: away from the digits only sensor noise changes between frames
    difference = np.abs(clip.frames[1].astype(int) - clip.frames[0].astype(int))[:, :, 0]
    far = np.ones_like(difference, bool)
    for _, y, x in clip.truth[0] + clip.truth[1]:
        far[max(0, int(y) - 20):int(y) + 20, max(0, int(x) - 20):int(x) + 20] = False
    assert difference[far].max() <= 12 and difference[far].mean() < 3


def test_glyphs_upscale_to_coverage_in_unit_range():
    glyph = np.zeros((8, 8))
    glyph[2:6, 3:5] = 16
    coverage = demo.upscale_glyph(glyph, 24)
    assert coverage.shape == (24, 24) and coverage.dtype == np.float32
    assert coverage.min() == 0 and coverage.max() == pytest.approx(1.0)
    assert coverage[12, 12] == pytest.approx(1.0) and coverage[0, 0] == 0


def test_decode_digits_finds_peaks_and_keeps_them_apart():
    logits = np.zeros((11, 20, 30), np.float32)
    logits[0] = 5.0  # background everywhere
    logits[1 + 7, 5, 6] = 10.0  # a 7 centred at cell (5, 6)
    logits[1 + 7, 5, 7] = 9.0  # its neighbour: the same digit, suppressed
    logits[1 + 2, 15, 25] = 10.0  # a 2 far away
    found = demo.decode_digits(logits)
    assert [(f.digit, f.y, f.x) for f in found] == [(7, 5 * 4 + 1.5, 6 * 4 + 1.5), (2, 15 * 4 + 1.5, 25 * 4 + 1.5)]
    assert demo.decode_digits(np.zeros((1, 11, 4, 4), np.float32) + 10 * np.eye(11)[0][None, :, None, None]) == []


def test_point_agreement():
    agreement = demo.PointAgreement(radius=5)
    found = [demo.FoundDigit(3, 10, 10, 0.9), demo.FoundDigit(4, 50, 50, 0.8), demo.FoundDigit(5, 90, 90, 0.7)]
    agreement.add(found, [(3, 12, 11), (4, 50, 60), (8, 0, 0)])  # hit, too far, missed
    assert (agreement.true_positives, agreement.false_positives, agreement.false_negatives) == (1, 2, 2)
    assert agreement.f1 == pytest.approx(2 * 1 / (2 * 1 + 2 + 2))


def test_png_writer_without_opencv(tmp_path, monkeypatch):
    cv2 = pytest.importorskip("cv2")
    image = np.random.default_rng(0).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    monkeypatch.setitem(sys.modules, "cv2", None)  # `import cv2` now fails: the zlib encoder writes it
    path = demo.write_png(tmp_path / "plain.png", image)
    monkeypatch.undo()
    np.testing.assert_array_equal(cv2.imread(str(path)), image)


def test_embedded_model_is_small_and_described():
    assert demo.DEFAULT_MODEL.is_file() and demo.HOLDOUT_DIGITS.is_file()
    size = demo.DEFAULT_MODEL.stat().st_size + demo.HOLDOUT_DIGITS.stat().st_size
    assert size < 2 * 2**20
    import onnx

    model = onnx.load(str(demo.DEFAULT_MODEL))
    assert [i.name for i in model.graph.input] == ["image"] and [o.name for o in model.graph.output] == ["logits"]
    images, labels = demo.load_holdout_digits()
    assert images.shape[1:] == (8, 8) and len(images) == len(labels) and set(labels) == set(range(10))


def test_demo_command_runs_offline_and_writes_its_picture(cpu_op_library, tmp_path, capsys):
    pytest.importorskip("cv2")
    from deltaonnx.cli import main

    picture, out = tmp_path / "demo.png", tmp_path / "demo.json"
    code = main(["demo", "--clip-frames", "24", "--warmup", "3", "-o", str(picture), "--json", str(out), "--quiet"])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "dense ORT" in stdout and "tau=0 (exact)" in stdout and "tau=0.05 (gate)" in stdout
    assert "equal dense ORT's (yes" in stdout
    result = json.loads(out.read_text())
    exact, gated = result["runs"]
    assert exact["equal_to_dense"] is True
    assert gated["conv_flops_redone"]["mean"] < exact["conv_flops_redone"]["mean"]  # the gate ignores sensor noise
    digits = result["digits"]
    assert digits["dense_f1_vs_truth"] >= 0.8  # the embedded detector finds the held-out digits
    assert digits["runs"][0]["f1_vs_dense"] == 1.0  # exact: the same digits as dense ORT
    assert picture.read_bytes().startswith(b"\x89PNG")


def test_demo_errors(tmp_path, capsys):
    from deltaonnx.cli import main

    assert main(["demo", "-o", str(tmp_path / "out.jpg")]) == 2
    assert ".png" in capsys.readouterr().err
    assert main(["demo", "--model", str(tmp_path / "missing.onnx")]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["demo", "--video", str(tmp_path / "missing.avi")]) == 2
    assert "no such video" in capsys.readouterr().err
    assert main(["demo", "--detections", "yolo"]) == 2
    assert "--model" in capsys.readouterr().err

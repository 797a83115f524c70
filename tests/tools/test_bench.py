"""`bench` (deltaonnx.bench) and the box decoding/matching it uses (deltaonnx.detections).

Zoo models on short synthetic clips written with OpenCV; behaviour only (equality at threshold 0, the report's
fields, sweeps, errors), never timing."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from deltaonnx.detections import (BoxAgreement, Detections, MarginBoxAgreement, box_iou, decode_with_margin,
                                  decode_yolo, flicker, match, match_with_margin, nms)

cv2 = pytest.importorskip("cv2")


# ------------------------------------------------------------------ box decoding and matching (no op library)


def yolo_output(boxes_cxcywh, class_scores):
    """A YOLOv8-style [1, 4 + C, anchors] output."""
    return np.concatenate([np.asarray(boxes_cxcywh, np.float32).T, np.asarray(class_scores, np.float32).T])[None]


def test_box_iou_known_values():
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0], [0.0, 0.0, 0.0]])


def test_nms_suppresses_overlaps_of_one_class_only():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert list(nms(boxes, scores, 0.5)) == [0, 3]
    assert list(nms(boxes, scores, 0.5, classes=np.array([0, 0, 1, 0]))) == [0, 2, 3]
    assert list(nms(boxes, scores, 0.5, max_keep=1)) == [0]


def test_decode_yolo_layouts_threshold_and_nms():
    boxes = [[20, 20, 10, 10], [21, 20, 10, 10], [60, 60, 8, 8], [5, 5, 4, 4]] + [[0, 0, 1, 1]] * 4
    scores = [[0.9, 0.1], [0.8, 0.1], [0.1, 0.7], [0.2, 0.1]] + [[0.0, 0.0]] * 4  # from the 4th: below conf 0.25
    output = yolo_output(boxes, scores)
    (found,) = decode_yolo(output)
    assert len(found) == 2
    np.testing.assert_allclose(found.boxes[0], [15, 15, 25, 25])
    assert list(found.classes) == [0, 1] and found.scores[0] == pytest.approx(0.9)
    (transposed,) = decode_yolo(output.transpose(0, 2, 1))
    np.testing.assert_array_equal(transposed.boxes, found.boxes)
    with_objectness = np.concatenate([output[:, :4], np.full((1, 1, 8), 0.5, np.float32), output[:, 4:]], axis=1)
    (halved,) = decode_yolo(with_objectness, objectness=True)
    assert list(halved.classes) == [0, 1] and halved.scores[0] == pytest.approx(0.45)
    with pytest.raises(ValueError, match="class scores"):
        decode_yolo(np.zeros((1, 4, 10), np.float32))


def test_matching_counts_and_f1():
    reference = Detections([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0.9, 0.9, 0.9], [0, 0, 1])
    candidate = Detections([[0, 0, 10, 11], [20, 20, 30, 30], [40, 40, 50, 50], [70, 70, 80, 80]],
                           [0.9, 0.8, 0.7, 0.6], [0, 0, 0, 0])  # third: wrong class; fourth: nothing there
    result = match(candidate, reference)
    assert (result.true_positives, result.false_positives, result.false_negatives) == (2, 2, 1)
    agreement = BoxAgreement()
    agreement.add(candidate, reference)
    assert agreement.f1 == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert agreement.mean_iou == pytest.approx((10 / 11 + 1.0) / 2)
    assert match(candidate, reference, class_aware=False).true_positives == 3
    empty = BoxAgreement()
    empty.add(Detections.empty(), Detections.empty())
    assert empty.f1 == 1.0 and empty.mean_iou == 1.0


# ------------------------------------------------------------------ bench on zoo models (needs the op library)


def write_clip(path, model_hw, n_frames=10, layout="NCHW"):
    """A synthetic clip (static, moving blob, noise, gain change, ...) as a lossless AVI of BGR frames."""
    import synthetic_video

    frames = synthetic_video.sequence((1, 3, *model_hw), n_frames, seed=3)
    images = [np.ascontiguousarray((f.data[0].transpose(1, 2, 0) * 255).round().astype(np.uint8)) for f in frames]
    from deltaonnx.video import write_video

    return write_video(path, images, codec="FFV1")


@pytest.fixture(scope="module")
def yolo_files(tmp_path_factory):
    import zoo

    folder = tmp_path_factory.mktemp("bench_yolo")
    model = folder / "yolo.onnx"
    onnx.save(zoo.with_plausible_boxes(zoo.yolov8_like((64, 64))), model)
    return model, write_clip(folder / "clip.avi", (64, 96), n_frames=10)


@pytest.fixture(scope="module")
def pnet_files(tmp_path_factory):
    import zoo

    folder = tmp_path_factory.mktemp("bench_pnet")
    model = folder / "pnet.onnx"
    onnx.save(zoo.nhwc_input((48, 64)), model)
    return model, write_clip(folder / "clip.avi", (48, 64), n_frames=9)


def run_cli(capsys, *argv):
    from deltaonnx.cli import main

    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse usage errors, if main lets them through
        code = stop.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_threshold_zero_equals_dense_and_json_has_every_field(cpu_op_library, pnet_files, tmp_path, capsys):
    model, clip = pnet_files
    out = tmp_path / "result.json"
    code, stdout, stderr = run_cli(capsys, "bench", model, "--video", clip, "--warmup", 2, "--profile-frames", 3,
                                   "--scale", 1, "--mean", 127.5, "--std", 128, "--json", out, "--quiet", "--profile")
    assert code == 0, stderr
    assert "dense ORT" in stdout and "deltaonnx" in stdout
    result = json.loads(out.read_text())
    assert result["frames_read"] == 9 and result["frames_timed"] == 7 and result["threads"] == 1
    assert result["input"]["shape"] == [1, 48, 64, 3]
    assert result["machine"]["cpu"] and result["dense"]["ms_per_frame"] > 0
    (run,) = result["runs"]
    assert run["threshold"] == 0 and run["inner_threshold"] == 0
    assert run["equal_to_dense"] is True and run["max_rel"] <= 1e-4
    assert set(run["outputs"]) == {"prob", "box"}
    for key in ("ms_per_frame", "fps", "speedup", "ideal_speedup", "achieved_share", "state_bytes"):
        assert run[key] is not None and run[key] > 0, key
    assert run["speedup"] == pytest.approx(result["dense"]["ms_per_frame"] / run["ms_per_frame"])
    assert 0 < run["conv_flops_redone"]["mean"] <= 1 and run["conv_flops_redone"]["p90"] <= 1
    assert run["nodes"] and all(0 <= n["fraction_mean"] <= n["fraction_p90"] + 1e-12 <= 1 + 1e-12
                                for n in run["nodes"])
    assert {n["op"] for n in run["nodes"]} >= {"DeltaConv"}
    assert sum(n["flops"] or 0 for n in run["nodes"]) > 0
    assert result["dense"]["profile"]["conv_work_ms"] > 0
    assert run["profile"]["by_op"].get("DeltaConv", 0) > 0
    # Per node, the ideal is dense ORT's own time for that conv x the recomputed fraction, and the table says so.
    convs = [n for n in run["nodes"] if n["op"] == "DeltaConv"]
    assert convs and all(n["dense_ms"] is not None and n["dense_ms"] > 0 for n in convs), convs
    for n in convs:
        assert n["ideal_ms"] == pytest.approx(n["dense_ms"] * n["fraction_mean"])
    assert "per Delta node" in stdout and f"all {len(run['nodes'])}" in stdout


def test_sweeps_give_one_row_per_value_and_a_plot(cpu_op_library, yolo_files, tmp_path, capsys):
    model, clip = yolo_files
    out, plot = tmp_path / "sweep.json", tmp_path / "sweep.png"
    code, stdout, stderr = run_cli(capsys, "bench", model, "--video", clip, "--frames", 6,
                                   "--warmup", 1, "--profile-frames", 2, "--thresholds", "0,0.05",
                                   "--inner-thresholds", "0,0.1", "--json", out, "--plot", plot, "--quiet")
    assert code == 0, stderr
    runs = json.loads(out.read_text())["runs"]
    assert [(r["threshold"], r["inner_threshold"]) for r in runs] == [(0, 0), (0, 0.1), (0.05, 0), (0.05, 0.1)]
    assert runs[0]["equal_to_dense"] is True
    assert plot.read_bytes().startswith(b"\x89PNG")
    assert stdout.count("deltaonnx ") >= 4


def test_a_gate_sweep_names_each_row_by_its_gate(cpu_op_library, pnet_files, capsys):
    # Rows of one tau and inner differ only in their gate: the summary table must say which row is which.
    model, clip = pnet_files
    code, stdout, stderr = run_cli(capsys, "bench", model, "--video", clip, "--warmup", 2, "--profile-frames", 0,
                                   "--scale", 1, "--mean", 127.5, "--std", 128, "--threshold", 0.1,
                                   "--gates", "pixel,block:8:0.5", "--quiet")
    assert code == 0, stderr
    summary = stdout.split("output agreement")[0]
    rows = [line for line in summary.splitlines() if line.startswith("deltaonnx ") and "bench:" not in line]
    assert len(rows) == 2 and "gate=pixel" in rows[0] and "gate=block8/0.5" in rows[1], summary


def test_margin_matching_forgives_only_boxes_near_the_threshold():
    """conf 0.3, margin 0.1: a missed dense box counts above 0.4; a shown delta box (> 0.3) is no false positive
    when it matches a dense box above 0.2."""
    def box(k):  # far apart, one per k
        return [100 * k, 0, 100 * k + 10, 10]

    reference = Detections([box(0), box(1), box(2), box(3), box(4)], [0.45, 0.35, 0.25, 0.15, 0.9], [0] * 5)
    candidate = Detections([box(2), box(3), box(4), box(5), box(6)], [0.5, 0.5, 0.29, 0.5, 0.25], [0] * 5)
    result = match_with_margin(candidate, reference, conf_threshold=0.3, margin=0.1)
    # box 0 (0.45) missed: counts; box 1 (0.35) missed: forgiven; box 2 matched by a shown box: true positive;
    # shown box 3 matches a dense box of 0.15 only (below 0.2): false positive; box 4 (0.9) found only at 0.29,
    # not shown: missed; shown box 5 has no dense box: false positive; box 6 is not shown: nothing
    assert (result.true_positives, result.false_positives, result.false_negatives) == (1, 2, 2)
    strict = match(candidate.above(0.3), reference.above(0.3))  # box 2 of 0.25 is not a dense box at 0.3
    assert (strict.true_positives, strict.false_positives, strict.false_negatives) == (0, 3, 3)
    agreement = MarginBoxAgreement(conf_threshold=0.3, margin=0.1)
    agreement.add(candidate, reference)
    assert agreement.f1 == pytest.approx(2 * 1 / (2 * 1 + 2 + 2))
    assert agreement.as_dict()["margin"] == 0.1
    # with no margin it is the strict count
    none = match_with_margin(candidate, reference, conf_threshold=0.3, margin=0.0)
    assert (none.true_positives, none.false_positives, none.false_negatives) == (0, 3, 3)


def test_decoding_down_to_the_margin_keeps_what_the_threshold_keeps():
    rng = np.random.default_rng(1)
    centres = rng.uniform(0, 64, (300, 2))
    output = yolo_output(np.concatenate([centres, rng.uniform(4, 16, (300, 2))], axis=1), rng.random((300, 3)))
    (strict,), (wide,) = decode_yolo(output, conf_threshold=0.5), decode_with_margin(output, 0.5)
    assert len(wide) > len(strict) > 0 and wide.scores.min() > 0.4
    shown = wide.above(0.5)  # NMS never lets a weaker box remove a stronger one
    np.testing.assert_array_equal(shown.boxes, strict.boxes)
    np.testing.assert_array_equal(shown.classes, strict.classes)


def test_flicker_compares_each_frame_with_the_previous():
    a, b = [0, 0, 10, 10], [50, 50, 60, 60]
    frames = [Detections([a, b], [0.9, 0.9], [0, 0]), Detections([a, b], [0.9, 0.8], [0, 0]),
              Detections([a], [0.9], [0]), Detections([a], [0.9], [1])]  # b disappears, then a changes class
    steady = flicker(frames)
    assert (steady.true_positives, steady.false_positives, steady.false_negatives) == (3, 1, 2)
    assert steady.frames == 3 and 1 - steady.f1 == pytest.approx(1 - 6 / 9)
    assert flicker(frames[:1]).frames == 0 and flicker(frames[:1]).f1 == 1.0


def test_yolo_boxes_against_dense_and_change_map_pictures(cpu_op_library, yolo_files, tmp_path, capsys):
    model, clip = yolo_files
    out, maps = tmp_path / "boxes.json", tmp_path / "maps"
    code, stdout, stderr = run_cli(capsys, "bench", model, "--video", clip, "--warmup", 2,
                                   "--profile-frames", 0, "--detections", "yolo", "--maps", maps, "--no-fallback",
                                   "--maps-frames", 2, "--json", out, "--quiet")
    assert code == 0, stderr
    (run,) = json.loads(out.read_text())["runs"]
    boxes = run["detections"]
    assert boxes["frames"] == 10 and boxes["reference_boxes"] > 0
    assert boxes["f1"] >= 0.95  # threshold 0: the same outputs give the same boxes
    assert run["detections_margin"]["f1"] >= boxes["f1"]  # forgives more, never less
    assert run["detections_margin"]["reference_boxes"] <= boxes["reference_boxes"] + boxes["false_positives"] + 99
    flicker_counts = json.loads(out.read_text())["dense"]["box_flicker_counts"]
    assert flicker_counts["frames"] == 9  # consecutive pairs of 10 frames
    assert json.loads(out.read_text())["dense"]["box_flicker"] == pytest.approx(1 - flicker_counts["f1"])
    assert "dense ORT's own box flicker" in stdout and "margin F1" in stdout
    assert run["ideal_speedup"] is None  # --profile-frames 0: no dense profile, no bound
    assert run["dense_fallback_frames"] == 0  # --no-fallback: every frame ran the Delta ops
    pictures = sorted(maps.glob("*.png"))
    assert len(pictures) == 2
    picture = cv2.imread(str(pictures[0]))
    assert picture is not None and picture.shape[1] > 96


def test_converted_model_with_its_original(cpu_op_library, pnet_files, tmp_path, capsys):
    import deltaonnx

    model, clip = pnet_files
    converted = tmp_path / "pnet.delta.onnx"
    onnx.save(deltaonnx.convert(model, threshold=0.02), converted)
    out = tmp_path / "c.json"
    code, stdout, stderr = run_cli(capsys, "bench", converted, "--original", model, "--video", clip, "--warmup", 1,
                                   "--profile-frames", 0, "--json", out, "--quiet")
    assert code == 0, stderr
    (run,) = json.loads(out.read_text())["runs"]
    assert run["threshold"] == pytest.approx(0.02)
    # The per-node table shows each node's threshold: the input gate's 0.02, exact (0) inner nodes.
    table = stdout[stdout.index("recomputed fraction of each Delta node"):]
    header = table.splitlines()[1]
    assert "tau" in header
    gate_row = next(line for line in table.splitlines() if "DeltaConv_0" in line)
    assert " 0.02 " in gate_row
    code, _, stderr = run_cli(capsys, "bench", converted, "--video", clip)
    assert code == 2 and "--original" in stderr
    code, _, stderr = run_cli(capsys, "bench", converted, "--original", model, "--video", clip, "--thresholds", "0,1")
    assert code == 2 and "sweep" in stderr


@pytest.mark.parametrize("extra, message", [
    (["--threshold", "0.1", "--thresholds", "0,0.1"], "not both"),
    (["--warmup", "50"], "nothing was timed"),
    (["--plot", "out.jpg"], ".png"),
    (["--original", "{model}"], "not converted"),
    (["--detections", "yolo", "--detections-output", "nope"], "nope"),
])
def test_cli_errors_are_one_line(cpu_op_library, pnet_files, capsys, extra, message):
    model, clip = pnet_files
    extra = [str(model) if e == "{model}" else e for e in extra]
    code, _, stderr = run_cli(capsys, "bench", model, "--video", clip, "--quiet", "--profile-frames", 0, *extra)
    assert code == 2
    assert message in stderr and stderr.count("\n") == 1


def test_usage_errors(pnet_files, tmp_path, capsys):
    model, clip = pnet_files
    code, _, stderr = run_cli(capsys, "bench", model, "--video", tmp_path / "missing.avi")
    assert code == 2 and "no such video" in stderr
    code, _, stderr = run_cli(capsys, "bench", model, "--video", clip, "--thresholds", "a,b")
    assert code == 2 and "comma-separated numbers" in stderr
    code, _, stderr = run_cli(capsys, "bench", model)
    assert code == 2 and "--video" in stderr


def test_ideal_speedup_is_amdahls_bound_and_none_when_nothing_bounds_it():
    """bench, calibrate and the oracle share it; a clip whose frames redo no conv work on a model that is all conv
    work made calibrate divide by zero (its held-out check) instead of reporting no bound."""
    from deltaonnx.bench import ideal_speedup

    assert ideal_speedup(0.5, 0.5) == pytest.approx(1 / 0.75)
    assert ideal_speedup(0.0, 0.3) == pytest.approx(1.0)  # no conv work: nothing to gain
    assert ideal_speedup(1.0, 0.25) == pytest.approx(4.0)
    assert ideal_speedup(1.0, 0.0) is None


def test_progress_prints_lines_when_not_a_terminal():
    import io

    from deltaonnx.bench import Progress

    stream = io.StringIO()
    progress = Progress(20, "bench", stream=stream)
    for done in range(1, 21):
        progress.update(done, "note")
    lines = stream.getvalue().splitlines()
    assert 2 <= len(lines) <= 11 and lines[-1].startswith("bench [") and "20/20" in lines[-1]


def test_block_interleaving_does_not_change_what_is_measured(cpu_op_library, pnet_files):
    """Each model sees every frame in order whatever the block size: the same fractions and agreement."""
    from deltaonnx.bench import BenchOptions, DeltaConfig, run_benchmark
    from deltaonnx.video import Preprocess, read_frames

    model, clip = pnet_files
    preprocess = Preprocess(size=None, scale=1.0, mean=(127.5,), std=(128.0,), layout="NHWC")
    results = []
    for block in (1, 4):
        options = BenchOptions(warmup=2, interleave=block, profile_frames=0, progress=False)
        seen = []
        result = run_benchmark(model, read_frames(clip), preprocess, configs=[DeltaConfig(0.05, 0.0)],
                               options=options, capture_maps_at=[4],
                               on_frame=lambda r: seen.append((r.index, r.timed, r.change_maps[0] is not None)))
        assert seen == [(i, i >= 2, i == 4) for i in range(9)]
        assert result["interleave"] == block and result["frames_timed"] == 7
        results.append(result["runs"][0])
    first, second = results
    assert [n["fraction_mean"] for n in first["nodes"]] == [n["fraction_mean"] for n in second["nodes"]]
    assert first["outputs"] == second["outputs"]
    assert 0 < first["conv_flops_redone"]["mean"] < 1


def test_profile_of_the_converted_model_replays_the_last_frames_from_the_ops_state(cpu_op_library, pnet_files):
    """--profile times the last frames from the ops' own state (what they cost in the timed run: drifted
    references recompute more than fresh ones); without a known clip length from an empty state, and says so."""
    from deltaonnx.bench import BenchOptions, DeltaConfig, format_report, run_benchmark
    from deltaonnx.video import Preprocess, read_frames

    model, clip = pnet_files
    preprocess = Preprocess(size=None, scale=1.0, mean=(127.5,), std=(128.0,), layout="NHWC")
    options = BenchOptions(warmup=2, profile_frames=4, profile_delta=True, dense_fallback=False, progress=False)
    for frame_total, seeded, frames in ((9, True, 3), (None, False, 4)):
        result = run_benchmark(model, read_frames(clip), preprocess, configs=[DeltaConfig(0.05, 0.0)],
                               options=options, frame_total=frame_total)
        (run,) = result["runs"]
        # runs after the first (seeded: the kept frames after the one the state was taken at); frames that
        # change nothing are skipped without an ORT run
        assert run["profile"]["from_ops_state"] is seeded and 0 < run["profile"]["frames"] <= frames
        assert ("from the ops' state" if seeded else "from empty state") in format_report(result)


def test_oracle_from_the_ops_state_recomputes_what_the_ops_recomputed(cpu_op_library, pnet_files):
    """The ops recompute at pixel granularity (rule 4 without tiles): the numpy reference replaying the last
    frames from the ops' own state (references drifted below tau included) marks the very same pixels.
    Without a known clip length the reference starts from an empty state, and the result says so."""
    from deltaonnx.bench import BenchOptions, DeltaConfig, run_benchmark
    from deltaonnx.video import Preprocess, read_frames

    model, clip = pnet_files
    preprocess = Preprocess(size=None, scale=1.0, mean=(127.5,), std=(128.0,), layout="NHWC")
    options = BenchOptions(warmup=2, profile_frames=4, oracle=True, dense_fallback=False, progress=False)
    for frame_total, seeded in ((9, True), (None, False)):
        result = run_benchmark(model, read_frames(clip), preprocess, configs=[DeltaConfig(0.05, 0.0)],
                               options=options, frame_total=frame_total)
        (run,) = result["runs"]
        oracle = run["oracle"]
        assert oracle["from_ops_state"] is seeded and oracle["frames"] == 4
        nodes = [n for n in run["nodes"] if n["exact_fraction"] is not None]
        assert nodes and any(0 < n["exact_fraction"] < 1 for n in nodes)
        if seeded:
            for n in nodes:
                assert n["exact_fraction"] == pytest.approx(n["fraction_same_frames"], abs=1e-12), n["name"]
            assert oracle["conv_flops_redone_exact"] == pytest.approx(oracle["conv_flops_redone_measured"])


# ------------------------------------------------------------------ issue 17, finding 8: user mistakes, NaN outputs


def with_dynamic_size(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with symbolic height and width (NHWC input), so that any --size reaches ORT."""
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[1].dim_param, dims[2].dim_param = "height", "width"
    for output in model.graph.output:
        for k, dim in enumerate(output.type.tensor_type.shape.dim):
            if k:
                dim.dim_param = f"{output.name}_{k}"
    return model


@pytest.mark.parametrize("extra, message", [
    (["--size", "2x2"], "does not run on input input of shape [1, 2, 2, 3]"),  # smaller than the model's strides
    (["--size", "200000x200000"], "at most 8192 per side"),
    (["--scale", "nan"], "scale must be a finite number"),
    (["--scale", "inf"], "scale must be a finite number"),
    (["--mean", "1,nan,2"], "mean must be finite"),
    (["--std", "inf"], "std must be finite"),
])
def test_bad_preprocessing_is_a_user_error(cpu_op_library, pnet_files, tmp_path, capsys, extra, message):
    model, clip = pnet_files
    dynamic = tmp_path / "dynamic.onnx"
    onnx.save(with_dynamic_size(onnx.load(model)), dynamic)
    code, _, stderr = run_cli(capsys, "bench", dynamic, "--video", clip, "--quiet", "--profile-frames", 0,
                              "--warmup", 1, "--frames", 3, *extra)
    assert code == 2, stderr
    assert message in stderr and stderr.count("\n") == 1 and "internal error" not in stderr


def test_nan_outputs_are_never_equal_to_dense(cpu_op_library, pnet_files):
    """A model whose outputs are NaN (here: times a NaN constant) gives identical all-NaN outputs dense and
    converted; bench must not call that agreement."""
    from onnx import helper, numpy_helper

    from deltaonnx.bench import BenchOptions, run_benchmark
    from deltaonnx.video import Preprocess, read_frames

    model_path, clip = pnet_files
    model = onnx.load(model_path)
    graph = model.graph
    graph.initializer.append(numpy_helper.from_array(np.array(np.nan, np.float32), "not_a_number"))
    for output in graph.output:
        producer = next(n for n in graph.node if output.name in n.output)
        producer.output[list(producer.output).index(output.name)] = output.name + "_number"
        graph.node.append(helper.make_node("Mul", [output.name + "_number", "not_a_number"], [output.name]))
    preprocess = Preprocess.for_model_input([1, 48, 64, 3])
    result = run_benchmark(model, read_frames(clip, 4), preprocess,
                           options=BenchOptions(warmup=1, profile_frames=0, progress=False))
    (run,) = result["runs"]
    assert run["equal_to_dense"] is False and run["max_rel"] == float("inf")


def test_dense_time_of_a_delta_node_is_found_under_the_name_ort_gives_its_fused_conv():
    """ORT names an NCHWc Conv after the output of the last node it fused (BatchNormalization, Clip), so a Delta
    node's dense time is looked up under those outputs too; never spread by FLOPs when ORT timed the conv."""
    from deltaonnx.bench.runner import _attach_node_profile

    dense_profile = {"conv_work_ms": 10.0, "by_node": {"/a/Clip_output_0_nchwc": 0.4, "/b/Conv_output_0_nchwc": 1.0}}
    entry = {"profile": {"by_node": {"DeltaConv_0": 0.8, "DeltaConv_1": 1.1}}, "conv_flops_redone": {"mean": 0.5},
             "nodes": [{"name": "DeltaConv_0", "source": "/a/Conv", "fraction_mean": 0.5, "flops": 9.0},
                       {"name": "DeltaConv_1", "source": "/b/Conv", "fraction_mean": 1.0, "flops": 1.0}]}
    outputs = {"/a/Conv": ["/a/Conv_output_0"], "/a/BatchNormalization": ["/a/BatchNormalization_output_0"],
               "/a/Clip": ["/a/Clip_output_0"], "/b/Conv": ["/b/Conv_output_0"]}
    _attach_node_profile(entry, dense_profile, {"DeltaConv_0": 9.0, "DeltaConv_1": 1.0},
                         {"DeltaConv_0": ["/a/BatchNormalization", "/a/Clip"]}, outputs)
    first, second = entry["nodes"]
    assert first["dense_ms"] == pytest.approx(0.4) and first["ideal_ms"] == pytest.approx(0.2)
    assert second["dense_ms"] == pytest.approx(1.0) and second["ideal_ms"] == pytest.approx(1.0)

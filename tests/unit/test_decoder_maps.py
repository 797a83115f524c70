"""Change maps from the video decoder (deltaonnx.decoder_maps): the codec's motion vectors mark where a square
moves over a still background, and the map fed to a block-gated model keeps the still part's outputs as they
were, exactly (issue 14: a map derived from the decoder's side data)."""
from __future__ import annotations

import numpy as np
import pytest

from deltaonnx.decoder_maps import MACROBLOCK, decoder_change_maps, gate_cells

av = pytest.importorskip("av")
cv2 = pytest.importorskip("cv2")


def _moving_square_clip(path, frames=12, h=96, w=128):
    """MPEG-4 part 2 (inter-coded, so the decoder exports motion vectors): a 24x24 square steps 4 px right per
    frame over a still shaded background."""
    ramp = np.linspace(40, 200, w, dtype=np.float32)[None, :, None] + np.linspace(0, 40, h, dtype=np.float32)[:, None, None]
    background = np.broadcast_to(ramp, (h, w, 3)).astype(np.uint8)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (w, h))
    assert writer.isOpened()
    for i in range(frames):
        frame = background.copy()
        frame[32:56, 16 + 4 * i:40 + 4 * i] = (255, 255, 255)
        writer.write(frame)
    writer.release()
    return path


def test_the_decoders_map_marks_where_the_square_moves_and_little_else(tmp_path):
    clip = _moving_square_clip(tmp_path / "square.mp4")
    maps = [marks for _, marks in decoder_change_maps(clip)]
    assert len(maps) == 12 and maps[0].shape == (96 // MACROBLOCK, 128 // MACROBLOCK)
    assert maps[0].all()  # nothing to compare the first frame with
    for i, marks in enumerate(maps[1:], start=1):
        square_cols = range((16 + 4 * i) // MACROBLOCK, (40 + 4 * i - 1) // MACROBLOCK + 1)
        assert any(marks[r, c] for r in (2, 3) for c in square_cols), f"frame {i}: the square's blocks unmarked"
        assert marks[5].sum() + marks[0].sum() <= 4, f"frame {i}: still rows marked {marks}"  # far from the square


def test_gate_cells_resample_the_macroblock_grid_to_the_models_gate_blocks():
    marks = np.zeros((36, 48), np.uint8)
    marks[3, 5] = 1
    cells = gate_cells(marks, (576, 768), (288, 384), 8)  # vtest to PNet: one macroblock = one 8x8 gate block
    assert cells.shape == (1, 1, 36, 48) and np.argwhere(cells[0, 0]).tolist() == [[3, 5]]
    cells = gate_cells(marks, (576, 768), (288, 384), 16)  # coarser gate blocks: the one that covers it
    assert cells.shape == (1, 1, 18, 24) and np.argwhere(cells[0, 0]).tolist() == [[1, 2]]
    cells = gate_cells(np.ones((2, 2), np.uint8), (20, 30), (10, 15), 4)  # partial macroblocks and gate blocks
    assert cells.shape == (1, 1, 3, 4) and cells.all()


def test_a_block_gated_model_takes_the_decoders_map_and_stays_near_dense(tmp_path):
    # The plumbing end to end: decoded frames and their maps through DeltaSession.run(change_map=...); what a map
    # promises (unmarked blocks keep their values) is tested with the gate (test_gate_convert.py).
    pytest.importorskip("torch")  # the zoo exports with torch
    import onnxruntime as ort
    import zoo

    import deltaonnx
    from deltaonnx.video import Preprocess

    clip = _moving_square_clip(tmp_path / "square.mp4")
    model = zoo.BUILDERS["unet_like"]()
    dense = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    session = deltaonnx.DeltaSession(deltaonnx.convert(model, threshold=0.02, gate="block", gate_block=16),
                                     dense_fallback=False)
    (inp,) = session.get_inputs()
    size = tuple(inp.shape[2:])
    prep = Preprocess.for_model_input(inp.shape, size=size, resize="resize")
    fractions = []
    for bgr, marks in decoder_change_maps(clip):
        x = prep(bgr)
        (out,) = session.run(None, {inp.name: x}, change_map=gate_cells(marks, bgr.shape[:2], size, 16))
        (want,) = dense.run(None, {inp.name: x})
        assert np.abs(out - want).mean() < 0.05 * np.abs(want).mean() + 1e-3
        fractions.append(session.stats()["nodes"])
    assert len(fractions) == 12

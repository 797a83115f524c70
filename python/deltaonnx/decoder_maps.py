"""Change maps from the video decoder (issue 14): where the codec itself says the picture moved.

An inter-coded clip already carries, per 16x16 macroblock, a motion vector found by the encoder. PyAV exports
them (`flags2=+export_mvs`, the `MOTION_VECTORS` side data of each frame). `decoder_change_maps` marks a
macroblock "may have changed" when its vector is not zero or it has none (intra-coded, or a codec that exports
nothing for it), and `gate_cells` resamples that map to the gate blocks of a model input, for
`DeltaSession.run(change_map=...)` on a model converted with gate="block".

A zero vector does not prove an unchanged block (the residual may still change it), so the map narrows where the
gate looks: measured on vtest (benchmarks/decoder_change_maps.py, docs/results.md) it saves little work and costs
some error. PyAV (`pip install av`) is imported only here.
"""
from __future__ import annotations

import os
from typing import Iterator, Optional, Union

import numpy as np

MACROBLOCK = 16


def _motion_vectors(side_data):
    """The frame's motion vectors, or None. PyAV up to 18.1.0 iterates a frame's side data itself, 18.1.1 (a Mapping)
    their types: each entry is taken as side data where it converts to an array, else looked up."""
    for entry in side_data:
        data = entry if hasattr(entry, "to_ndarray") else side_data[entry]
        if str(data.type).endswith("MOTION_VECTORS"):
            return data
    return None


def decoder_change_maps(path: Union[str, os.PathLike], count: Optional[int] = None
                        ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(uint8 HxWx3 BGR frame, uint8 [ceil(H/16), ceil(W/16)] macroblock map) per decoded frame, in display
    order. The first frame's map marks everything (nothing to compare with)."""
    try:
        import av
    except ImportError as error:
        raise ImportError("decoder change maps need PyAV: pip install av") from error
    container = av.open(str(path))
    try:
        stream = container.streams.video[0]
        stream.codec_context.options = {"flags2": "+export_mvs"}
        rows, cols = -(-stream.height // MACROBLOCK), -(-stream.width // MACROBLOCK)
        for index, frame in enumerate(container.decode(stream)):
            if count is not None and index >= count:
                break
            marks = np.ones((rows, cols), np.uint8)
            vectors = _motion_vectors(frame.side_data)
            if vectors is not None and index > 0:
                mv = vectors.to_ndarray()
                r = np.clip(mv["dst_y"] // MACROBLOCK, 0, rows - 1)
                c = np.clip(mv["dst_x"] // MACROBLOCK, 0, cols - 1)
                moved = (mv["motion_x"] != 0) | (mv["motion_y"] != 0)
                whole = (mv["w"] == MACROBLOCK) & (mv["h"] == MACROBLOCK)
                marks[r[whole & ~moved], c[whole & ~moved]] = 0
                marks[r[moved], c[moved]] = 1  # a moved part marks its macroblock, whatever else said
            yield frame.to_ndarray(format="bgr24"), marks
    finally:
        container.close()


def gate_cells(marks: np.ndarray, frame_hw: tuple[int, int], model_hw: tuple[int, int], block: int) -> np.ndarray:
    """The macroblock map of a frame of frame_hw resampled to a model input of model_hw (the frame scaled to it,
    no padding) as uint8 [1, 1, ceil(h/block), ceil(w/block)]: a gate block is marked when any frame pixel it
    covers lies in a marked macroblock."""
    fh, fw = frame_hw
    mh, mw = model_hw
    full = np.repeat(np.repeat(marks, MACROBLOCK, axis=0), MACROBLOCK, axis=1)[:fh, :fw]
    rows, cols = -(-mh // block), -(-mw // block)
    y0 = np.minimum((np.arange(rows) * block * fh) // mh, fh - 1)
    x0 = np.minimum((np.arange(cols) * block * fw) // mw, fw - 1)
    per_row = np.maximum.reduceat(full, y0, axis=0)
    cells = np.maximum.reduceat(per_row, x0, axis=1)
    return (cells != 0).astype(np.uint8).reshape(1, 1, rows, cols)

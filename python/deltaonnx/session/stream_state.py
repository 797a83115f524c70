"""Everything one stream of a DeltaSession carries between runs."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnxruntime as ort

from .binding import StreamBinding
from .map_buffers import ChangeMapBuffers
from .scratch_buffers import ScratchBuffers
from .state_arena import StateArena


@dataclass
class SpareOutputs:
    """The output buffers of a dropped binding (state or scratch, and maps) and the input shapes they were written
    at: the next binding of the same mode at those shapes binds them as they are (ORT allocates nothing, nothing is
    copied), so a stream moving between delta and stateless runs, or probing from the dense twin, pays no allocation
    at each switch (a new block's first touch may wait on the kernel compacting memory for huge pages: up to ~30 ms
    measured for 13 MB)."""

    input_shapes: tuple
    values: dict[str, ort.OrtValue]  # present name -> buffer
    maps: ChangeMapBuffers
    arena: StateArena | None = None  # delta: the block the values are views of
    scratch: ScratchBuffers | None = None  # stateless: the shared buffers the values are views of


# The counters a stream's prepared run keeps in C++ (ops/pybind/steady_frame_run.cc, same order): they
# live in one int64 array the run writes in place, read and written here through properties of these names.
STEADY_COUNTS = ("runs", "mode_runs", "stateless_runs_total", "probe_interval", "check_wait", "twin_wait")
# Its smoothed values, in one float64 array (NaN: none yet), same order: the FLOP-weighted share of work redone, the
# seconds of ORT's delta runs and of the dense twin's runs (FallbackPolicy's clock), and the last delta run's seconds.
STEADY_SMOOTHED = ("work", "delta_seconds", "twin_seconds", "last_seconds")


def _count(index: int, doc: str) -> property:
    def get(self) -> int:
        return int(self.counts[index])

    def put(self, value: int) -> None:
        self.counts[index] = value

    return property(get, put, doc=doc)


def _smoothed(index: int, doc: str) -> property:
    def get(self) -> float | None:
        value = float(self.smoothed[index])
        return None if value != value else value

    def put(self, value: float | None) -> None:
        self.smoothed[index] = np.nan if value is None else value

    return property(get, put, doc=doc)


@dataclass
class StreamState:
    """Everything one stream carries between runs. Guarded by `lock`; `retired` once reset() dropped it."""

    map_count: int
    counts: np.ndarray = field(default_factory=lambda: np.zeros(len(STEADY_COUNTS), dtype=np.int64))
    smoothed: np.ndarray = field(default_factory=lambda: np.full(len(STEADY_SMOOTHED), np.nan))
    lock: threading.Lock = field(default_factory=threading.Lock)
    retired: bool = False
    # The live state, None while the stream has none (first run, after a reset, shape change or failure).
    binding: StreamBinding | None = None
    values: dict[str, ort.OrtValue] = field(default_factory=dict)  # present name -> live state buffer
    arena: StateArena | None = None  # the host block the state buffers are views of (None: ORT's buffers)
    # per mode ("delta", "stateless"): the buffers of the last binding dropped, bound again at the same input shapes
    spare_outputs: dict[str, SpareOutputs] = field(default_factory=dict)
    prepared: SpareOutputs | None = None  # the spare the binding being built binds (consumed after its first run)
    steady: Callable | None = None  # the next run like the last, prepared (steady_run.py); None after any change
    loaded: dict[str, np.ndarray] = field(default_factory=dict)  # load_state(): past name -> the next run's past
    input_shapes: tuple | None = None  # shapes of the model inputs the state was built for
    output_index: dict[str, int] = field(default_factory=dict)  # bound output -> position in ORT's output vector
    model_outputs: tuple[str, ...] = ()  # model outputs (not state) bound to a fresh buffer on every run
    map_buffers: ChangeMapBuffers | None = None  # the live maps in metadata order, all in one host buffer
    # Per map: the node's FLOPs per frame (batch item) at the shapes of the last delta run (0: unknown). Kept when
    # the state is dropped, so stats() still has them in dense mode; the next binding recomputes them.
    node_flops: np.ndarray | None = None
    flops_total: float = 0.0
    # statistics, per map in metadata order (and `runs`, below)
    last_fraction: np.ndarray | None = None
    fraction_sum: np.ndarray | None = None
    maps_cleared: bool = False  # the last run was skipped: its maps are all zero
    maps_snapshot: list[np.ndarray] | None = None  # the last maps, once the state (and its buffers) is dropped
    skipped_runs: int = 0
    # identical-frame shortcut
    kept_outputs: dict[str, np.ndarray] = field(default_factory=dict)  # private copies of model outputs
    kept_names: frozenset | None = None  # the outputs of the last run among them; None: the last run kept none
    previous_frames: dict[str, np.ndarray] = field(default_factory=dict)  # bitwise mode: the last frames
    finite_state: bool | None = None  # whole-input Delta ops hold a finite X_ref (None: not checked yet)
    check_misses: int = 0  # identical-frame tests failed in a row
    # The fallback for frames that change almost everywhere: "delta"; "dense" (the dense twin, DeltaSession's
    # dense_fallback) or "stateless" (the converted model keeping no state, its stateless_runs); the smoothed
    # FLOP-weighted share of work redone, and the runs in the current mode.
    mode: str = "delta"
    dense_runs_total: int = 0
    scratch: ScratchBuffers | None = None  # the stateless binding's output buffers (its spare keeps them after it)
    probe_rows: np.ndarray | None = None  # the sampled bands of the frame before a probe (probe_check.py)
    probes_skipped: int = 0  # probes the frame check found not worth making
    quiet_checks: int = 0  # checks in a row that found the frames quiet enough for a probe
    twin_sample: int = 0  # the next runs are the dense twin's, timed, the stream staying in delta (its clock)
    twin_fastest: float | None = None  # the fastest of those runs so far
    twin_samples: int = 0  # such runs (also counted in dense_runs_total)

    runs = _count(0, "runs since the last reset")
    mode_runs = _count(1, "runs in the current mode")
    stateless_runs_total = _count(2, "stateless runs since the last reset")
    probe_interval = _count(3, "fallback runs before the next probe (set when the stream falls back)")
    check_wait = _count(4, "runs before the next identical-frame test")
    twin_wait = _count(5, "delta runs before the dense twin's next timed sample")
    work = _smoothed(0, "the smoothed FLOP-weighted share of conv work the delta runs redo")
    delta_seconds = _smoothed(1, "the smoothed seconds of ORT's delta runs since the stream entered delta")
    twin_seconds = _smoothed(2, "the smoothed seconds of the dense twin's runs")
    last_seconds = _smoothed(3, "the seconds of the last delta run (0 for a skipped one)")

    def __post_init__(self):
        self.last_fraction = np.zeros(self.map_count)
        self.fraction_sum = np.zeros(self.map_count)

    def current_maps(self) -> list[np.ndarray] | None:
        """Copies of the last run's maps (None when there are none, e.g. after a failed run)."""
        if self.map_buffers is None:
            return None if self.maps_snapshot is None else [m.copy() for m in self.maps_snapshot]
        if self.maps_cleared:
            return [np.zeros_like(v) for v in self.map_buffers.views]
        return [v.copy() for v in self.map_buffers.views]

    def drop_state(self, keep_maps: bool = False) -> None:
        """Forget the state and its binding; `keep_maps`: keep a copy of the last maps for change_maps()."""
        self.maps_snapshot = self.current_maps() if keep_maps else None
        if self.binding is not None and self.input_shapes is not None and self.map_buffers is not None:
            self.spare_outputs[self.mode] = SpareOutputs(self.input_shapes, self.values, self.map_buffers, self.arena,
                                                         self.scratch if self.mode == "stateless" else None)
        self.prepared = None
        self.steady = None
        self.binding = None
        self.values = {}
        self.arena = None
        self.loaded = {}
        self.input_shapes = None
        self.output_index = {}
        self.model_outputs = ()
        self.map_buffers = None
        self.kept_outputs, self.kept_names = {}, None
        self.previous_frames = {}
        self.finite_state = None

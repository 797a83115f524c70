"""What the passes share: the user's options and, per candidate node, the plan and what was done."""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Optional

from .delta_ops import GATE_RULES, LAYOUT_BLOCKED, LAYOUT_NCHW, LAYOUTS
from .errors import ConversionError
from .protocol import DEFAULT_GATE_BLOCK, DEFAULT_GATE_HARD

# convert's input gate by default (docs/results.md, "The input gate"): the block rule in one DeltaGate, k x k
# blocks of DEFAULT_GATE_BLOCK, every pixel within DEFAULT_INPUT_GATE_HARD x the threshold. Measured on every clip
# against the pixel rule: less work at no more error (PNet/vtest tau 0.1: 8.5% of the conv work against 19.1%,
# prob error 0.0047 against 0.0052 on average, 0.77 against 0.80 at worst; 5 tau is ~5% faster but its worst
# error, 0.91, is above the pixel gate's: faint small objects are seen only through the per-pixel bound). The
# ops' own gate_hard fallback (DEFAULT_GATE_HARD, the inner block rule's default) stays 3 x tau: convert writes
# the input gate's bound explicitly.
DEFAULT_GATE = "block"
DEFAULT_INPUT_GATE_HARD = 4.0

# Decisions recorded per candidate node (Conv, MaxPool and their relatives).
CONVERTED = "converted"
DENSE = "dense"  # eligible, but the cost model keeps it dense
INELIGIBLE = "ineligible"  # cannot be converted (the reason says why)
FUSED = "fused"  # part of another Delta op that is not its own (a squeeze-excite gate's conv: DeltaChannelGate)

# Key of the plan in ir.Node.meta; it follows the node when a pass replaces it by a Delta op.
PLAN_META_KEY = "deltaonnx.plan"


@dataclasses.dataclass(frozen=True)
class ConversionOptions:
    """The knobs of `deltaonnx.convert` (also accepted one by one as its keywords).

    threshold: tau of the Delta ops that read a model input (possibly through Transpose/Cast/Identity),
        in the input's units; inner_threshold: tau of all other Delta ops (0: exact after the gate);
        thresholds: {source node name: tau} overrides for single Conv/MaxPool nodes;
        all_nodes: convert every eligible node, even where the cost model would keep it dense;
        dense_fraction: above this changed fraction of its output an op computes densely;
        keep_references: keep X_ref state on every Delta op that compares (not on those reading a DeltaGate,
            which the gate decides for); by default an op that compares exactly (threshold 0) behind a change
            map keeps none (the map says what changed; half the state memory, no comparison), and its threshold
            can then not be raised by editing the converted model;
        gate: how `threshold` decides what changed in a frame: "block" (the default: one DeltaGate per model
            input decides per gate_block x gate_block block on the block means, with gate_hard bounding every
            pixel, docs/design.md#rule-2b; the ops after it compare nothing; it takes an external change map,
            docs/state_protocol.md) or "pixel" (each op reading the frame compares per pixel, rule 2). The block
            rule ignores camera noise that the pixel rule keeps re-firing on: on every clip measured it redoes
            less work at no more error (docs/results.md); at threshold 0 both are exact and no gate is inserted;
        gate_block: k of the block gate (default 8); gate_hard: its per-pixel bound (default 4 x threshold);
        inner_gate: how inner_threshold decides, in each Delta op not reading a model input: "pixel" (rule 2)
            or "block" (rule 2b on the op's input, inner_gate_block x inner_gate_block blocks, every pixel
            within inner_gate_hard, default 3 x the node's threshold); inner_gates: {source node name: "pixel",
            "block", "block:K" or "block:K:HARD"} overrides for single nodes (also those reading an input);
        layout: "blocked" (the default): the Delta ops whose channel counts are multiples of 16 exchange channel-blocked
            tensors ([N][C/b][H][W][b] memory under NCHW shapes, b chosen by the op library when it loads;
            graph_passes/blocked_layout.py, docs/ops.md#blocked-layout), with DeltaReorder nodes where a region
            meets an op that reads NCHW; "nchw": every tensor NCHW.
        fuse_sum: fuse a residual Add (and the activation after it) into the DeltaConv it reads as its sum input Z
            (graph_passes/fuse_residual_sum.py, docs/ops.md), where Z carries a change map; False keeps the Add
            (for A/Bs, and for the CUDA library, which refuses Z).
    Invalid values raise ConversionError."""

    threshold: float = 0.0
    inner_threshold: float = 0.0
    thresholds: Mapping[str, float] = dataclasses.field(default_factory=dict)
    all_nodes: bool = False
    dense_fraction: float = 0.5
    keep_references: bool = False  # True: DropExactReferences only behind a DeltaGate (thresholds raised later)
    # The input gate (docs/design.md#rule-2 and #rule-2b): "pixel", each Delta op reading a model input compares per
    # pixel; "block" (the default), one DeltaGate per model input decides per k x k block (input_gate.py).
    gate: str = DEFAULT_GATE
    gate_block: int = DEFAULT_GATE_BLOCK
    gate_hard: Optional[float] = None  # tau_hard; None: DEFAULT_INPUT_GATE_HARD x the gate's threshold
    # The change rule of the inner thresholds (DeltaConv/DeltaPool not reading a model input): "pixel" (rule 2)
    # or "block" (rule 2b, in the op itself: attributes gate, gate_block, gate_hard); inner_gates overrides it
    # per source node with "pixel", "block", "block:K" or "block:K:HARD".
    inner_gate: str = "pixel"
    inner_gate_block: int = DEFAULT_GATE_BLOCK
    inner_gate_hard: Optional[float] = None  # None: DEFAULT_GATE_HARD x the node's threshold
    inner_gates: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # The blocked exchange by default (docs/results.md, "The blocked exchange on YOLOv8n"): faster on every case
    # measured; a model converted so runs on any library (b is the library's; b = 1 is NCHW).
    layout: str = LAYOUT_BLOCKED
    # The residual Add fused into the conv as dense ORT fuses it (docs/results.md, "The residual sum").
    fuse_sum: bool = True

    def gate_hard_for(self, tau: float) -> float:
        return float(self.gate_hard) if self.gate_hard is not None else DEFAULT_INPUT_GATE_HARD * float(tau)

    def __post_init__(self) -> None:
        _check_threshold("threshold", self.threshold)
        _check_threshold("inner_threshold", self.inner_threshold)
        if self.thresholds is None:
            object.__setattr__(self, "thresholds", {})
        elif isinstance(self.thresholds, Mapping):  # a private copy: the caller's dict may change later
            object.__setattr__(self, "thresholds", dict(self.thresholds))
        object.__setattr__(self, "all_nodes", bool(self.all_nodes))
        object.__setattr__(self, "keep_references", bool(self.keep_references))
        object.__setattr__(self, "fuse_sum", bool(self.fuse_sum))
        if not isinstance(self.thresholds, Mapping):
            raise ConversionError(
                f"thresholds must map node names to numbers, got {type(self.thresholds).__name__}"
            )
        for name, tau in self.thresholds.items():
            if not isinstance(name, str):
                raise ConversionError(f"thresholds: node names must be strings, got {name!r}")
            _check_threshold(f"thresholds[{name!r}]", tau)
        if self.gate not in GATE_RULES:
            raise ConversionError(f"gate must be one of {', '.join(GATE_RULES)}, got {self.gate!r}")
        block = self.gate_block
        if isinstance(block, bool) or not isinstance(block, int) or not 1 <= block <= 4096:
            raise ConversionError(f"gate_block must be an integer in [1, 4096], got {block!r}")
        if self.gate_hard is not None:
            _check_threshold("gate_hard", self.gate_hard)
            if self.gate_hard < self.threshold:
                raise ConversionError(f"gate_hard ({self.gate_hard}) must be >= threshold ({self.threshold})")
        _check_gate("inner_gate", self.inner_gate, self.inner_gate_block, self.inner_gate_hard)
        if self.inner_gates is None:
            object.__setattr__(self, "inner_gates", {})
        elif isinstance(self.inner_gates, Mapping):
            object.__setattr__(self, "inner_gates", dict(self.inner_gates))
        if not isinstance(self.inner_gates, Mapping):
            raise ConversionError(f"inner_gates must map node names to gates, got {type(self.inner_gates).__name__}")
        for name, text in self.inner_gates.items():
            parse_inner_gate(text, f"inner_gates[{name!r}]")
        if self.layout not in LAYOUTS:
            raise ConversionError(f"layout must be one of {', '.join(LAYOUTS)}, got {self.layout!r}")
        fraction = self.dense_fraction
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
            raise ConversionError(f"dense_fraction must be a number in [0, 1], got {fraction!r}")


def _check_gate(what: str, rule: object, block: object, hard: object) -> None:
    if rule not in GATE_RULES:
        raise ConversionError(f"{what} must be one of {', '.join(GATE_RULES)}, got {rule!r}")
    if isinstance(block, bool) or not isinstance(block, int) or not 1 <= block <= 4096:
        raise ConversionError(f"{what}_block must be an integer in [1, 4096], got {block!r}")
    if hard is not None:
        _check_threshold(f"{what}_hard", hard)


def parse_inner_gate(text: object, what: str) -> tuple[str, Optional[int], Optional[float]]:
    """A node's gate as "pixel", "block", "block:K" or "block:K:HARD": (rule, k or None, tau_hard or None)."""
    parts = text.split(":") if isinstance(text, str) else []
    try:
        if parts == ["pixel"]:
            return "pixel", None, None
        if parts and parts[0] == "block" and len(parts) <= 3:
            block = int(parts[1]) if len(parts) > 1 else None
            hard = float(parts[2]) if len(parts) > 2 else None
            _check_gate(what, "block", DEFAULT_GATE_BLOCK if block is None else block, hard)
            return "block", block, hard
    except ValueError:
        pass
    raise ConversionError(f"{what} must be pixel, block, block:K or block:K:HARD, got {text!r}")


def _check_threshold(what: str, tau: object) -> None:
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not math.isfinite(tau) or tau < 0:
        raise ConversionError(f"{what} must be a finite number >= 0, got {tau!r}")


@dataclasses.dataclass
class NodePlan:
    """One candidate node of the source model: the decision, why, and (once converted) what it became."""

    source: str  # the node's name in the source model
    op_type: str  # its op type there (Conv, MaxPool, ConvTranspose, ...)
    output_shape: Optional[str]  # e.g. "1x64x56x56", "?" where unknown
    decision: str = INELIGIBLE
    reason: str = ""
    flops: Optional[int] = None  # per batch item (frame); None where shapes are unknown
    flops_per_output_pixel: Optional[int] = None  # Conv 2*M*C/g*kH*kW, MaxPool C*kH*kW: known whatever H, W
    threshold: Optional[float] = None  # tau of the Delta op, when converted
    delta_name: Optional[str] = None  # e.g. DeltaConv_0
    delta_op: Optional[str] = None  # DeltaConv / DeltaPool
    activation: str = ""  # the activation fused into a DeltaConv
    fused: list[str] = dataclasses.field(default_factory=list)  # source nodes folded/fused into it
    has_map_input: bool = False  # a change map is wired into it
    inner_gate: Optional[dict] = None  # the block rule's {"gate_block", "gate_hard"} (None: pixel rule)
    gate: Optional[str] = None  # the DeltaGate it reads its frame through
    layout: str = LAYOUT_NCHW  # "blocked", or "nchw" with the reason when blocked was asked (blocked_layout.py)


@dataclasses.dataclass
class ConversionContext:
    """Shared by the passes of one conversion."""

    options: ConversionOptions
    # The converting package's version, recorded in the metadata (graph_passes does not import the package).
    converter_version: str = ""
    plans: list[NodePlan] = dataclasses.field(default_factory=list)
    # Filled by the state pass, in graph order, exactly as docs/state_protocol.md lists them.
    state: list[dict] = dataclasses.field(default_factory=list)
    maps: list[dict] = dataclasses.field(default_factory=list)
    # Delta nodes that keep no X_ref (threshold 0 with a change map; see drop_references.py).
    dropped_references: list[str] = dataclasses.field(default_factory=list)
    # One entry per DeltaGate (input_gate.py): node, input, rule, threshold, gate_block, gate_hard, change_map.
    gates: list[dict] = dataclasses.field(default_factory=list)

    def converted(self) -> list[NodePlan]:
        return [plan for plan in self.plans if plan.decision == CONVERTED]

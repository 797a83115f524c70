"""DeltaConv, DeltaPool, DeltaMapUnion, DeltaReorder, DeltaResize, DeltaGlobalAveragePool, DeltaChannelScale and
DeltaChannelGate: the rules applied around the dense ops, with the state
each keeps."""
from __future__ import annotations

import numpy as np

from ..blocked_memory import (REORDER_TARGETS, blocked_sides, from_blocked, library_channel_block, padded_channels,
                              run_blocked, to_blocked)
from ..graph_passes.protocol import DEFAULT_GATE_BLOCK
from .dense import _activate, _or_pool, conv2d, maxpool2d
from .dense import activation as activation_of
from .gate import GATE_RULES, delta_gate
from .rules import _check_map, apply_dense_fraction, changed_pixels, state_is_empty
from .window import _pair, _Window

def _delta_step(X, X_ref, Y_prev, map_in, threshold, dense_fraction, win: _Window, compute_dense,
                drop_reference=False, gate="pixel", gate_block=DEFAULT_GATE_BLOCK, gate_hard=None, map_z=None):
    """Rules 1-5 around any windowed op: `compute_dense(X_ref_next)` gives the op's full output.
    drop_reference: no X_ref is kept (allowed at tau = 0 with a change map, docs/design.md#dropped-references): the map's marks
    are the changed pixels, the state is Y_prev alone, and X_ref_next is an empty [0,0,0,0].
    map_z: DeltaConv's sum map [N,1,Ho,Wo] (docs/design.md#rule-4): its marks are recomputed too."""
    X = np.asarray(X, dtype=np.float32)
    n = X.shape[0]
    marked = (lambda pooled: pooled) if map_z is None else (lambda pooled: pooled | (np.asarray(map_z)[:, 0] != 0))
    if drop_reference:
        if map_in is None or float(threshold) != 0.0:
            raise ValueError("without X_ref the op needs a change map and threshold 0")
        map_in = _check_map(map_in, (n, 1) + X.shape[2:], "map_in")
        out_shape = compute_dense(X[:0]).shape[1:]
        fresh = state_is_empty(Y_prev) or np.shape(Y_prev)[1:] != out_shape or np.shape(Y_prev)[0] != n
        changed = np.ones((n,) + X.shape[2:], bool) if fresh else map_in[:, 0] != 0
        y_full = compute_dense(X)
        recompute = (np.ones((n,) + win.out_hw, dtype=bool) if fresh
                     else apply_dense_fraction(marked(_or_pool(changed, win)), dense_fraction))
        Y = y_full if fresh else np.where(recompute[:, None], y_full, np.asarray(Y_prev, np.float32))
        return Y.astype(np.float32), np.zeros((0, 0, 0, 0), np.float32), recompute[:, None].astype(np.uint8)
    gate = gate.decode() if isinstance(gate, bytes) else gate  # as the evaluator hands string attributes
    if gate not in GATE_RULES:
        raise ValueError(f"gate must be one of {GATE_RULES}, got {gate!r}")
    fresh = state_is_empty(X_ref) or np.shape(X_ref) != X.shape
    if gate == "block":  # rule 2b: DeltaGate's verdict, and whole blocks' references move (rule 3)
        if map_in is not None:
            map_in = _check_map(map_in, (n, 1) + X.shape[2:], "map_in")
        X_ref_next, gated = delta_gate(X, None if fresh else X_ref, map_in, rule="block", threshold=threshold,
                                       gate_block=gate_block, gate_hard=gate_hard)
        changed = gated[:, 0] != 0
    else:
        changed = changed_pixels(X, X_ref, threshold, map_in)
        # Rule 3: the reference moves only where the pixel counts as changed.
        X_ref_next = X.copy() if fresh else np.where(changed[:, None], X, np.asarray(X_ref, dtype=np.float32))
    y_full = compute_dense(X_ref_next)
    if fresh:
        recompute = np.ones((n,) + win.out_hw, dtype=bool)
    else:
        Y_prev = np.asarray(Y_prev, dtype=np.float32) if Y_prev is not None else np.zeros((0, 0, 0, 0), np.float32)
        if Y_prev.shape != y_full.shape:
            raise ValueError(f"Y_prev has shape {Y_prev.shape}, expected {y_full.shape} (the shape of Y)")
        recompute = apply_dense_fraction(marked(_or_pool(changed, win)), dense_fraction)
    Y = y_full if fresh else np.where(recompute[:, None], y_full, Y_prev).astype(np.float32)
    map_out = recompute[:, None].astype(np.uint8)
    return Y, X_ref_next, map_out


def delta_conv(X, W, B=None, X_ref=None, Y_prev=None, map_in=None, Z=None, map_z=None, *, kernel_shape=None,
               strides=None, pads=None, dilations=None, group=1, auto_pad="NOTSET", activation="", activation_params=(),
               threshold=0.0, dense_fraction=0.5, drop_reference=False, gate="pixel", gate_block=DEFAULT_GATE_BLOCK,
               gate_hard=None, layout="nchw", channel_block=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DeltaConv (docs/ops.md), rules 1-5: returns (Y, X_ref_next, map_out) with
    Y = where(recompute, act(conv(X_ref_next) + B + Z), Y_prev) and map_out the uint8 recompute mask.
    Z (the sum, Y's shape and layout) needs map_z ([N,1,Ho,Wo]): its marks are recomputed too (rule 4).
    gate "block" decides changes by rule 2b (delta_gate's verdict, k = gate_block, tau_hard = gate_hard).
    layout "blocked": X, X_ref, Y_prev, Y, Z and X_ref_next hold blocked memory (docs/ops.md#blocked-layout) of
    channel_block (default: the library's); "blocked_out": Y_prev, Y and Z only."""
    if (Z is None) != (map_z is None):
        raise ValueError("DeltaConv's sum Z and its change map map_z go together")
    if Z is not None and (group != 1 or activation == "Softmax"):
        raise ValueError(f"the sum Z needs group 1 and a per-element activation, got group {group}, {activation!r}")
    input_blocked, output_blocked = blocked_sides(layout, gate)
    if output_blocked:
        w_shape = np.shape(W)
        depthwise = len(w_shape) == 4 and w_shape[1] == 1 and w_shape[0] == group
        if group != 1 and not (input_blocked and depthwise):  # as the op definition refuses (delta_attributes.cc)
            raise ValueError(f'layout "{layout}" needs group = 1' + (" or a depthwise conv" if input_blocked else "")
                             + f", got group {group} and W {w_shape}")
        args = dict(kernel_shape=kernel_shape, strides=strides, pads=pads, dilations=dilations, group=group,
                    auto_pad=auto_pad, activation=activation, activation_params=activation_params, threshold=threshold,
                    dense_fraction=dense_fraction, drop_reference=drop_reference, gate=gate, gate_block=gate_block,
                    gate_hard=gate_hard)
        b = library_channel_block() if channel_block is None else int(channel_block)
        out_channels = int(w_shape[0])
        if padded_channels(out_channels, b) != out_channels:  # the pad lanes hold act(0 + 0): it must be 0
            act_zero = _activate(np.zeros((1, out_channels, 1, 1), np.float32), activation, activation_params)
            if np.any(act_zero != 0):
                raise ValueError(f'layout "{layout}" pads {out_channels} output channels to '
                                 f"{padded_channels(out_channels, b)}, but activation {activation!r} has act(0) != 0")
        z = None
        if Z is not None:  # Y's padded blocked shape; its pad lanes are zero, so Y's stay act(0 + 0 + 0)
            Z = np.asarray(Z, np.float32)
            if Z.ndim != 4 or Z.shape[1] != padded_channels(out_channels, b):
                raise ValueError(f"the sum input Z has shape {Z.shape}, expected Y's roundup({out_channels}, {b}) = "
                                 f"{padded_channels(out_channels, b)} channels")
            z = from_blocked(Z, b, out_channels)
        return run_blocked(lambda x, x_ref, y_prev: delta_conv(x, W, B, x_ref, y_prev, map_in, z, map_z, **args), b,
                           X, X_ref, Y_prev, input_blocked, in_channels=int(w_shape[1]) * int(group),
                           out_channels=out_channels)
    X = np.asarray(X, dtype=np.float32)
    W = np.asarray(W, dtype=np.float32)
    if X.ndim != 4 or W.ndim != 4:
        raise ValueError(f"DeltaConv is 2-D NCHW: X {X.shape}, W {W.shape}")
    kernel = tuple(W.shape[2:]) if not kernel_shape else _pair(kernel_shape, "kernel_shape", 1)
    if kernel != tuple(W.shape[2:]):
        raise ValueError(f"kernel_shape {kernel} does not match W {W.shape}")
    win = _Window.resolve(X.shape[2:], kernel, strides, pads, dilations, auto_pad)
    act_name, act_params = activation, activation_params
    out_shape = (X.shape[0], W.shape[0]) + win.out_hw
    if Z is not None:
        Z = _check_map(Z, out_shape, "Z").astype(np.float32)
        map_z = _check_map(map_z, (X.shape[0], 1) + win.out_hw, "map_z")

    def dense(x_ref_next):
        y = conv2d(x_ref_next, W, B, strides=win.strides, pads=win.pads, dilations=win.dilations, group=group)
        if Z is not None:
            y = y + Z[: y.shape[0]]
        return _activate(y, act_name, act_params, channel_axis=1)

    return _delta_step(X, X_ref, Y_prev, map_in, threshold, dense_fraction, win, dense, drop_reference,
                       gate, gate_block, gate_hard, map_z)


def delta_pool(X, X_ref=None, Y_prev=None, map_in=None, *, kernel_shape, strides=None, pads=None,
               dilations=None, auto_pad="NOTSET", ceil_mode=0, threshold=0.0, dense_fraction=0.5,
               storage_order=0, drop_reference=False, gate="pixel", gate_block=DEFAULT_GATE_BLOCK,
               gate_hard=None, layout="nchw", channel_block=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """DeltaPool over MaxPool (docs/ops.md), rules 1-5 with the pool's window as receptive field:
    returns (Y, X_ref_next, map_out); gate as in delta_conv. layout "blocked": X, X_ref, Y_prev, Y and X_ref_next
    hold blocked memory (docs/ops.md#blocked-layout) of channel_block (default: the library's)."""
    if int(storage_order) != 0:
        raise ValueError("DeltaPool refuses storage_order != 0 (it has no Indices output)")
    args = dict(kernel_shape=kernel_shape, strides=strides, pads=pads, dilations=dilations, auto_pad=auto_pad,
                ceil_mode=ceil_mode, threshold=threshold, dense_fraction=dense_fraction, drop_reference=drop_reference,
                gate=gate, gate_block=gate_block, gate_hard=gate_hard)
    if blocked_sides(layout, gate, conv=False)[0]:
        return run_blocked(lambda x, x_ref, y_prev: delta_pool(x, x_ref, y_prev, map_in, **args), channel_block,
                           X, X_ref, Y_prev)
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 4:
        raise ValueError(f"DeltaPool is 2-D NCHW: X {X.shape}")
    win = _Window.resolve(X.shape[2:], kernel_shape, strides, pads, dilations, auto_pad, ceil_mode)

    def dense(x_ref_next):
        return maxpool2d(x_ref_next, kernel_shape=win.kernel, strides=win.strides, pads=win.pads,
                         dilations=win.dilations, ceil_mode=ceil_mode)

    return _delta_step(X, X_ref, Y_prev, map_in, threshold, dense_fraction, win, dense, drop_reference,
                       gate, gate_block, gate_hard)


def map_union(*maps) -> np.ndarray:
    """DeltaMapUnion: elementwise OR of change maps of one shape [N,1,H,W], as uint8 0/1. A map of one value per batch
    item ([N,1,1,1], a squeeze-excite gate's) beside maps of more marks each item whole where set."""
    if not maps:
        raise ValueError("DeltaMapUnion needs at least one map")
    arrays = [np.asarray(m) for m in maps]
    full = next((a for a in arrays if a.ndim and a[:1].size > 1), arrays[0])
    for a in arrays:
        per_item = a.ndim == full.ndim and a.ndim > 0 and a.shape[0] == full.shape[0] and a[:1].size == 1
        if a.shape != full.shape and not per_item:
            raise ValueError(f"DeltaMapUnion inputs differ in shape: {[x.shape for x in arrays]}")
    out = np.zeros(full.shape, dtype=bool)
    for a in arrays:
        out |= a != 0  # a per-item map broadcasts over its item
    return out.astype(np.uint8)


def delta_reorder(X, Y_prev=None, map_in=None, *, to: str, block: int | None = None,
                  channels: int | None = None) -> np.ndarray:
    """DeltaReorder (docs/ops.md#deltareorder): X's memory reordered to `to` ("blocked" or "nchw") with channel
    block `block` (default: the library's), for `channels` logical channels C (default: X's count). "blocked":
    X [N, C, H, W] -> [N, roundup(C, b), H, W] with zero pad lanes; "nchw": X [N, roundup(C, b), H, W] ->
    [N, C, H, W]. With its last output Y_prev (of Y's shape) and X's change map ([N,1,H,W]), the pixels the map
    leaves 0 keep Y_prev's values; an empty or other-shaped Y_prev (rule 1), an empty map or none: every pixel
    from X."""
    if to not in REORDER_TARGETS:
        raise ValueError(f"DeltaReorder's 'to' must be one of {REORDER_TARGETS}, got {to!r}")
    b = library_channel_block() if block is None else int(block)
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 4:
        raise ValueError(f"DeltaReorder's X must be 4-D [N, C, H, W], got shape {X.shape}")
    c = X.shape[1] if channels is None else int(channels)
    expected = c if to == "blocked" else padded_channels(c, b)
    if X.shape[1] != expected or c < 0:
        raise ValueError(f"DeltaReorder to {to!r} with channels {c} and block {b}: X has {X.shape[1]} channels, "
                         f"expected {expected}")
    nchw = X if to == "blocked" else from_blocked(X, b, c)  # X's values in NCHW order
    y_shape = (X.shape[0], padded_channels(c, b) if to == "blocked" else c, *X.shape[2:])
    if map_in is not None and np.size(map_in) > 0:
        map_in = _check_map(map_in, (X.shape[0], 1, *X.shape[2:]), "map_in")
        if Y_prev is not None and np.shape(Y_prev) == y_shape:
            previous = np.asarray(Y_prev, np.float32)
            previous = from_blocked(previous, b, c) if to == "blocked" else previous
            nchw = np.where(map_in != 0, nchw, previous)
    return to_blocked(nchw, b) if to == "blocked" else np.ascontiguousarray(nchw)


def delta_resize(X, Y_prev=None, map_in=None, *, factors, layout: str = "nchw",
                 block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """DeltaResize (docs/ops.md#deltaresize): X [N, C, H, W] upsampled by the integer `factors` (fh, fw), nearest:
    output pixel (oy, ox) is input pixel (oy // fh, ox // fw). layout "blocked": X and Y hold [N][C/b][H][W][b]
    memory (block b, default the library's; C a multiple of b). With its last output Y_prev (of Y's shape) and X's
    change map ([N,1,H,W]) the outputs of pixels the map leaves 0 keep Y_prev's values; an empty or other-shaped
    Y_prev (rule 1), an empty map or none: every output. Returns (Y, map_out): map_out is the map upsampled (1
    where Y was written), all 1 without state."""
    if layout not in ("nchw", "blocked"):
        raise ValueError(f"DeltaResize's 'layout' must be 'nchw' or 'blocked', got {layout!r}")
    fh, fw = (int(f) for f in factors)
    if fh < 1 or fw < 1:
        raise ValueError(f"DeltaResize's 'factors' must be >= 1, got {factors}")
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 4:
        raise ValueError(f"DeltaResize's X must be 4-D [N, C, H, W], got shape {X.shape}")
    b = (library_channel_block() if block is None else int(block)) if layout == "blocked" else 1
    if X.shape[1] % b:
        raise ValueError(f"DeltaResize blocked with block {b}: X has {X.shape[1]} channels, not a multiple of it")
    nchw = from_blocked(X, b) if b > 1 else X  # its channel count is a multiple of b: nothing cropped
    up = nchw.repeat(fh, axis=2).repeat(fw, axis=3)
    marks = np.ones((X.shape[0], 1, *up.shape[2:]), bool)
    if map_in is not None and np.size(map_in) > 0:
        map_in = _check_map(map_in, (X.shape[0], 1, *X.shape[2:]), "map_in")
        if Y_prev is not None and np.shape(Y_prev) == up.shape:
            marks = (map_in != 0).repeat(fh, axis=2).repeat(fw, axis=3)
            previous = np.asarray(Y_prev, np.float32)
            up = np.where(marks, up, from_blocked(previous, b) if b > 1 else previous)
    y = to_blocked(up, b) if b > 1 else np.ascontiguousarray(up)
    return y, marks.astype(np.uint8)


def _channel_op_input(X, layout: str, channels: int, block: int | None, op: str) -> np.ndarray:
    """X of DeltaGlobalAveragePool or DeltaChannelScale as NCHW [N, C, H, W] (layout "blocked": X holds
    [N][roundup(C, b)/b][H][W][b] memory, b the library's block unless given)."""
    if layout not in ("nchw", "blocked"):
        raise ValueError(f"{op}'s 'layout' must be 'nchw' or 'blocked', got {layout!r}")
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 4:
        raise ValueError(f"{op}'s X must be 4-D [N, C, H, W], got shape {X.shape}")
    b = (library_channel_block() if block is None else int(block)) if layout == "blocked" else 1
    expected = padded_channels(channels, b)
    if channels < 1 or X.shape[1] != expected:
        raise ValueError(f"{op} {layout} with {channels} channels and block {b}: X has {X.shape[1]} channels, "
                         f"expected {expected}")
    return from_blocked(X, b, channels) if b > 1 else X


def delta_global_average_pool(X, *, layout: str = "nchw", channels: int | None = None,
                              block: int | None = None) -> np.ndarray:
    """DeltaGlobalAveragePool (docs/ops.md#deltaglobalaveragepool): Y [N, C, 1, 1] NCHW, each channel's mean over
    H x W of X (layout "blocked": X's memory blocked, C = `channels`, default X's count)."""
    X = np.asarray(X, dtype=np.float32)
    c = (X.shape[1] if X.ndim == 4 else 0) if channels is None else int(channels)
    nchw = _channel_op_input(X, layout, c, block, "DeltaGlobalAveragePool")
    with np.errstate(invalid="ignore", divide="ignore"):
        return (nchw.astype(np.float64).sum(axis=(2, 3), keepdims=True) / (nchw.shape[2] * nchw.shape[3])).astype(
            np.float32)


def delta_channel_scale(X, S, *, layout: str = "nchw", block: int | None = None) -> np.ndarray:
    """DeltaChannelScale (docs/ops.md#deltachannelscale): Y = X times S [N or 1, C, 1, 1] per channel, in X's
    layout (blocked: pad lanes 0)."""
    S = np.asarray(S, dtype=np.float32)
    X = np.asarray(X, dtype=np.float32)
    if S.ndim != 4 or S.shape[2:] != (1, 1) or X.ndim != 4 or S.shape[0] not in (1, X.shape[0]):
        raise ValueError(f"DeltaChannelScale's S must be [N or 1, C, 1, 1] for X {X.shape}, got {S.shape}")
    nchw = _channel_op_input(X, layout, S.shape[1], block, "DeltaChannelScale")
    y = nchw * S
    b = (library_channel_block() if block is None else int(block)) if layout == "blocked" else 1
    return to_blocked(y, b) if b > 1 else np.ascontiguousarray(y)


def delta_channel_gate(X, W1, B1=None, W2=None, B2=None, map_in=None, *, layout: str = "nchw",
                       channels: int | None = None, activation: str = "", activation_params=(),
                       gate_activation: str = "", gate_activation_params=(), block: int | None = None):
    """DeltaChannelGate (docs/ops.md#deltachannelgate): S [N, C2, 1, 1] = act2(W2 act1(W1 mean(X) + B1) + B2), the
    means as DeltaGlobalAveragePool's, W1 [R, C, 1, 1] and W2 [C2, R, 1, 1] as 1x1 convs on one pixel; and map_out
    [N, 1, 1, 1]: 1 for an item with a marked pixel in map_in [N, 1, H, W] (every item without a map)."""
    if W2 is None:
        raise ValueError("DeltaChannelGate needs W2")
    pooled = delta_global_average_pool(X, layout=layout, channels=channels, block=block)
    hidden = activation_of(conv2d(pooled, W1, B1), activation, tuple(activation_params))
    s = activation_of(conv2d(hidden, W2, B2), gate_activation, tuple(gate_activation_params))
    n = pooled.shape[0]
    if map_in is None or np.size(map_in) == 0:
        changed = np.ones((n, 1, 1, 1), np.uint8)
    else:
        X = np.asarray(X)
        map_in = _check_map(map_in, (n, 1, X.shape[2], X.shape[3]), "map_in")
        changed = (np.asarray(map_in).reshape(n, -1) != 0).any(axis=1).astype(np.uint8).reshape(n, 1, 1, 1)
    return s.astype(np.float32), changed

"""`python -m deltaonnx bench MODEL --video CLIP`: dense ORT against the converted model, on your video.

Both models run on the same frames, interleaved in blocks of `--interleave` frames (dense ORT runs a block,
then each converted model runs the same block, in an order that alternates between blocks), so a change of
machine load hits both alike; blocks rather than single frames because alternating every frame makes each
model evict the other's weights and state from the caches, which deployment never sees. Between two timed runs
of a converted model bench reads only DeltaSession.last_run() (the per-node numbers are made after the last
frame): stats()'s Python there cost cnn1's next run ~10 us, 2% of its frame, that dense ORT's never paid. Same
thread count;
the first `--warmup` frames run untimed (they also fill the state). For each converted configuration (one, or
one per value of `--thresholds` x `--inner-thresholds`) it reports:

* ms/frame, fps and the speedup over dense ORT (means over the timed frames);
* output agreement: per output the max and mean absolute difference to dense, and the max relative to the
  dense output's largest magnitude (`max_rel`; threshold 0 must give <= 1e-4); with `--detections yolo`, box
  F1 / mean IoU of the delta model's boxes against dense ORT's, the margin F1 beside it and dense ORT's own
  box flicker between consecutive frames (deltaonnx.detections);
* per Delta node the recomputed fraction of its output (mean and p90 over frames, from the change maps) and
  the FLOP-weighted totals: over converted convs, and over all of the model's convs (those kept dense count
  as fully recomputed) -- the "conv FLOPs to redo" of docs/design.md ("Where it pays");
* the ideal speedup this allows (Amdahl): dense ORT's time is split with ORT's profiler into *conv work*
  (Conv/FusedConv/MaxPool kernels, the activations the converter fuses into the Delta ops, and the NCHWc
  layout reorders ORT inserts around its convs -- everything the converted model replaces) and the rest;
  ideal time = rest + conv work x FLOP fraction redone. A profile rather than a conv-less copy of the model,
  because removing convs changes the shapes every other op sees. Then the achieved share = speedup / ideal;
* state memory (bytes of the carried state tensors);
* with `--profile`, where the converted model's time goes (per op type, from ORT's profiler).

`run_benchmark` is the library entry point (used by `demo` and `calibrate` too); deltaonnx.cli.bench is the command.
Modules: options (what to run), runner (the runs), profile (ORT's profiler, the ideal), models, pictures, report,
machine.
"""
from __future__ import annotations

from ..graph_passes.metadata import is_converted
from .machine import Progress, machine_info
from .models import conv_flops, conversion_metadata, image_input, session_options
from .options import INPUT_GATE, BenchError, BenchOptions, DeltaConfig, FrameRecord, GateConfig, parse_configs
from .pictures import change_map_picture, plot_sweep
from .profile import ideal_speedup, profile_delta, profile_dense, read_profile
from .report import format_report, json_ready, write_json
from .runner import run_benchmark

__all__ = ["BenchError", "BenchOptions", "DeltaConfig", "FrameRecord", "GateConfig", "INPUT_GATE", "Progress", "change_map_picture",
           "conv_flops", "conversion_metadata", "format_report", "ideal_speedup", "image_input", "is_converted",
           "json_ready", "machine_info", "parse_configs", "plot_sweep", "profile_dense", "profile_delta",
           "read_profile", "run_benchmark", "session_options", "write_json"]

"""The names a converted model and everything that reads it agree on (docs/state_protocol.md, docs/ops.md).

Defined here once: the converter writes them, DeltaSession, the dense twin, the tools and the Triton backends
read them. graph_passes imports nothing from the deltaonnx package, so the package imports them from here."""
from __future__ import annotations

DOMAIN = "com.deltaonnx"  # the custom ops' domain
METADATA_KEY = "deltaonnx"  # the metadata entry the converter writes (what it did, the state to carry)
METADATA_FORMAT = 1  # the entry's "format": readers refuse others
CALIBRATION_METADATA_KEY = "deltaonnx.calibration"  # beside METADATA_KEY: what `calibrate` chose
STATE_PREFIX = "deltaonnx."  # graph inputs/outputs named with it are state or change maps, never the model's own
# Beside the tensors of a saved state (DeltaSession.state()) of a model with blocked state: the library's channel
# block b that memory was written with; a state loaded under another b restarts those ops (rule 1).
CHANNEL_BLOCK_KEY = "deltaonnx.channel_block"
# DeltaConv's inputs by position (docs/ops.md#deltaconv); Z is the sum added before the activation.
DELTA_CONV_SUM_INPUT = 6

# The block gate's defaults, chosen by measurement (docs/results.md "The input gate"): k, and tau_hard as a
# multiple of tau. The ops (gate_engine.h) and the reference use the same values.
DEFAULT_GATE_BLOCK = 8
DEFAULT_GATE_HARD = 3.0

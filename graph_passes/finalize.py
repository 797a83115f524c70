"""Make the result a valid model ORT loads: the com.deltaonnx opset import, an IR version ORT
accepts (<= 10), and nodes in topological order (new map nodes were inserted next to their readers)."""
from __future__ import annotations

import onnx_ir as ir

from .protocol import DOMAIN

from .delta_ops import OPSET_VERSION

MAX_IR_VERSION = 10  # ORT 1.17+ loads IR <= 10; newer onnx writes higher by default


class FinalizeModel(ir.passes.InPlacePass):
    def call(self, model: ir.Model) -> ir.passes.PassResult:
        model.opset_imports[DOMAIN] = OPSET_VERSION
        model.ir_version = min(max(model.ir_version, 4), MAX_IR_VERSION)
        model.graph.sort()
        return ir.passes.PassResult(model, modified=True)

"""The conversion pipeline: the passes in order, and a runner that surfaces ConversionError."""
from __future__ import annotations

import onnx_ir as ir

from .blocked_layout import ChooseBlockedLayout, DeclarePaddedShapes
from .conversion_context import ConversionContext
from .delta_rewrite import ReplaceWithDeltaOps
from .drop_references import DropExactReferences
from .errors import ConversionError
from .finalize import FinalizeModel
from .fold_batchnorm import FoldBatchNormIntoConv
from .fuse_channel_gate import FuseChannelGate
from .fuse_activation import FuseActivationIntoDeltaConv
from .fuse_group_softmax import FuseGroupSoftmaxIntoDeltaConv
from .fuse_residual_sum import FuseResidualSumIntoDeltaConv
from .input_gate import InsertInputGate
from .metadata import WriteConversionMetadata
from .normalize import normalization_passes
from .plan import PlanConversion, RequireConvertedNode
from .state_io import AddReorderState, AddStateInputsOutputs
from .wire_maps import WireChangeMaps


def planning_passes(context: ConversionContext) -> list[ir.passes.PassBase]:
    """Everything up to the decisions; the model is normalised but not yet rewritten."""
    return [*normalization_passes(), FoldBatchNormIntoConv(), PlanConversion(context)]


def rewriting_passes(context: ConversionContext) -> list[ir.passes.PassBase]:
    return [
        RequireConvertedNode(context),
        ReplaceWithDeltaOps(context),
        FuseActivationIntoDeltaConv(),
        FuseGroupSoftmaxIntoDeltaConv(),
        FuseResidualSumIntoDeltaConv(context.options.fuse_sum),
        ChooseBlockedLayout(context),
        FuseChannelGate(),
        AddStateInputsOutputs(context),
        WireChangeMaps(),
        InsertInputGate(context),
        DropExactReferences(context),
        AddReorderState(context),
        DeclarePaddedShapes(),
        WriteConversionMetadata(context),
        FinalizeModel(),
    ]


def conversion_pass_manager(context: ConversionContext) -> ir.passes.PassManager:
    return ir.passes.PassManager([*planning_passes(context), *rewriting_passes(context)], steps=1)


def run_passes(passes: ir.passes.PassBase, model: ir.Model) -> ir.Model:
    """Run `passes` in place; a ConversionError raised inside surfaces as itself, not wrapped in the
    pass manager's PassError."""
    try:
        return passes(model).model
    except ir.passes.PassError as error:
        cause: BaseException | None = error
        while cause is not None:
            if isinstance(cause, ConversionError):
                raise cause from None
            cause = cause.__cause__
        raise

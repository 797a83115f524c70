"""Sample CNNs for tests and demos, exported from small seeded PyTorch modules.

Each builder returns an `onnx.ModelProto` (IR 10, opset 17) shaped like a family of real models, with the
patterns the converter must handle: BatchNormalization kept as its own node with non-trivial running
statistics (exported in eval mode, so folding it is really tested), activations as ONNX exports them
(Relu6 as Clip, SiLU as x*Sigmoid(x), HardSwish, HardSigmoid, PRelu), residual Add, depthwise convs,
squeeze-excite, Split/Concat, SPPF MaxPools, nearest Resize, ConvTranspose, Gemm heads, an NHWC input.
They are tiny (32..96 px inputs) so a 10-frame test runs in seconds.

    python models/zoo.py OUT_DIR [--only NAME ...]     # writes OUT_DIR/<name>.onnx

Importable: tests do `sys.path.insert(0, "<repo>/models")` then `import zoo`. torch is imported lazily.
"""
from __future__ import annotations

import argparse
import functools
import io
import sys
import warnings
from pathlib import Path

import onnx

OPSET = 17
IR_VERSION = 10  # ORT 1.31 refuses IR > 13 and onnx 1.23 writes 14 by default


# --------------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------------

def _randomize_batchnorms(module, generator) -> None:
    """Non-trivial running statistics and affine parameters, so a wrong BN fold shows in the output."""
    import torch

    for bn in module.modules():
        if isinstance(bn, torch.nn.BatchNorm2d):
            c = bn.num_features
            with torch.no_grad():
                bn.running_mean.copy_(torch.randn(c, generator=generator) * 0.2)
                bn.running_var.copy_(torch.rand(c, generator=generator) * 1.5 + 0.5)
                bn.weight.copy_(torch.rand(c, generator=generator) + 0.5)
                bn.bias.copy_(torch.randn(c, generator=generator) * 0.1)


def _inline_identity_initializers(model: onnx.ModelProto) -> None:
    """The TorchScript exporter emits `Identity(initializer)` for parameters shared by name; replace each
    by a copy of the initializer so every weight reaches its node as an initializer."""
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    graph_outputs = {o.name for o in graph.output}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.input[0] in inits and node.output[0] not in graph_outputs:
            copy = onnx.TensorProto()
            copy.CopyFrom(inits[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)
    used = {name for node in graph.node for name in node.input} | graph_outputs
    unused = [t for t in graph.initializer if t.name not in used]
    for t in unused:
        graph.initializer.remove(t)


@functools.lru_cache(maxsize=None)
def _export_bytes(builder_name: str, args: tuple) -> bytes:
    import torch

    make_module, input_shape, input_name, output_names = _MODULES[builder_name](*args)
    seed = 0
    torch.manual_seed(seed)
    module = make_module()
    _randomize_batchnorms(module, torch.Generator().manual_seed(seed + 1))
    module.eval()
    example = torch.rand(input_shape, generator=torch.Generator().manual_seed(seed + 2))
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PRESERVE mode warns about constant folding; the folding is wanted
        torch.onnx.export(
            module, (example,), buffer, dynamo=False, opset_version=OPSET,
            # PRESERVE with an eval-mode module keeps BatchNormalization nodes (EVAL would fold them)
            training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=True,
            input_names=[input_name], output_names=list(output_names),
        )
    model = onnx.load_from_string(buffer.getvalue())
    _inline_identity_initializers(model)
    model.ir_version = IR_VERSION
    model.producer_name = "deltaonnx-zoo"
    model.graph.name = builder_name
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _build(builder_name: str, *args) -> onnx.ModelProto:
    """A fresh ModelProto each call (callers may edit it); the export itself runs once per arguments."""
    return onnx.load_from_string(_export_bytes(builder_name, tuple(args)))


# --------------------------------------------------------------------------------------------------
# building blocks (torch modules are defined inside functions so importing this file needs no torch)
# --------------------------------------------------------------------------------------------------

def _blocks():
    import torch
    from torch import nn

    def conv_bn(cin, cout, k=3, s=1, groups=1, act=None):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act is not None:
            layers.append(act())
        return nn.Sequential(*layers)

    class BasicBlock(nn.Module):  # ResNet-18's block: two 3x3 conv-BN, residual Add, Relu
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = conv_bn(cin, cout, 3, stride, act=nn.ReLU)
            self.conv2 = conv_bn(cout, cout, 3, 1)
            self.down = conv_bn(cin, cout, 1, stride) if stride != 1 or cin != cout else nn.Identity()
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.conv2(self.conv1(x)) + self.down(x))

    class InvertedResidual(nn.Module):  # MobileNetV2: expand 1x1, depthwise 3x3, project 1x1
        def __init__(self, cin, cout, stride, expand, act=nn.ReLU6, squeeze_excite=False):
            super().__init__()
            hidden = cin * expand
            self.use_residual = stride == 1 and cin == cout
            layers = [conv_bn(cin, hidden, 1, act=act), conv_bn(hidden, hidden, 3, stride, groups=hidden, act=act)]
            if squeeze_excite:
                layers.append(SqueezeExcite(hidden))
            layers.append(conv_bn(hidden, cout, 1))
            self.body = nn.Sequential(*layers)

        def forward(self, x):
            y = self.body(x)
            return x + y if self.use_residual else y

    class SqueezeExcite(nn.Module):  # MobileNetV3: global pool, 1x1 Relu, 1x1 HardSigmoid, Mul
        def __init__(self, c):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.reduce = nn.Conv2d(c, max(4, c // 4), 1)
            self.relu = nn.ReLU()
            self.expand = nn.Conv2d(max(4, c // 4), c, 1)
            self.gate = nn.Hardsigmoid()

        def forward(self, x):
            return x * self.gate(self.expand(self.relu(self.reduce(self.pool(x)))))

    def yolo_conv(cin, cout, k=1, s=1):  # YOLOv8 Conv: Conv + BN + SiLU (exported as x*Sigmoid(x))
        return conv_bn(cin, cout, k, s, act=nn.SiLU)

    class Bottleneck(nn.Module):
        def __init__(self, c, shortcut=True):
            super().__init__()
            self.cv1, self.cv2 = yolo_conv(c, c, 3), yolo_conv(c, c, 3)
            self.shortcut = shortcut

        def forward(self, x):
            y = self.cv2(self.cv1(x))
            return x + y if self.shortcut else y

    class C2f(nn.Module):  # 1x1, Split in two, n bottlenecks on the second half, Concat all, 1x1
        def __init__(self, cin, cout, n=1, shortcut=True):
            super().__init__()
            self.hidden = cout // 2
            self.cv1 = yolo_conv(cin, 2 * self.hidden, 1)
            self.blocks = nn.ModuleList(Bottleneck(self.hidden, shortcut) for _ in range(n))
            self.cv2 = yolo_conv((2 + n) * self.hidden, cout, 1)

        def forward(self, x):
            parts = list(self.cv1(x).split((self.hidden, self.hidden), dim=1))
            for block in self.blocks:
                parts.append(block(parts[-1]))
            return self.cv2(torch.cat(parts, dim=1))

    class SPPF(nn.Module):  # three chained MaxPool k5 s1 p2, Concat
        def __init__(self, cin, cout):
            super().__init__()
            hidden = cin // 2
            self.cv1 = yolo_conv(cin, hidden, 1)
            self.pool = nn.MaxPool2d(5, 1, 2)
            self.cv2 = yolo_conv(hidden * 4, cout, 1)

        def forward(self, x):
            x = self.cv1(x)
            y1 = self.pool(x)
            y2 = self.pool(y1)
            return self.cv2(torch.cat((x, y1, y2, self.pool(y2)), dim=1))

    return dict(conv_bn=conv_bn, BasicBlock=BasicBlock, InvertedResidual=InvertedResidual,
                SqueezeExcite=SqueezeExcite, yolo_conv=yolo_conv, C2f=C2f, SPPF=SPPF)


# --------------------------------------------------------------------------------------------------
# model definitions: each returns (module factory, input shape, input name, output names)
# --------------------------------------------------------------------------------------------------

def _resnet18_like(hw, batch):
    from torch import nn

    b = _blocks()

    def make():
        return nn.Sequential(
            b["conv_bn"](3, 16, 7, 2, act=nn.ReLU),
            nn.MaxPool2d(3, 2, 1),
            b["BasicBlock"](16, 16, 1), b["BasicBlock"](16, 16, 1),
            b["BasicBlock"](16, 32, 2), b["BasicBlock"](32, 64, 2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )

    return make, (batch, 3, *hw), "input", ("logits",)


def _mobilenetv2_like(hw, batch):
    from torch import nn

    b = _blocks()

    def make():
        ir = b["InvertedResidual"]
        return nn.Sequential(
            b["conv_bn"](3, 16, 3, 2, act=nn.ReLU6),
            ir(16, 16, 1, 1), ir(16, 24, 2, 4), ir(24, 24, 1, 4), ir(24, 32, 2, 4), ir(32, 32, 1, 4),
            b["conv_bn"](32, 64, 1, act=nn.ReLU6),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )

    return make, (batch, 3, *hw), "input", ("logits",)


def _mobilenetv3_like(hw, batch):
    from torch import nn

    b = _blocks()

    def make():
        ir = b["InvertedResidual"]
        return nn.Sequential(
            b["conv_bn"](3, 16, 3, 2, act=nn.Hardswish),
            ir(16, 16, 2, 1, act=nn.ReLU, squeeze_excite=True),
            ir(16, 24, 2, 3, act=nn.ReLU), ir(24, 24, 1, 3, act=nn.ReLU),
            ir(24, 40, 2, 3, act=nn.Hardswish, squeeze_excite=True),
            ir(40, 40, 1, 3, act=nn.Hardswish, squeeze_excite=True),
            b["conv_bn"](40, 96, 1, act=nn.Hardswish),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(96, 10),
        )

    return make, (batch, 3, *hw), "input", ("logits",)


def _yolov8_like(hw, batch):
    import torch
    from torch import nn

    b = _blocks()
    conv, C2f, SPPF = b["yolo_conv"], b["C2f"], b["SPPF"]
    n_outputs = 4 + 2  # box + 2 classes per anchor point

    class YoloLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(conv(3, 8, 3, 2), conv(8, 16, 3, 2), C2f(16, 16))        # /4
            self.p3 = nn.Sequential(conv(16, 32, 3, 2), C2f(32, 32, 2))                          # /8
            self.p4 = nn.Sequential(conv(32, 64, 3, 2), C2f(64, 64))                             # /16
            self.p5 = nn.Sequential(conv(64, 64, 3, 2), C2f(64, 64), SPPF(64, 64))               # /32
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.top_down4 = C2f(128, 64, shortcut=False)
            self.top_down3 = C2f(96, 32, shortcut=False)
            self.down3 = conv(32, 32, 3, 2)
            self.bottom_up4 = C2f(96, 64, shortcut=False)
            self.down4 = conv(64, 64, 3, 2)
            self.bottom_up5 = C2f(128, 64, shortcut=False)
            self.heads = nn.ModuleList(
                nn.Sequential(conv(c, 32, 3), nn.Conv2d(32, n_outputs, 1)) for c in (32, 64, 64))

        def forward(self, x):
            p3 = self.p3(self.stem(x))
            p4 = self.p4(p3)
            p5 = self.p5(p4)
            t4 = self.top_down4(torch.cat((self.up(p5), p4), 1))
            n3 = self.top_down3(torch.cat((self.up(t4), p3), 1))
            n4 = self.bottom_up4(torch.cat((self.down3(n3), t4), 1))
            n5 = self.bottom_up5(torch.cat((self.down4(n4), p5), 1))
            levels = [head(f) for head, f in zip(self.heads, (n3, n4, n5))]
            return torch.cat([y.flatten(2) for y in levels], 2)  # [N, 6, anchors]

    for side in hw:
        if side % 32:
            raise ValueError(f"yolov8_like needs sides divisible by 32, got {hw}")
    return YoloLike, (batch, 3, *hw), "images", ("output0",)


def _unet_like(hw, batch):
    import torch
    from torch import nn

    b = _blocks()

    def double_conv(cin, cout):
        return nn.Sequential(b["conv_bn"](cin, cout, 3, act=nn.ReLU), b["conv_bn"](cout, cout, 3, act=nn.ReLU))

    class UNetLike(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1, self.enc2, self.mid = double_conv(3, 8), double_conv(8, 16), double_conv(16, 32)
            self.pool = nn.MaxPool2d(2)
            self.up2, self.dec2 = nn.ConvTranspose2d(32, 16, 2, 2), double_conv(32, 16)
            self.up1, self.dec1 = nn.ConvTranspose2d(16, 8, 2, 2), double_conv(16, 8)
            self.out = nn.Conv2d(8, 2, 1)

        def forward(self, x):
            e1 = self.enc1(x)
            e2 = self.enc2(self.pool(e1))
            m = self.mid(self.pool(e2))
            d2 = self.dec2(torch.cat((self.up2(m), e2), 1))
            d1 = self.dec1(torch.cat((self.up1(d2), e1), 1))
            return self.out(d1)

    for side in hw:
        if side % 4:
            raise ValueError(f"unet_like needs sides divisible by 4, got {hw}")
    return UNetLike, (batch, 3, *hw), "input", ("mask_logits",)


def _cnn1(batch):
    from torch import nn

    def make():  # Borji 2024's CNN1 on 64x64 grey images: 64 -> 32 -> 16, 64*16*16 = 16384 features
        return nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(16384, 128), nn.ReLU(), nn.Linear(128, 10),
        )

    return make, (batch, 1, 64, 64), "input", ("logits",)


def _nhwc_input(hw, batch):
    import torch
    from torch import nn

    class PNetLike(nn.Module):  # MTCNN's PNet shape: NHWC in, PRelu, ceil-mode pool, two 1x1 heads
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 10, 3), nn.PReLU(10), nn.MaxPool2d(2, 2, ceil_mode=True),
                nn.Conv2d(10, 16, 3), nn.PReLU(16),
                nn.Conv2d(16, 32, 3), nn.PReLU(32),
            )
            self.score = nn.Conv2d(32, 2, 1)
            self.box = nn.Conv2d(32, 4, 1)

        def forward(self, x):
            features = self.body(x.permute(0, 3, 1, 2))
            return torch.softmax(self.score(features), dim=1), self.box(features)

    def make():
        module = PNetLike()
        for prelu in module.modules():  # distinct slopes per channel
            if isinstance(prelu, nn.PReLU):
                prelu.weight.data = torch.linspace(0.05, 0.5, prelu.num_parameters)
        return module

    return make, (batch, *hw, 3), "input", ("prob", "box")


_MODULES = {
    "resnet18_like": _resnet18_like,
    "mobilenetv2_like": _mobilenetv2_like,
    "mobilenetv3_like": _mobilenetv3_like,
    "yolov8_like": _yolov8_like,
    "unet_like": _unet_like,
    "cnn1": _cnn1,
    "nhwc_input": _nhwc_input,
}


# --------------------------------------------------------------------------------------------------
# public builders
# --------------------------------------------------------------------------------------------------

def resnet18_like(hw=(64, 64), batch=1) -> onnx.ModelProto:
    """ResNet-18 in miniature: Conv-BN-Relu stem (7x7 s2), MaxPool 3x3 s2, basic blocks with residual Add
    and stride-2 downsampling (1x1 conv-BN shortcut), GlobalAveragePool, Flatten, Gemm.
    Input `input` [batch,3,H,W]; output `logits` [batch,10]."""
    return _build("resnet18_like", tuple(hw), batch)


def mobilenetv2_like(hw=(64, 64), batch=1) -> onnx.ModelProto:
    """MobileNetV2 in miniature: inverted residuals (1x1 expand, 3x3 depthwise, 1x1 project, residual Add),
    BN everywhere, Relu6 exported as Clip(0, 6). Input `input` [batch,3,H,W]; output `logits` [batch,10]."""
    return _build("mobilenetv2_like", tuple(hw), batch)


def mobilenetv3_like(hw=(64, 64), batch=1) -> onnx.ModelProto:
    """MobileNetV3 in miniature: HardSwish, squeeze-excite (GlobalAveragePool, 1x1 Relu, 1x1 HardSigmoid,
    Mul), depthwise convs. Input `input` [batch,3,H,W]; output `logits` [batch,10]."""
    return _build("mobilenetv3_like", tuple(hw), batch)


def yolov8_like(hw=(64, 64), batch=1) -> onnx.ModelProto:
    """YOLOv8 in miniature: Conv-BN-SiLU (x*Sigmoid(x)), C2f (Split, bottlenecks, Concat), SPPF (three
    MaxPool k5 s1 p2), FPN/PAN neck with nearest Resize x2 and Concat, three heads flattened and
    concatenated. Sides must be multiples of 32. Input `images` [batch,3,H,W]; output `output0`
    [batch, 6, (H/8*W/8 + H/16*W/16 + H/32*W/32)]."""
    return _build("yolov8_like", tuple(hw), batch)


def unet_like(hw=(64, 64), batch=1) -> onnx.ModelProto:
    """U-Net in miniature: two MaxPool levels, ConvTranspose 2x2 s2 upsampling, skip Concat, 1x1 output
    conv. Sides must be multiples of 4. Input `input` [batch,3,H,W]; output `mask_logits` [batch,2,H,W]."""
    return _build("unet_like", tuple(hw), batch)


def cnn1(batch=1) -> onnx.ModelProto:
    """The paper's CNN1 (Borji 2024): conv 1->32 3x3 p1, Relu, MaxPool 2, conv 32->64 3x3 p1, Relu,
    MaxPool 2, Flatten, Gemm 16384->128, Relu, Gemm 128->10. Input `input` [batch,1,64,64]; output
    `logits` [batch,10]."""
    return _build("cnn1", batch)


def nhwc_input(hw=(48, 64), batch=1) -> onnx.ModelProto:
    """MTCNN-PNet-like fully convolutional net with an NHWC input (Transpose to NCHW before the first
    conv), per-channel PRelu, a ceil_mode MaxPool and two 1x1 heads (Softmax score, box).
    Input `input` [batch,H,W,3]; outputs `prob` [batch,2,h,w] and `box` [batch,4,h,w]."""
    return _build("nhwc_input", tuple(hw), batch)


def with_plausible_boxes(model: onnx.ModelProto) -> onnx.ModelProto:
    """yolov8_like has random weights, so its raw boxes are tiny and often inverted. Scale its output so the
    boxes look like detections (12x12 px, centres spread over the image, some scores above 0.25) and move
    with the input, as a trained detector's do. For bench and calibrate tests; not a BUILDERS entry."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    raw = graph.output[0].name
    graph.node[-1].output[0] = raw + "_raw"
    scale = np.array([300, 300, 0, 0, 10, 10], np.float32).reshape(1, 6, 1)
    offset = np.array([32, 32, 12, 12, 0.2, 0.2], np.float32).reshape(1, 6, 1)
    graph.initializer.extend([numpy_helper.from_array(scale, "box_scale"),
                              numpy_helper.from_array(offset, "box_offset")])
    graph.node.extend([helper.make_node("Mul", [raw + "_raw", "box_scale"], [raw + "_scaled"]),
                       helper.make_node("Add", [raw + "_scaled", "box_offset"], [raw])])
    return model


BUILDERS = {
    "resnet18_like": resnet18_like,
    "mobilenetv2_like": mobilenetv2_like,
    "mobilenetv3_like": mobilenetv3_like,
    "yolov8_like": yolov8_like,
    "unet_like": unet_like,
    "cnn1": cnn1,
    "nhwc_input": nhwc_input,
}


def write_all(directory, names=None) -> list[Path]:
    """Writes <directory>/<name>.onnx for each builder (all by default) with default arguments."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in names or BUILDERS:
        if name not in BUILDERS:
            raise KeyError(f"unknown model {name!r}: expected one of {sorted(BUILDERS)}")
        path = directory / f"{name}.onnx"
        onnx.save(BUILDERS[name](), path)
        written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Export the deltaonnx sample models as .onnx files.")
    parser.add_argument("out_dir", help="directory to write <name>.onnx into")
    parser.add_argument("--only", nargs="+", choices=sorted(BUILDERS), help="export only these models")
    args = parser.parse_args(argv)
    for path in write_all(args.out_dir, args.only):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

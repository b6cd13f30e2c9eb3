"""Plain and residual networks of He et al. 2016 ("Deep Residual Learning for Image Recognition").

Two layouts share one ``ResNet`` class and one block class per block kind:

* ``"cifar"`` (§4.2): depth 6n+2; a 3×3 stem with 16 filters, three stages of n basic blocks with
  16/32/64 filters, global average pooling and a linear classifier. Any input of at least 8×8 works.
* ``"imagenet"`` (§3.4, Table 1): a 7×7/2 stem with 64 filters and a 3×3/2 max-pool, four stages with
  64/128/256/512 filters; basic blocks for depths 18/34, bottleneck blocks (expansion 4) for 50/101/152.

Plain and residual twins are the *same* blocks with a ``residual`` switch: a plain block only skips the
addition, so a plain net and its option-A residual twin have identical parameter names and shapes.

Shortcut options (§3.3): A = identity, or stride-2 subsampling plus zero-padded channels where the shape
changes (no parameters); B = a projection (1×1 conv + BN) only where the shape changes, identity elsewhere;
C = a projection on every block. Plain nets have no shortcuts, so ``shortcut`` is ignored for them.

Choices that differ from, or are not fixed by, the paper:

* The bottleneck's stride sits on its 3×3 conv by default, as in torchvision ("ResNet v1.5");
  ``bottleneck_stride="1x1"`` puts it on the first 1×1 conv, as the paper's released Caffe models do. Both
  have the same parameter count; v1.5 is slightly more accurate.
* Option A pads the new channels with zeros *after* the existing ones (the paper does not say where).
* Init: He normal (``kaiming_normal_``, fan_out, ReLU) for every conv, BN weight 1 and bias 0, and
  PyTorch's default init for the final linear layer (as torchvision does).
* ``zero_init_residual`` zeroes the last BN weight of every *residual* block so each block starts as the
  identity. Plain nets ignore it: for them it would zero the whole signal and stop all learning.
* No in-place ReLU anywhere, so a forward hook may keep a BN output tensor (``response_layers``) without it
  being overwritten by a later ReLU, and the residual addition never modifies a tensor autograd needs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from resnet_core.config import BOTTLENECK_STRIDES, SHORTCUTS, check_architecture, check_choice

__all__ = [
    "BasicBlock",
    "Bottleneck",
    "IdentityShortcut",
    "PadShortcut",
    "ProjectionShortcut",
    "ResNet",
    "build_model",
    "count_parameters",
    "response_layers",
]

# Blocks per stage for each ImageNet depth (paper Table 1) and which block kind it uses.
IMAGENET_LAYERS: dict[int, tuple[str, list[int]]] = {
    18: ("basic", [2, 2, 2, 2]),
    34: ("basic", [3, 4, 6, 3]),
    50: ("bottleneck", [3, 4, 6, 3]),
    101: ("bottleneck", [3, 4, 23, 3]),
    152: ("bottleneck", [3, 8, 36, 3]),
}
# The paper's shortcut option for each layout when the caller passes ``shortcut=None``.
DEFAULT_SHORTCUT = {"cifar": "A", "imagenet": "B"}


def conv3x3(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """3×3 convolution with padding 1 and no bias (a BN follows every conv)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    """1×1 convolution with no bias (a BN follows every conv)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


# --------------------------------------------------------------------------------------------------------
# Shortcuts (§3.3). Named module classes rather than lambdas so that models pickle.
# --------------------------------------------------------------------------------------------------------


class IdentityShortcut(nn.Module):
    """Parameter-free identity shortcut, used wherever the input and output shapes match."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class PadShortcut(nn.Module):
    """Option A where the shape changes: subsample by ``stride`` and zero-pad the new channels.

    Parameter-free, so an option-A ResNet has exactly the parameters of its plain twin.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError(f"PadShortcut can only add channels; got {in_planes} -> {out_planes}")
        self.in_planes = in_planes
        self.out_planes = out_planes
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            # Keeps ceil(H / stride) rows, the same as a 3×3 conv with padding 1 and this stride.
            x = x[:, :, :: self.stride, :: self.stride]
        extra = self.out_planes - self.in_planes
        if extra:
            # F.pad pads dimensions last-first: (W left, W right, H top, H bottom, C front, C back).
            x = F.pad(x, (0, 0, 0, 0, 0, extra))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_planes}, {self.out_planes}, stride={self.stride}"


class ProjectionShortcut(nn.Module):
    """Options B/C: a strided 1×1 conv followed by BN, matching torchvision's ``downsample``."""

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.conv = conv1x1(in_planes, out_planes, stride)
        self.bn = nn.BatchNorm2d(out_planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


def make_shortcut(option: str, in_planes: int, out_planes: int, stride: int) -> nn.Module:
    """The shortcut module of one residual block for shortcut ``option`` "A", "B" or "C"."""
    check_choice("shortcut", option, SHORTCUTS)
    reshapes = stride != 1 or in_planes != out_planes
    if option == "C" or (option == "B" and reshapes):
        return ProjectionShortcut(in_planes, out_planes, stride)
    if option == "A" and reshapes:
        return PadShortcut(in_planes, out_planes, stride)
    return IdentityShortcut()


# --------------------------------------------------------------------------------------------------------
# Blocks. ``residual=False`` gives the plain block: the same layers without the shortcut and addition.
# --------------------------------------------------------------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3×3 convs: conv-BN-ReLU-conv-BN, (+ shortcut if residual), ReLU (Fig. 2 / Fig. 5 left)."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1, residual: bool = True, shortcut: str = "A") -> None:
        super().__init__()
        self.residual = residual
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        out_planes = planes * self.expansion
        self.shortcut = make_shortcut(shortcut, in_planes, out_planes, stride) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu(out)

    def last_bn(self) -> nn.BatchNorm2d:
        """The BN whose output meets the shortcut (zeroed by ``zero_init_residual``)."""
        return self.bn2

    def conv_layers(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        """The main path's convs in order, each with the BN that normalises its output."""
        return [(self.conv1, self.bn1), (self.conv2, self.bn2)]


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3, 1×1 expand (×4), each followed by BN; ReLU after the addition (Fig. 5 right).

    The stride is on the 3×3 conv (torchvision "v1.5") unless ``stride_on="1x1"``: on the first 1×1 conv,
    as in the paper's released Caffe models.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1, residual: bool = True, shortcut: str = "B",
                 stride_on: str = "3x3") -> None:
        super().__init__()
        self.residual = residual
        out_planes = planes * self.expansion
        self.conv1 = conv1x1(in_planes, planes, stride if stride_on == "1x1" else 1)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, 1 if stride_on == "1x1" else stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, out_planes)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.relu = nn.ReLU()
        self.shortcut = make_shortcut(shortcut, in_planes, out_planes, stride) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return self.relu(out)

    def last_bn(self) -> nn.BatchNorm2d:
        """The BN whose output meets the shortcut (zeroed by ``zero_init_residual``)."""
        return self.bn3

    def conv_layers(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        """The main path's convs in order (1×1, 3×3, 1×1), each with the BN that normalises its output."""
        return [(self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)]


# --------------------------------------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------------------------------------


class ResNet(nn.Module):
    """Stem, stages ``layer1``..``layerK`` of blocks, global average pool, optional dropout, linear head.

    Use ``build_model`` rather than this constructor: it validates the arguments and picks the layout.
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: list[int],
        widths: list[int],
        stem_width: int,
        imagenet_stem: bool,
        residual: bool = True,
        shortcut: str = "A",
        num_classes: int = 10,
        dropout: float = 0.0,
        in_channels: int = 3,
        zero_init_residual: bool = False,
        bottleneck_stride: str = "3x3",
    ) -> None:
        super().__init__()
        self.bottleneck_stride = bottleneck_stride
        self.residual = residual
        self.shortcut_option = shortcut if residual else None  # plain nets have no shortcuts
        self.in_planes = stem_width
        if imagenet_stem:
            self.conv1 = nn.Conv2d(in_channels, stem_width, kernel_size=7, stride=2, padding=3, bias=False)
        else:
            self.conv1 = conv3x3(in_channels, stem_width)
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if imagenet_stem else nn.Identity()

        self.stage_names: list[str] = []
        for i, (blocks, planes) in enumerate(zip(layers, widths)):
            name = f"layer{i + 1}"
            stride = 1 if i == 0 else 2
            self.add_module(name, self._make_layer(block, planes, blocks, stride, residual, shortcut))
            self.stage_names.append(name)

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(self.in_planes, num_classes)

        self._init_weights(zero_init_residual and residual)

    def _make_layer(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        planes: int,
        blocks: int,
        stride: int,
        residual: bool,
        shortcut: str,
    ) -> nn.Sequential:
        """One stage: ``blocks`` blocks of width ``planes``; only the first one strides / changes width."""
        stage = []
        for i in range(blocks):
            options = {"stride_on": self.bottleneck_stride} if block is Bottleneck else {}
            stage.append(block(self.in_planes, planes, stride if i == 0 else 1, residual, shortcut, **options))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*stage)

    def _init_weights(self, zero_init_residual: bool) -> None:
        """He init for convs (§3.4, ref [13]); BN to the identity; the linear head keeps PyTorch's default."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    nn.init.zeros_(m.last_bn().weight)

    def conv_layers(self) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
        """Every conv of the main path (the stem's, then each block's) with the BN that normalises its output,
        in network order. Projection shortcuts are not on the main path and are not included."""
        blocks = [m for m in self.modules() if isinstance(m, (BasicBlock, Bottleneck))]
        return [(self.conv1, self.bn1)] + [layer for block in blocks for layer in block.conv_layers()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(self.dropout(x))


def _scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded to an int, at least 1."""
    return max(1, int(round(channels * width)))


def build_model(
    layout: str,
    depth: int,
    residual: bool = True,
    shortcut: str | None = None,
    num_classes: int = 10,
    width: float = 1.0,
    zero_init_residual: bool = False,
    dropout: float = 0.0,
    in_channels: int = 3,
    bottleneck_stride: str = "3x3",
) -> ResNet:
    """Build a plain (``residual=False``) or residual network of the paper.

    ``layout`` is "cifar" (§4.2) or "imagenet" (§3.4). ``shortcut=None`` takes the paper's option for the
    layout ("A" for cifar, "B" for imagenet). Plain nets have no shortcuts, so for them a valid ``shortcut``
    is ignored: plain with "A", "B" or "C" is the same network. ``zero_init_residual`` is likewise ignored by
    plain nets. ``width`` multiplies every layer's filter count. ``bottleneck_stride`` ("3x3" or "1x1") says which
    conv of a bottleneck block strides. Raises ``ValueError`` naming the bad value
    and the valid choices (the architecture rules are ``config.check_architecture``, which configs share).
    """
    if shortcut is None:
        shortcut = DEFAULT_SHORTCUT.get(layout, "A")  # an unknown layout is reported first
    check_architecture(layout, depth, shortcut, width, dropout)
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1; got {num_classes!r}")
    check_choice("bottleneck_stride", bottleneck_stride, BOTTLENECK_STRIDES)
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1; got {in_channels!r}")

    if layout == "cifar":
        n = (depth - 2) // 6
        block: type[BasicBlock] | type[Bottleneck] = BasicBlock
        layers, base, stem = [n, n, n], [16, 32, 64], 16
    else:
        kind, layers = IMAGENET_LAYERS[depth]
        block = BasicBlock if kind == "basic" else Bottleneck
        base, stem = [64, 128, 256, 512], 64
    return ResNet(
        block,
        layers,
        widths=[_scaled(c, width) for c in base],
        stem_width=_scaled(stem, width),
        imagenet_stem=layout == "imagenet",
        residual=residual,
        shortcut=shortcut,
        num_classes=num_classes,
        dropout=dropout,
        in_channels=in_channels,
        zero_init_residual=zero_init_residual,
        bottleneck_stride=bottleneck_stride,
    )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (what the paper's "params" column counts)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def response_layers(model: nn.Module) -> list[tuple[str, nn.BatchNorm2d]]:
    """The layers of the paper's Fig. 7: the BN after each 3×3 conv, in network order, named by module path.

    Fig. 7 plots the std of "each 3×3 layer's response": its output after BN and before the ReLU / addition.
    So the series holds the BN that follows each 3×3 conv: on the CIFAR layout the 3×3 stem and both convs
    of every block (ResNet-20: 19 layers, the x-axis of Fig. 7); on the ImageNet layout only the blocks' 3×3
    convs, since the 7×7 stem and the bottleneck's 1×1 convs are not 3×3 layers. The 1×1 projection
    shortcuts of options B and C never count, so a plain net and its residual twin give the same names under
    every option. Names are module paths such as ``"layer1.0.bn1"``; register forward hooks on the modules
    to read the responses.

    ``model`` must be the uncompiled ResNet: ``torch.compile`` returns a wrapper whose module paths differ,
    so keep a reference to the model you compiled (as ``fit`` does) and pass that.
    """
    if not isinstance(model, ResNet):
        raise TypeError(f"response_layers needs an uncompiled ResNet from build_model (for a torch.compile'd "
                        f"model, pass the model given to torch.compile); got {type(model).__name__}")
    names = {module: name for name, module in model.named_modules()}
    return [(names[bn], bn) for conv, bn in model.conv_layers() if conv.kernel_size == (3, 3)]

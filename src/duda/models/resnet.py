"""ResNet encoders (plain torch) with optionally dilated stages, for DeepLab models.

Module names follow torchvision's layout (``conv1``, ``bn1``, ``layer1.0.conv1`` …,
``downsample.0/1``) so that torchvision-style ImageNet checkpoints load without renaming.
A dilated stage keeps its resolution (stride 1) and dilates every 3×3 convolution in it, as in
DeepLabV2 (layer3 dilation 2, layer4 dilation 4 → output stride 8).

Two stems: ``"plain"`` (one 7×7 stride-2 conv, torchvision / original DeepLab) and ``"deep"``
(ResNet-V1c, used by mmseg and the UDA literature's DeepLabV2: three 3×3 conv-BN-ReLU,
3→width/2 stride 2, width/2→width/2, width/2→width). The deep stem is an ``nn.Sequential`` named
``stem`` with mmseg's indices (``stem.0`` conv, ``stem.1`` BN, ``stem.3``, ``stem.4``,
``stem.6``, ``stem.7``), so mmseg's ``open-mmlab://resnet*_v1c`` weights keep their names.
``contract_dilation`` (mmseg's option, set by its DeepLab configs) gives the first block of a
dilated stage half the stage's dilation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from duda.config_base import PositiveInt


@dataclass(frozen=True)
class ResNetArch:
    """Architecture of one ResNet encoder; the defaults are a DeepLabV2 ResNet-101."""

    layers: tuple[int, ...] = (3, 4, 23, 3)
    width: PositiveInt = 64  # channels of the stem and of the first stage's 3×3 convs
    block: Literal["bottleneck", "basic"] = "bottleneck"
    dilations: tuple[int, ...] = (1, 1, 2, 4)
    stem: Literal["plain", "deep"] = "plain"  # 7×7 conv, or V1c's three 3×3 convs
    contract_dilation: bool = False  # first block of a dilated stage: dilation // 2 (mmseg)


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with a residual connection (ResNet-18/34)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None):
        super().__init__()
        pad = dilation
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, pad, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, pad, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """1×1 reduce, 3×3 (strided, dilated), 1×1 expand ×4; stride in the 3×3 as in torchvision."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, dilation: int, downsample: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def deep_stem(width: int) -> nn.Sequential:
    """ResNet-V1c stem: three 3×3 conv-BN-ReLU (3→width/2 stride 2, width/2→width/2, →width)."""
    half = width // 2
    return nn.Sequential(
        nn.Conv2d(3, half, 3, 2, 1, bias=False),
        nn.BatchNorm2d(half),
        nn.ReLU(inplace=True),
        nn.Conv2d(half, half, 3, 1, 1, bias=False),
        nn.BatchNorm2d(half),
        nn.ReLU(inplace=True),
        nn.Conv2d(half, width, 3, 1, 1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(inplace=True),
    )


class ResNetBackbone(nn.Module):
    """ResNet returning the outputs of its four stages (``layer1`` … ``layer4``)."""

    #: backbone family, read by the optimiser (DAFormer: every ResNet parameter decays)
    family = "resnet"

    def __init__(self, arch: ResNetArch | None = None) -> None:
        super().__init__()
        self.arch = arch = arch or ResNetArch()
        if len(arch.layers) != 4 or len(arch.dilations) != 4:
            raise ValueError(
                f"ResNet layers {arch.layers} and dilations {arch.dilations} need 4 entries each"
            )
        if arch.block not in ("bottleneck", "basic"):
            raise ValueError(f"ResNet block must be 'bottleneck' or 'basic', got {arch.block!r}")
        if arch.stem not in ("plain", "deep"):
            raise ValueError(f"ResNet stem must be 'plain' or 'deep', got {arch.stem!r}")
        if arch.stem == "deep" and arch.width % 2:
            raise ValueError(
                f"ResNet stem='deep' needs an even width (3×3 convs of width/2), got {arch.width}"
            )
        if not isinstance(arch.contract_dilation, bool):
            raise ValueError(
                f"ResNet contract_dilation must be true or false, got {arch.contract_dilation!r}"
            )
        block = Bottleneck if arch.block == "bottleneck" else BasicBlock
        if arch.stem == "deep":
            self.stem = deep_stem(arch.width)
        else:
            self.conv1 = nn.Conv2d(3, arch.width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(arch.width)
            self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inplanes, stride_total = arch.width, 4
        out_channels, strides = [], []
        for i, (n_blocks, dilation) in enumerate(zip(arch.layers, arch.dilations, strict=True)):
            planes = arch.width * 2**i
            # A dilated stage replaces its stride-2 downsampling by dilation.
            stride = 1 if i == 0 or dilation > 1 else 2
            stride_total *= stride
            first_dilation = dilation // 2 if arch.contract_dilation and dilation > 1 else dilation
            layer, inplanes = self._make_stage(
                block, inplanes, planes, n_blocks, stride, dilation, first_dilation
            )
            self.add_module(f"layer{i + 1}", layer)
            out_channels.append(inplanes)
            strides.append(stride_total)
        self.out_channels: tuple[int, ...] = tuple(out_channels)
        self.feature_strides: tuple[int, ...] = tuple(strides)
        self._init_weights()

    @staticmethod
    def _make_stage(
        block: type[BasicBlock] | type[Bottleneck],
        inplanes: int,
        planes: int,
        n_blocks: int,
        stride: int,
        dilation: int,
        first_dilation: int,
    ) -> tuple[nn.Sequential, int]:
        out = planes * block.expansion
        downsample = None
        if stride != 1 or inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        blocks = [block(inplanes, planes, stride, first_dilation, downsample)]
        blocks += [block(out, planes, 1, dilation, None) for _ in range(n_blocks - 1)]
        return nn.Sequential(*blocks), out

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x) if self.arch.stem == "deep" else self.relu(self.bn1(self.conv1(x)))
        x = self.maxpool(x)
        feats = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            feats.append(x)
        return feats

"""ResNet encoders (plain torch) with optionally dilated stages, for DeepLab models.

Module names follow torchvision's layout (``conv1``, ``bn1``, ``layer1.0.conv1`` …,
``downsample.0/1``) so that torchvision-style ImageNet checkpoints load without renaming.
A dilated stage keeps its resolution (stride 1) and dilates every 3×3 convolution in it, as in
DeepLabV2 (layer3 dilation 2, layer4 dilation 4 → output stride 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn


@dataclass(frozen=True)
class ResNetArch:
    """Architecture of one ResNet encoder; the defaults are a DeepLabV2 ResNet-101."""

    layers: tuple[int, ...] = (3, 4, 23, 3)
    width: int = 64  # channels of the stem and of the first stage's 3×3 convs
    block: Literal["bottleneck", "basic"] = "bottleneck"
    dilations: tuple[int, ...] = (1, 1, 2, 4)


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


class ResNetBackbone(nn.Module):
    """ResNet returning the outputs of its four stages (``layer1`` … ``layer4``)."""

    def __init__(self, arch: ResNetArch | None = None) -> None:
        super().__init__()
        self.arch = arch = arch or ResNetArch()
        if len(arch.layers) != 4 or len(arch.dilations) != 4:
            raise ValueError(
                f"ResNet layers {arch.layers} and dilations {arch.dilations} need 4 entries each"
            )
        if arch.block not in ("bottleneck", "basic"):
            raise ValueError(f"ResNet block must be 'bottleneck' or 'basic', got {arch.block!r}")
        block = Bottleneck if arch.block == "bottleneck" else BasicBlock
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
            layer, inplanes = self._make_stage(block, inplanes, planes, n_blocks, stride, dilation)
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
    ) -> tuple[nn.Sequential, int]:
        out = planes * block.expansion
        downsample = None
        if stride != 1 or inplanes != out:
            downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        blocks = [block(inplanes, planes, stride, dilation, downsample)]
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
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            feats.append(x)
        return feats

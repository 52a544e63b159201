"""Decode heads: DAFormer (separable-ASPP fusion), SegFormer (all-MLP), DeepLabV2, DeepLabV3+.

Every head takes the list of backbone stage outputs (highest resolution first) and returns logits
at the resolution of the level it fuses to. Token-wise "MLP" embeddings are written as 1×1
convolutions: the same function, without flattening, and friendly to ``channels_last``.

Initialisation follows the reference (DAFormer's mmseg heads on mmcv 1.3.7):

- every conv followed by a norm and/or activation (mmcv ``ConvModule``: ASPP branches, depthwise
  and pointwise convs, bottleneck, fuse conv) — Kaiming normal, ``fan_out``, ReLU gain, bias 0;
  its BatchNorm weight 1, bias 0 (:func:`init_conv_module`);
- the classifier of heads derived from mmseg's ``BaseDecodeHead`` (``conv_seg``) — N(0, 0.01),
  bias 0 (:func:`init_classifier`);
- the linear embeddings (mmseg ``MLP``: an ``nn.Linear`` nothing re-initialises) — PyTorch's
  default, which for a 1×1 conv is the same distribution: weight and bias U(±1/sqrt(fan_in)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def init_conv_module(module: nn.Module) -> nn.Module:
    """mmcv ``ConvModule`` initialisation of every conv and BatchNorm in ``module``.

    Conv: ``kaiming_normal_(mode="fan_out", nonlinearity="relu")`` (std sqrt(2 / fan_out), fan_out
    = out_channels × kernel area, so depthwise convs count their own out_channels), bias 0.
    BatchNorm: weight 1, bias 0. Returns ``module``.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return module


def init_classifier(conv: nn.Conv2d) -> nn.Conv2d:
    """mmseg ``BaseDecodeHead``'s ``conv_seg`` initialisation: weight N(0, 0.01), bias 0."""
    nn.init.normal_(conv.weight, mean=0.0, std=0.01)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


def conv_bn_relu(cin: int, cout: int, kernel: int = 1, dilation: int = 1, groups: int = 1) -> nn.Sequential:
    """Conv (no bias, "same" padding) → BatchNorm → ReLU, initialised as an mmcv ConvModule."""
    pad = dilation * (kernel - 1) // 2
    block = nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )
    return init_conv_module(block)


def separable_conv_bn_relu(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    """Depthwise 3×3 (dilated) conv-BN-ReLU followed by pointwise 1×1 conv-BN-ReLU."""
    return nn.Sequential(conv_bn_relu(cin, cin, 3, dilation, groups=cin), conv_bn_relu(cin, cout, 1))


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize (align_corners=False, as mmseg) unless already that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class SeparableASPP(nn.Module):
    """ASPP whose dilation-1 branch is a 1×1 conv and others depthwise-separable 3×3 convs.

    The branch outputs are concatenated and reduced by a 3×3 conv-BN-ReLU (DAFormer's ``sep_aspp``
    fusion, without image pooling).
    """

    def __init__(self, cin: int, channels: int, dilations: tuple[int, ...]) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            conv_bn_relu(cin, channels, 1) if d == 1 else separable_conv_bn_relu(cin, channels, d)
            for d in dilations
        )
        self.bottleneck = conv_bn_relu(channels * len(dilations), channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bottleneck(torch.cat([b(x) for b in self.branches], dim=1))


class DAFormerHead(nn.Module):
    """Per-level linear embedding, upsampling to the finest level, separable-ASPP fusion."""

    def __init__(
        self,
        in_channels: tuple[int, ...],
        num_classes: int,
        channels: int = 256,
        dilations: tuple[int, ...] = (1, 6, 12, 18),
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        # DAFormer's embeddings are linear (no norm, no activation), with nn.Linear's default init.
        self.embed = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.fuse = SeparableASPP(channels * len(in_channels), channels, dilations)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = init_classifier(nn.Conv2d(channels, num_classes, 1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        x = torch.cat([resize_to(e(f), size) for e, f in zip(self.embed, feats, strict=True)], dim=1)
        return self.classifier(self.dropout(self.fuse(x)))


class SegFormerHead(nn.Module):
    """SegFormer's all-MLP decoder: linear embedding per level, concat, 1×1 fuse with BN+ReLU.

    Initialisation as the reference's ``SegFormerHead``: its classifier is ``linear_pred``, a plain
    ``nn.Conv2d`` that the head's ``conv_seg`` N(0, 0.01) rule does not reach (``conv_seg`` exists
    there but is unused), so it keeps PyTorch's default init, like the embeddings; only the fuse
    ConvModule gets Kaiming.
    """

    def __init__(
        self, in_channels: tuple[int, ...], num_classes: int, channels: int = 256, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.embed = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels)
        self.fuse = conv_bn_relu(channels * len(in_channels), channels, 1)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        size = feats[0].shape[-2:]
        # Coarsest level first, as in the reference implementation's concatenation order.
        embedded = [resize_to(e(f), size) for e, f in zip(self.embed, feats, strict=True)]
        x = torch.cat(embedded[::-1], dim=1)
        return self.classifier(self.dropout(self.fuse(x)))


class DeepLabV2Head(nn.Module):
    """DeepLabV2 ASPP classifier: parallel dilated 3×3 convs on the last stage, outputs summed.

    The original DeepLab uses dilations (6, 12, 18, 24); the UDA literature's DeepLabV2 (AdaptSegNet,
    DAFormer's ``deeplabv2red``) only (6, 12).
    """

    def __init__(self, in_channels: int, num_classes: int, dilations: tuple[int, ...] = (6, 12, 18, 24)):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, 3, padding=d, dilation=d) for d in dilations
        )
        for conv in self.branches:  # DLV2Head's init_cfg: Normal(std=0.01) on aspp_modules, bias 0
            init_classifier(conv)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        out = self.branches[0](x)
        for conv in self.branches[1:]:
            out = out + conv(x)
        return out


class ImagePooling(nn.Module):
    """Global-average-pooled context branch, broadcast back to the input size.

    No BatchNorm: on a 1×1 map it would fail for batch 1 and add nothing.
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        # A conv + ReLU: mmcv ConvModule init (Kaiming fan_out, bias 0), like the other branches.
        self.conv = init_conv_module(nn.Conv2d(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.relu(self.conv(x.mean(dim=(2, 3), keepdim=True)))
        return pooled.expand(-1, -1, x.shape[2], x.shape[3])


class DeepLabV3PlusHead(nn.Module):
    """DeepLabV3+: separable ASPP with image pooling on the last stage, a low-level skip from the
    first stage, two separable 3×3 convs, classifier at the first stage's resolution.

    Initialised with the same rule as the DAFormer head (this head is the project's own CNN
    student, not a reference head): every conv-BN-ReLU as an mmcv ConvModule (Kaiming fan_out,
    BN 1/0), the classifier N(0, 0.01) as mmseg's ``conv_seg``.
    """

    def __init__(
        self,
        in_channels: tuple[int, ...],
        num_classes: int,
        channels: int = 128,
        dilations: tuple[int, ...] = (1, 6, 12, 18),
        skip_channels: int = 48,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        cin = in_channels[-1]
        self.aspp = nn.ModuleList(
            conv_bn_relu(cin, channels, 1) if d == 1 else separable_conv_bn_relu(cin, channels, d)
            for d in dilations
        )
        self.pool = ImagePooling(cin, channels)
        self.aspp_project = conv_bn_relu(channels * (len(dilations) + 1), channels, 1)
        self.skip = conv_bn_relu(in_channels[0], skip_channels, 1)
        self.decode = nn.Sequential(
            separable_conv_bn_relu(channels + skip_channels, channels),
            separable_conv_bn_relu(channels, channels),
        )
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = init_classifier(nn.Conv2d(channels, num_classes, 1))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = feats[-1]
        context = torch.cat([b(x) for b in self.aspp] + [self.pool(x)], dim=1)
        context = resize_to(self.aspp_project(context), feats[0].shape[-2:])
        x = self.decode(torch.cat([context, self.skip(feats[0])], dim=1))
        return self.classifier(self.dropout(x))

"""The segmentation model: a backbone, a head, and the spec that rebuilds it."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class SegmentationModel(nn.Module):
    """``backbone`` (list of stage features) → ``head`` (logits at 1/``output_stride``).

    ``spec`` = ``{"name", "num_classes", "arch"}``; ``build_model(spec["name"],
    spec["num_classes"], **spec["arch"])`` rebuilds the same architecture. With
    ``spec["input_scale"]`` = s ≠ 1 the model first resizes its input by s (bilinear): a small
    network that works at a lower resolution than the images it is given (DUDA's single-resolution
    student under a multi-resolution teacher); its logits are then at 1/(output_stride / s).
    """

    def __init__(
        self, backbone: nn.Module, head: nn.Module, output_stride: int, spec: dict[str, Any]
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.output_stride = output_stride
        self.spec = spec
        self.input_scale = float(spec.get("input_scale", 1.0))
        if self.input_scale <= 0:
            raise ValueError(f"input_scale: expected > 0, got {self.input_scale}")
        if self.input_scale != 1.0:
            self.min_input_side = math.ceil(SegmentationModel.min_input_side / self.input_scale)

    @property
    def num_classes(self) -> int:
        return int(self.spec["num_classes"])

    #: Inputs with a side shorter than this are zero-padded by ``duda.inference.modes``: the
    #: encoders reduce by up to 32 and MiT's attention reduction convolutions need that many pixels.
    min_input_side = 32

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits B×K×H/s×W/s; with ``return_features`` also the last encoder stage's features."""
        if self.input_scale != 1.0:
            x = F.interpolate(x, scale_factor=self.input_scale, mode="bilinear", align_corners=False)
        feats = self.backbone(x)
        logits = self.head(feats)
        if return_features:
            return logits, feats[-1]
        return logits

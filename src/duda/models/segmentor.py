"""The segmentation model: a backbone, a head, and the spec that rebuilds it."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class SegmentationModel(nn.Module):
    """``backbone`` (list of stage features) → ``head`` (logits at 1/``output_stride``).

    ``spec`` = ``{"name", "num_classes", "arch"}``; ``build_model(spec["name"],
    spec["num_classes"], **spec["arch"])`` rebuilds the same architecture.
    """

    def __init__(
        self, backbone: nn.Module, head: nn.Module, output_stride: int, spec: dict[str, Any]
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.output_stride = output_stride
        self.spec = spec

    @property
    def num_classes(self) -> int:
        return int(self.spec["num_classes"])

    #: Inputs with a side shorter than this are zero-padded by ``duda.evaluation.inference``: the
    #: encoders reduce by up to 32 and MiT's attention reduction convolutions need that many pixels.
    min_input_side = 32

    def forward(
        self, x: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Logits B×K×H/s×W/s; with ``return_features`` also the last encoder stage's features."""
        feats = self.backbone(x)
        logits = self.head(feats)
        if return_features:
            return logits, feats[-1]
        return logits

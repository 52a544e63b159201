"""HRDA and MIC(HRDA): the DAFormer-family step on multi-resolution networks.

Every network is an :class:`~duda.models.hrda.HRDAModel` (``method.hrda``): the training crop
(1024×1024 in the paper) is seen whole at the context scale (0.5 → 512×512) and, through a
random detail crop (512×512) drawn anew for each forward from the step's generator, at full
resolution; a learned scale attention fuses the two. What changes against DAFormer:

- **student losses**: ``(1 − λ_d)·CE(fused) + λ_d·CE(detail crop)`` (λ_d = ``hr_loss_weight``,
  0.1) on the source, mixed and (MIC) masked images;
- **teacher pseudo-labels**: the teacher's inference form on the whole target crop (context
  branch on the whole crop, detail branch by overlapping sliding windows, fused), upsampled;
- **feature distance**: the student's context-scale features against the ImageNet network's
  on the same half-size image (``hrda_feature_distance``);
- **data** (configs, not code): larger crops, rare-class sampling's crop ratio 2.0, pseudo-label
  margins of the full target image (``data.target_valid_margins``) instead of row margins,
  sliding-window evaluation at full resolution.

See :mod:`duda.models.hrda` for the network and its unit-tested pieces.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from duda.config import ExperimentConfig
from duda.errors import ConfigError
from duda.methods.registry import register_method
from duda.methods.self_training import SelfTraining
from duda.models.hrda import MultiResSpec, hrda_feature_distance, hrda_losses
from duda.uda.losses import ce, weighted_ce


def _loss(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Source CE (no weights) or pixel-weighted CE, in float32, as the DAFormer steps."""
    return ce(logits.float(), labels) if weight is None else weighted_ce(logits.float(), labels, weight)


@register_method
class HRDA(SelfTraining):
    """DAFormer's self-training with HRDA's context and detail crops and scale attention."""

    name = "hrda"
    summary = (
        "HRDA: DAFormer self-training on multi-resolution networks (context + detail crop, scale attention)"
    )
    sections = ("uda", "hrda")

    @classmethod
    def multires(cls, cfg: ExperimentConfig) -> dict:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg.method.hrda).items()
        }

    @classmethod
    def multires_spec(cls, cfg: ExperimentConfig) -> MultiResSpec:
        """``method.hrda`` checked; an error names the key."""
        try:
            return MultiResSpec.from_dict(cls.multires(cfg))
        except ValueError as exc:
            message = str(exc)
            field = message.split(":", 1)[0].removeprefix("MultiResSpec.").split(" ")[0]
            error = ConfigError(f"method.hrda.{message.removeprefix('MultiResSpec.')}")
            error.key = f"method.hrda.{field}"
            raise error from None

    @classmethod
    def check_config(cls, cfg: ExperimentConfig) -> None:
        super().check_config(cfg)
        mr = cls.multires_spec(cfg)
        crop_h, crop_w = cfg.data.crop_size
        hr_h, hr_w = mr.hr_crop_size
        if hr_h > crop_h or hr_w > crop_w:
            error = ConfigError(
                f"method.hrda.hr_crop_size {list(mr.hr_crop_size)} exceeds data.crop_size "
                f"{list(cfg.data.crop_size)}: the detail crop lies inside the training crop"
            )
            error.key = "method.hrda.hr_crop_size"
            raise error
        step = round(4 / mr.lr_scale)  # the context grid (stride 4 at the lower scale)
        if crop_h % step or crop_w % step:
            error = ConfigError(
                f"data.crop_size {list(cfg.data.crop_size)}: HRDA needs sides divisible by {step} "
                f"(output stride 4 at context scale {mr.lr_scale})"
            )
            error.key = "data.crop_size"
            raise error

    def __init__(self, cfg: ExperimentConfig, num_classes: int, device: torch.device, **kwargs) -> None:
        super().__init__(cfg, num_classes, device, **kwargs)
        self.mr = self.multires_spec(cfg)

    def _box(self, img: torch.Tensor, gen: torch.Generator):
        return self.networks["student"].random_crop_box(img.shape[-2], img.shape[-1], gen)

    def source_loss(
        self, student: nn.Module, batch: dict, losses: dict, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        img, gt = batch["src_img"], batch["src_gt"]
        use_fd = "imnet" in self.networks
        with self.autocast():
            out = student(img, crop_box=self._box(img, gen), return_features=use_fd)
        loss, parts = hrda_losses(out, gt, None, self.mr, _loss)
        losses["src"] = loss.detach()
        if "hr" in parts:
            losses["src_hr"] = parts["hr"].detach()
        if use_fd:
            uda = self.uda  # (the ImageNet features in float32: the distance is a small difference)
            loss_fd = hrda_feature_distance(
                out._replace(features=tuple(f.float() for f in out.features)),
                img,
                gt,
                self.networks["imnet"].backbone,
                self.mr,
                weight=uda.fd_weight,
                thing_classes=uda.fd_thing_classes,
                min_ratio=uda.fd_min_ratio,
                num_classes=self.num_classes,
            )
            losses["fd"] = loss_fd.detach()
            loss = loss + loss_fd
        return loss, out.fused

    def forward_loss(
        self, net: nn.Module, img: torch.Tensor, lbl: torch.Tensor, wgt: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """HRDA's loss with a fresh detail crop; the fused logits."""
        with self.autocast():
            out = net(img, crop_box=self._box(img, gen))
        loss, _ = hrda_losses(out, lbl, wgt, self.mr, _loss)
        return loss, out.fused


@register_method
class MICHRDA(HRDA):
    """MIC on HRDA: masked image consistency with the HRDA loss (its own detail crop)."""

    name = "mic_hrda"
    summary = "MIC(HRDA): HRDA plus masked image consistency"
    masking = True

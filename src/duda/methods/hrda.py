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

See :mod:`duda.models.hrda` for the network and its unit-tested pieces; this module holds
what HRDA does with it in training: the loss composition (:func:`hrda_losses`), the feature
distance (:func:`hrda_feature_distance`) and the reference teacher's forward
(:func:`teacher_logits`).

Teacher pseudo-labels (reference ``DACS.forward_train`` → ``ema_model.generate_pseudo_label``
→ ``HRDAEncoderDecoder.encode_decode``): the EMA teacher runs the *inference* form over the whole
training crop (1024×1024 target image): LR context = the crop at half resolution, HR detail by an
overlapping sliding window of ``hr_crop_size`` (512, stride 256: 3×3 windows, all windows of the
batch through the network as one batch), attention over the whole crop, no masking; the fused
logits are upsampled bilinearly to the crop size. The teacher is not in eval mode: mmseg puts the
whole UDA module in train mode and the reference only switches off Dropout and DropPath, so the
heads' BatchNorms use batch statistics (the project's ``make_ema_teacher`` / ``disable_dropout``
reproduce this). :func:`teacher_logits` is that forward.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from duda.config import ExperimentConfig
from duda.errors import ConfigError
from duda.methods.registry import register_method
from duda.methods.self_training import SelfTraining
from duda.models.hrda import HRDAModel, HRDAOutput, MultiResSpec, blur_down_up, crop, resize_by
from duda.uda.feature_distance import THING_CLASSES, feature_distance_loss, thing_cell_mask
from duda.uda.losses import ce, weighted_ce

# ---------------------------------------------------------------------------------------------
# Losses, feature distance, teacher


def hrda_losses(
    out: HRDAOutput,
    labels: torch.Tensor,
    weight: torch.Tensor | None,
    spec: MultiResSpec,
    loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor] = weighted_ce,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The reference's loss composition (``HRDAHead.losses``): total and its weighted parts.

    ``labels`` (B×H×W) and ``weight`` (B×H×W, B×1×H×W or None) are at input resolution;
    ``loss_fn(logits, labels, weight)`` upsamples the logits to the labels (bilinear) and averages
    a pixel-weighted CE. With ``λ_hr = hr_loss_weight`` and ``λ_lr = lr_loss_weight``:

        total = (1 − λ_hr − λ_lr)·L(fused, y) + λ_lr·L((1 − a)·LR, y) + λ_hr·L(HR, crop(y))

    where ``crop(y)`` (and the weight) is the detail crop ``out.box``, and the LR term is left out
    when ``λ_lr = 0`` (likewise HR). Parts: ``"fused"``, ``"lr"``, ``"hr"`` — the weighted terms
    (what the reference logs as ``loss_seg``, ``lr.loss_seg``, ``hr.loss_seg``).
    """
    if labels.dim() != 3:
        raise ValueError(f"hrda_losses: labels must be B×H×W, got shape {tuple(labels.shape)}")
    if weight is not None and weight.dim() == 4:
        weight = weight[:, 0]
    fused = loss_fn(out.fused, labels, weight)
    parts = {"fused": fused * (1 - spec.lr_loss_weight - spec.hr_loss_weight)}
    if spec.lr_loss_weight > 0:
        parts["lr"] = spec.lr_loss_weight * loss_fn(out.lr, labels, weight)
    if spec.hr_loss_weight > 0:
        hr_weight = crop(weight, out.box) if weight is not None else None
        parts["hr"] = spec.hr_loss_weight * loss_fn(out.hr, crop(labels, out.box), hr_weight)
    total = sum(parts.values(), torch.zeros((), device=fused.device, dtype=fused.dtype))
    return total, parts


def imnet_features_for_distance(
    imnet_backbone: nn.Module, img: torch.Tensor, spec: MultiResSpec, box: Sequence[int]
) -> list[torch.Tensor]:
    """Last-stage features of the frozen ImageNet backbone, matching :func:`hrda_feature_distance`.

    ``feature_scale`` a number (the LR scale, 0.5): one map, the whole image resized by it.
    ``"all"``: one per scale — LR: the whole resized image; HR: the image at the HR scale (blurred
    if ``blur_hr_crop``) cropped to the training ``box``. Computed without gradients; the caller
    keeps the backbone in eval mode (the reference calls ``.eval()`` before each use).
    """
    with torch.no_grad():
        if spec.feature_scale != "all":
            return [imnet_backbone(resize_by(img, float(spec.feature_scale)))[-1].detach()]
        out = []
        for i, s in enumerate(spec.scales):
            scaled = blur_down_up(img) if (s == 1 and spec.blur_hr_crop) else resize_by(img, s)
            if i >= 1:
                scaled = crop(scaled, box)
            out.append(imnet_backbone(scaled)[-1].detach())
        return out


def hrda_feature_distance(
    out: HRDAOutput,
    img: torch.Tensor,
    labels: torch.Tensor,
    imnet_backbone: nn.Module,
    spec: MultiResSpec,
    *,
    weight: float = 0.005,
    thing_classes: Sequence[int] = THING_CLASSES,
    min_ratio: float = 0.75,
    num_classes: int = 19,
    ignore_index: int = 255,
) -> torch.Tensor:
    """HRDA's ImageNet feature distance (reference ``DACS.calc_feat_dist``) on a source batch.

    ``out`` is the student's training-form output with ``return_features=True`` on the source
    image ``img`` (B×3×H×W) with labels ``labels`` (B×H×W).

    - ``feature_scale`` = the LR scale (published configs, 0.5): the student's LR-context
      last-stage features (whole image at half resolution, e.g. 512² → 16²) against the ImageNet
      backbone's on the same resized image; the thing-class mask pools the FULL-resolution labels
      to that grid (cell = H / h, 64 for 1024 → 16). One term.
    - ``"all"``: the LR term as above plus an HR term: the detail crop's features against the
      ImageNet backbone's on the same crop, with the labels cropped to ``out.box`` before pooling
      (cell = crop / h). The terms are summed (not averaged).

    Each term is ``weight ·`` mean over masked cells of ‖F − F_imnet‖₂ (``feature_distance_loss``;
    an empty mask gives 0 where the reference gives NaN).
    """
    if out.features is None:
        raise ValueError(
            "hrda_feature_distance: the output has no features; run the model with return_features=True"
        )
    imnet = imnet_features_for_distance(imnet_backbone, img, spec, out.box)
    student = [out.features[0]] if spec.feature_scale != "all" else list(out.features)
    total = None
    for i, (feat, feat_imnet) in enumerate(zip(student, imnet, strict=True)):
        gt = crop(labels, out.box) if i >= 1 else labels
        mask = thing_cell_mask(
            gt, tuple(feat.shape[-2:]), thing_classes, min_ratio, ignore_index, num_classes
        )
        term = feature_distance_loss(feat, feat_imnet, mask, weight)
        total = term if total is None else total + term
    assert total is not None
    return total


def teacher_logits(model: HRDAModel, img: torch.Tensor) -> torch.Tensor:
    """The reference teacher's logits for pseudo-labels: the inference form over the whole
    (training-crop) image, upsampled bilinearly to the image size; no gradients.

    The model's mode is the caller's (the reference: train mode with Dropout/DropPath off).
    """
    with torch.no_grad():
        logits = model(img)
        return F.interpolate(logits, size=tuple(img.shape[-2:]), mode="bilinear", align_corners=False)


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

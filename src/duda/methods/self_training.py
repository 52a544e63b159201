"""The DAFormer family's shared machinery: EMA self-training on one student.

:class:`SelfTraining` owns a student, its EMA teacher and (with feature distance) a frozen
ImageNet copy, and one step of method.md Part B:

1. EMA update of the teacher from the student (step 0: the teacher is the student's copy);
2. source CE (+ ImageNet feature distance on thing classes), backward;
3. teacher pseudo-labels on the un-augmented target crop, confidence weight q, ignore margins;
4. ClassMix of source into target, strong augmentation, pixel-weighted CE, backward;
5. with ``masking`` (MIC): the masked target image against the same pseudo-labels, backward.

Subclasses change what a forward and its loss are (HRDA: a context and a detail crop) by
overriding :meth:`SelfTraining.source_loss`, :meth:`SelfTraining.forward_loss` and
:meth:`SelfTraining.teacher_logits`; :meth:`SelfTraining.adapt_step` returns the step's
images and labels so that DUDA feeds the very same ones to its small student.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from duda.config import ExperimentConfig, ModelConfig
from duda.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from duda.methods.base import Method, NetworkSpec, StepContext
from duda.methods.sections import UDAConfig
from duda.uda.classmix import classmix_masks, mix
from duda.uda.ema import ema_alpha, ema_update, make_ema_teacher
from duda.uda.feature_distance import feature_distance_loss, thing_cell_mask
from duda.uda.losses import ce, weighted_ce
from duda.uda.masking import apply_mask, block_mask
from duda.uda.pseudo_label import ignore_rows_mask, pseudo_label
from duda.uda.strong_aug import StrongAugConfig, strong_transform

MEAN = tuple(float(v) for v in IMAGENET_MEAN)
STD = tuple(float(v) for v in IMAGENET_STD)


# --------------------------------------------------------------------------- pure pieces
def strong_aug_config(cfg: UDAConfig) -> StrongAugConfig:
    return StrongAugConfig(
        color_jitter_p=cfg.color_jitter_p,
        color_jitter_strength=cfg.color_jitter_strength,
        blur=cfg.blur_p > 0,
        blur_p=cfg.blur_p,
    )


def probs_at(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Softmax of logits upsampled (bilinear) to ``size``, in float32."""
    logits = F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)
    return logits.softmax(dim=1)


def pseudo_labels(probs: torch.Tensor, batch: dict, cfg: UDAConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard labels and pixel weights from (fused) teacher probabilities, with ignore margins."""
    if cfg.pseudo_weighting == "threshold":
        labels, weight = pseudo_label(probs, cfg.pseudo_threshold, per_image=cfg.pseudo_weight_per_image)
    else:  # threshold-free: q = mean max-probability (per batch, or per image)
        conf, labels = probs.max(dim=1)
        dims = (1, 2) if cfg.pseudo_weight_per_image else (0, 1, 2)
        weight = conf.mean(dim=dims, keepdim=True).expand_as(conf).contiguous()
    if cfg.ignore_top or cfg.ignore_bottom:
        rows = ignore_rows_mask(
            weight.shape, top=cfg.ignore_top, bottom=cfg.ignore_bottom, device=weight.device
        )
        weight = weight * rows.to(weight)
    if "tgt_valid" in batch:
        weight = weight * batch["tgt_valid"].to(weight)
    return labels, weight


def mixed_batch(
    batch: dict, labels: torch.Tensor, weight: torch.Tensor, cfg: UDAConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ClassMix source into target and strongly augment the result.

    Returns image, label, pixel weight and the mix mask (1 = source pixel).
    """
    src_img, src_gt, tgt_img = batch["src_img"], batch["src_gt"], batch["tgt_img"]
    if cfg.mix == "class":
        mask = classmix_masks(src_gt, gen).to(tgt_img.dtype)
    else:
        mask = torch.zeros_like(src_gt, dtype=tgt_img.dtype).unsqueeze(1)
    img = mix(mask, src_img, tgt_img)
    m = mask[:, 0]
    lbl = mix(m, src_gt, labels).long()
    wgt = mix(m, torch.ones_like(weight), weight)
    # DACS calls its strong_transform once per mixed image: own jitter order and blur sigma each
    img = strong_transform(img, MEAN, STD, gen, strong_aug_config(cfg), per_image=True)
    return img, lbl, wgt, m


def masked_batch(
    batch: dict, labels: torch.Tensor, weight: torch.Tensor, cfg: UDAConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """MIC's masked images with their labels and weights (modes of method.md Part B.8)."""
    if cfg.mask_mode == "separatetrgaug":
        # MIC calls strong_transform once on the whole batch: one jitter order and one sigma
        img = strong_transform(batch["tgt_img"], MEAN, STD, gen, strong_aug_config(cfg), per_image=False)
        lbl, wgt = labels, weight
    else:  # "separate": the FIRST source and the FIRST target image only, no augmentation
        img = torch.cat([batch["src_img"][:1], batch["tgt_img"][:1]])
        lbl = torch.cat([batch["src_gt"][:1], labels[:1]])
        wgt = torch.cat([torch.ones_like(weight[:1]), weight[:1]])
    b, _, h, w = img.shape
    mask = block_mask(b, h, w, gen, block_size=cfg.mask_block_size, ratio=cfg.mask_ratio, device=img.device)
    return apply_mask(img, mask.to(img)), lbl, wgt


def make_frozen(model: nn.Module) -> nn.Module:
    """A frozen network (no gradients, eval mode): ImageNet features, fixed teachers."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def feature_distance(
    feats: torch.Tensor, feats_imnet: torch.Tensor, src_gt: torch.Tensor, uda: UDAConfig, num_classes: int
) -> torch.Tensor:
    """DAFormer's ImageNet feature distance on the feature cells dominated by thing classes."""
    cells = thing_cell_mask(
        src_gt,
        feats.shape[-2:],
        thing_classes=uda.fd_thing_classes,
        min_ratio=uda.fd_min_ratio,
        num_classes=num_classes,
    )
    return feature_distance_loss(feats.float(), feats_imnet.float(), cells, weight=uda.fd_weight)


# --------------------------------------------------------------------------- the step's outputs
@dataclass
class AdaptImages:
    """What one self-training step used, for a second student to learn from the same images."""

    teacher_logits: torch.Tensor  # the teacher's logits on the clean target crop
    labels: torch.Tensor  # pseudo-labels (B×H×W)
    weight: torch.Tensor  # their pixel weights
    mix_img: torch.Tensor
    mix_lbl: torch.Tensor
    mix_w: torch.Tensor
    mix_logits: torch.Tensor  # the student's logits on the mixed images
    src_logits: torch.Tensor
    masked: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None  # MIC image, labels, weights
    mix_mask: torch.Tensor | None = None  # B×H×W, 1 where the mixed image shows the source


# --------------------------------------------------------------------------- the base class
class SelfTraining(Method):
    """A student, its EMA teacher and the ImageNet copy, trained as in DAFormer; ``masking``
    adds MIC's masked image consistency. Subclasses: DAFormer, MIC, HRDA, MIC(HRDA)."""

    sections: ClassVar[tuple[str, ...]] = ("uda",)
    eval_networks: ClassVar[tuple[str, ...]] = ("student", "teacher")
    #: MIC's masked image consistency (``method.uda.mask_*``)
    masking: ClassVar[bool] = False

    @classmethod
    def multires(cls, cfg: ExperimentConfig) -> dict | None:
        """The multi-resolution wrapper of the networks (HRDA), None for plain networks."""
        return None

    @classmethod
    def network_specs(
        cls, cfg: ExperimentConfig, model: ModelConfig | None = None, span: tuple[int, int] | None = None
    ) -> dict[str, NetworkSpec]:
        """``student`` (trained over ``span``, default the whole run), ``teacher`` (its EMA) and,
        with feature distance, ``imnet`` (frozen); all of ``model`` (default ``cfg.model``)."""
        model = model or cfg.model
        multires = cls.multires(cfg)
        specs = {
            "student": NetworkSpec(model, "train", span or (0, cfg.train.iters), multires=multires),
            "teacher": NetworkSpec(model, "ema", source="student", multires=multires),
        }
        if cfg.method.uda.fd_weight > 0:
            specs["imnet"] = NetworkSpec(model, "frozen", multires=multires)
        return specs

    def __init__(
        self,
        cfg: ExperimentConfig,
        num_classes: int,
        device: torch.device,
        model: ModelConfig | None = None,
        pretrained: bool = True,
        init_student: Callable[[nn.Module], dict | None] | None = None,
    ) -> None:
        """``model`` / ``pretrained``: the student's config and whether it starts from ImageNet
        weights; ``init_student(student)`` loads trained weights into it before the teacher is
        copied, returning the teacher's own weights or None (DUDA's ``large_init``)."""
        super().__init__(cfg, num_classes, device)
        self.uda = cfg.method.uda
        model = model or cfg.model
        multires = self.multires(cfg)
        student = self.build(model, pretrained, multires)
        teacher_state = init_student(student) if init_student is not None else None
        self.networks["student"] = student
        self.networks["teacher"] = make_ema_teacher(student)
        if teacher_state is not None:
            self.networks["teacher"].load_state_dict(teacher_state)
        if self.uda.fd_weight > 0:
            self.networks["imnet"] = make_frozen(self.build(model, multires=multires))

    # ------------------------------------------------------------------ the step
    def train_step(self, batch: dict, ctx: StepContext) -> dict:
        losses: dict = {}
        out = self.adapt_step(batch, ctx, losses)
        losses["pseudo_weight"] = out.weight.mean().detach()
        visuals = {}
        if ctx.want_visuals:
            visuals = {
                "src_img": batch["src_img"],
                "src_gt": batch["src_gt"],
                "tgt_img": batch["tgt_img"],
                "pseudo_label": out.labels,
                "pseudo_weight": out.weight,
                "mix_img": out.mix_img,
                "mix_label": out.mix_lbl,
                "mix_pred": out.mix_logits.detach().argmax(1),
                "src_pred": out.src_logits.detach().argmax(1),
            }
        return {"losses": losses, "visuals": visuals}

    def adapt_step(self, batch: dict, ctx: StepContext, losses: dict) -> AdaptImages:
        """Steps 1–5 on ``student``; backward of every loss; the images used come back."""
        uda, gen = self.uda, ctx.generator
        student, teacher = self.net("student"), self.networks["teacher"]
        if ctx.step > 0:
            ema_update(teacher, self.networks["student"], ema_alpha(ctx.step, uda.alpha))

        src_loss, src_logits = self.source_loss(student, batch, losses, gen)
        src_loss.backward()

        t_logits, labels, weight = self.teacher_pseudo_labels(teacher, batch)
        mix_img, mix_lbl, mix_w, mix_mask = mixed_batch(batch, labels, weight, uda, gen)
        mix_logits = self.weighted_step(student, mix_img, mix_lbl, mix_w, losses, "mix", gen)

        masked = None
        if self.masking and uda.mask_weight > 0:
            masked = masked_batch(batch, labels, weight, uda, gen)
            self.weighted_step(student, *masked, losses, "mic", gen, scale=uda.mask_weight)
        return AdaptImages(
            t_logits, labels, weight, mix_img, mix_lbl, mix_w, mix_logits, src_logits, masked, mix_mask
        )

    # ------------------------------------------------------------------ overridable pieces
    def teacher_logits(self, teacher: nn.Module, img: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for pseudo-labels (no gradients)."""
        return teacher(img)

    def teacher_pseudo_labels(self, teacher: nn.Module, batch: dict) -> tuple[torch.Tensor, ...]:
        """One no-grad teacher forward on the clean target crop: logits, pseudo-labels, weights."""
        with torch.no_grad(), self.autocast():
            t_logits = self.teacher_logits(teacher, batch["tgt_img"])
        probs = probs_at(t_logits, batch["tgt_img"].shape[-2:])
        labels, weight = pseudo_labels(probs, batch, self.uda)
        return t_logits, labels, weight

    def source_loss(
        self, student: nn.Module, batch: dict, losses: dict, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Source CE and, when enabled, the ImageNet feature distance on thing-class cells."""
        use_fd = "imnet" in self.networks
        with self.autocast():
            if use_fd:
                logits, feats = student(batch["src_img"], return_features=True)
            else:
                logits = student(batch["src_img"])
        loss = ce(logits.float(), batch["src_gt"])
        losses["src"] = loss.detach()
        if use_fd:
            with torch.no_grad(), self.autocast():
                _, feats_im = self.networks["imnet"](batch["src_img"], return_features=True)
            loss_fd = feature_distance(feats, feats_im, batch["src_gt"], self.uda, self.num_classes)
            losses["fd"] = loss_fd.detach()
            loss = loss + loss_fd
        return loss, logits

    def weighted_step(
        self,
        net: nn.Module,
        img: torch.Tensor,
        lbl: torch.Tensor,
        wgt: torch.Tensor,
        losses: dict,
        key: str,
        gen: torch.Generator,
        scale: float = 1.0,
    ) -> torch.Tensor:
        """Forward ``img``, ``scale`` × its pixel-weighted loss against ``lbl``, backward; logs
        ``losses[key]``; returns the logits."""
        loss, logits = self.forward_loss(net, img, lbl, wgt, gen)
        loss = scale * loss
        loss.backward()
        losses[key] = loss.detach()
        return logits

    def forward_loss(
        self, net: nn.Module, img: torch.Tensor, lbl: torch.Tensor, wgt: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A student's pixel-weighted CE on ``img`` and its logits."""
        with self.autocast():
            logits = net(img)
        return weighted_ce(logits.float(), lbl, wgt), logits

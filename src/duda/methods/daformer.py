"""DAFormer and MIC: EMA self-training with ClassMix, strong augmentation, feature distance,
and (MIC) masked image consistency. One step follows method.md Part B exactly:

1. EMA update of the teacher from the student (step 0: the teacher is the student's copy);
2. source CE (+ ImageNet feature distance on thing classes), backward;
3. teacher pseudo-labels on the un-augmented target crop, confidence weight q, ignore margins;
4. ClassMix of source into target, strong augmentation, pixel-weighted CE, backward;
5. (MIC) masked target image against the same pseudo-labels, backward.

The target-side pieces (``pseudo_labels``, ``mixed_batch``, ``masked_batch``) are plain
functions so that DUDA feeds the very same images to its small student.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from duda.config import UDAConfig
from duda.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from duda.methods.base import Method, StepContext, TrainSpan
from duda.uda.classmix import classmix_masks, mix
from duda.uda.ema import ema_alpha, ema_update, make_ema_teacher
from duda.uda.feature_distance import feature_distance_loss, thing_cell_mask
from duda.uda.losses import ce, weighted_ce
from duda.uda.masking import apply_mask, block_mask
from duda.uda.pseudo_label import ignore_rows_mask, pseudo_label
from duda.uda.strong_aug import StrongAugConfig, strong_transform

MEAN = tuple(float(v) for v in IMAGENET_MEAN)
STD = tuple(float(v) for v in IMAGENET_STD)


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
        weight = weight * ignore_rows_mask(weight.shape, top=cfg.ignore_top, bottom=cfg.ignore_bottom).to(
            weight
        )
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


class DAFormer(Method):
    """DAFormer (``mic=False``) and MIC (``mic=True``) on one student and its EMA teacher."""

    eval_networks = ("student", "teacher")

    def __init__(self, cfg, num_classes: int, device: torch.device, mic: bool = False) -> None:
        super().__init__(cfg, num_classes, device)
        self.uda = cfg.method.uda
        self.mic = mic
        student = self.build(cfg.model)
        self.networks["student"] = student
        self.networks["teacher"] = make_ema_teacher(student)
        if self.uda.fd_weight > 0:
            self.networks["imnet"] = make_frozen(self.build(cfg.model))

    def spans(self) -> dict[str, TrainSpan]:
        return {"student": TrainSpan(self.cfg.model, 0, self.cfg.train.iters)}

    def train_step(self, batch: dict, ctx: StepContext) -> dict:
        uda, gen = self.uda, ctx.generator
        student, teacher, raw_student = (
            self.net("student"),
            self.networks["teacher"],
            self.networks["student"],
        )
        if ctx.step > 0:
            ema_update(teacher, raw_student, ema_alpha(ctx.step, uda.alpha))
        losses = {}

        # 1. source supervision (+ ImageNet feature distance)
        src_loss, src_logits = source_losses(self, student, "imnet", batch, losses, feature_distance=True)
        src_loss.backward()

        # 2. pseudo-labels from the EMA teacher on the clean target crop
        _, labels, weight = teacher_pseudo_labels(self, teacher, batch)

        # 3. ClassMix + strong augmentation
        mix_img, mix_lbl, mix_w, mix_mask = mixed_batch(batch, labels, weight, uda, gen)
        mix_logits = weighted_step(self, student, mix_img, mix_lbl, mix_w, losses, "mix")

        # 4. MIC masked image consistency
        if self.mic and uda.mask_weight > 0:
            m_img, m_lbl, m_w = masked_batch(batch, labels, weight, uda, gen)
            weighted_step(self, student, m_img, m_lbl, m_w, losses, "mic", scale=uda.mask_weight)

        losses["pseudo_weight"] = weight.mean().detach()
        visuals = {}
        if ctx.want_visuals:
            visuals = {
                "src_img": batch["src_img"],
                "src_gt": batch["src_gt"],
                "tgt_img": batch["tgt_img"],
                "pseudo_label": labels,
                "pseudo_weight": weight,
                "mix_img": mix_img,
                "mix_label": mix_lbl,
                "mix_pred": mix_logits.detach().argmax(1),
                "src_pred": src_logits.detach().argmax(1),
            }
        return {"losses": losses, "visuals": visuals}


def teacher_pseudo_labels(
    method: Method, teacher, batch: dict
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One no-grad teacher forward on the clean target crop: logits, pseudo-labels, weights."""
    with torch.no_grad(), method.autocast():
        t_logits = teacher(batch["tgt_img"])
    probs = probs_at(t_logits, batch["tgt_img"].shape[-2:])
    labels, weight = pseudo_labels(probs, batch, method.cfg.method.uda)
    return t_logits, labels, weight


def weighted_step(
    method: Method,
    net,
    img: torch.Tensor,
    lbl: torch.Tensor,
    wgt: torch.Tensor,
    losses: dict,
    key: str,
    scale: float = 1.0,
) -> torch.Tensor:
    """Forward ``img``, ``scale`` × pixel-weighted CE against ``lbl``, backward; logs ``losses[key]``."""
    with method.autocast():
        logits = net(img)
    loss = scale * weighted_ce(logits.float(), lbl, wgt)
    loss.backward()
    losses[key] = loss.detach()
    return logits


def make_frozen(model: torch.nn.Module) -> torch.nn.Module:
    """A frozen network (no gradients, eval mode): ImageNet features, fixed teachers."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def source_losses(
    method: Method, student, imnet_name: str, batch: dict, losses: dict, feature_distance: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Source CE and, when enabled, the ImageNet feature distance on thing-class cells."""
    uda = method.cfg.method.uda
    use_fd = feature_distance and uda.fd_weight > 0 and imnet_name in method.networks
    with method.autocast():
        if use_fd:
            logits, feats = student(batch["src_img"], return_features=True)
        else:
            logits = student(batch["src_img"])
    loss = ce(logits.float(), batch["src_gt"])
    losses["src"] = loss.detach()
    if use_fd:
        with torch.no_grad(), method.autocast():
            _, feats_im = method.networks[imnet_name](batch["src_img"], return_features=True)
        cells = thing_cell_mask(
            batch["src_gt"],
            feats.shape[-2:],
            thing_classes=uda.fd_thing_classes,
            min_ratio=uda.fd_min_ratio,
            num_classes=method.num_classes,
        )
        loss_fd = feature_distance_loss(feats.float(), feats_im.float(), cells, weight=uda.fd_weight)
        losses["fd"] = loss_fd.detach()
        loss = loss + loss_fd
    return loss, logits

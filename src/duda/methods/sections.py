"""The config sections of duda's own methods: ``method.base``, ``method.uda``, ``method.duda``
and ``method.hrda``.

A method brings its own config: its typed sections are registered on
:class:`duda.config.MethodConfig` (:func:`register_section`), where they are read from YAML,
checked, written and shown (``duda config show``) like the sections of the config layer, and the
method declares the ones it reads in its ``sections`` attribute (checked on registration). A method
defined outside duda may register a section of its own the same way, or read the free
``method.options`` section into its ``options_class``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from duda.config import MethodConfig, ModelConfig

#: the section of the multi-resolution (HRDA) networks' settings, and what ``duda plan`` and the
#: checkpoint check name in it: the detail crop; the override that drops the ImageNet feature
#: distance (where a method declares an ``imnet`` network)
MULTIRES_SECTION = "method.hrda"
DETAIL_CROP_KEY = f"{MULTIRES_SECTION}.hr_crop_size"
FEATURE_DISTANCE_OFF = "method.uda.fd_weight=0"


def register_section(
    name: str, cls: Any, default_factory: Callable[[], Any] | None = None, comment: str = "", owner: str = ""
) -> None:
    """Add the key ``method.NAME`` (a dataclass ``cls``, or any annotation with a
    ``default_factory``) to every experiment config; ``comment`` is its meaning in ``duda config show``."""
    factory = default_factory if default_factory is not None else cls
    MethodConfig.extend(name, cls, factory, comment=comment, owner=owner or __name__)


def section_names() -> list[str]:
    """The registered sections of the ``method`` config (besides ``name`` and ``options``)."""
    return list(MethodConfig.extensions())


@dataclass
class UDAConfig:
    """Switches of the EMA self-training methods (DAFormer, MIC; also DUDA's base)."""

    alpha: float = 0.999  # EMA factor; alpha_t = min(1 - 1/(t+1), alpha)
    pseudo_threshold: float = 0.968  # confidence for the pseudo-label weight q
    pseudo_weight_per_image: bool = False  # q per image (reference: one scalar per batch)
    # how q is computed: "threshold" (reference) or "confidence" = mean max-probability, which
    # needs no threshold (for teachers trained from scratch, whose confidence rarely reaches 0.968)
    pseudo_weighting: Literal["threshold", "confidence"] = "threshold"
    ignore_top: int = 15  # DAFormer: pseudo-label weight 0 in the top rows of the crop
    ignore_bottom: int = 120  # ... and the bottom rows (Cityscapes ego car); 0 to disable
    mix: Literal["class", "none"] = "class"  # ClassMix of source into target
    color_jitter_p: float = 0.8  # share of iterations with colour jitter
    color_jitter_strength: float = 0.2  # brightness, contrast, saturation, hue
    blur_p: float = 0.5  # share of iterations with Gaussian blur
    fd_weight: float = 0.005  # ImageNet feature distance; 0 disables
    fd_thing_classes: tuple[int, ...] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
    fd_min_ratio: float = 0.75  # a cell counts if its thing class covers this share
    # MIC (masked image consistency); used when method.name is mic or duda with base mic
    mask_block_size: int = 32  # px per mask block (64 for 1024 crops)
    mask_ratio: float = 0.7  # share of blocks zeroed
    mask_weight: float = 1.0  # loss weight of the masked-image CE
    mask_mode: Literal["separatetrgaug", "separate"] = "separatetrgaug"


@dataclass
class HRDAConfig:
    """HRDA's multi-resolution networks (methods hrda, mic_hrda, and duda with such a base);
    defaults = the published GTA→Cityscapes HRDA config (1024×1024 training crops)."""

    scales: tuple[float, float] = (0.5, 1.0)  # (context, detail) scale of the training crop
    hr_crop_size: tuple[int, int] = (512, 512)  # (H, W) detail crop inside the crop; HR window at test
    crop_coord_divisible: int = 8  # detail-crop offsets are multiples of this (stride 4 x ratio 2)
    hr_slide_inference: bool = True  # test: the detail branch slides hr_crop_size windows
    hr_slide_overlapping: bool = True  # ... with a stride of half the window
    attention_classwise: bool = True  # one scale-attention map per class (else one for all)
    hr_loss_weight: float = 0.1  # weight of the detail-crop loss; the fused loss gets 1 - hr - lr
    lr_loss_weight: float = 0.0  # weight of the context loss
    fixed_attention: float | None = None  # a constant attention instead of the learned head
    feature_scale: float | Literal["all"] = 0.5  # ImageNet feature distance on the context scale
    blur_hr_crop: bool = False  # ablation: the detail branch sees a blurred (down-up) crop
    attention_channels: int | None = None  # width of the attention head; null = the head's width


@dataclass
class TeacherSpec:
    checkpoint: str  # a training checkpoint (.pt), a deploy folder or a published mmseg latest.pth
    network: str = "teacher"  # which network in the checkpoint (mmseg: teacher = ema_model.*)
    weight: float = 1.0  # weight in the fused probability


@dataclass
class DUDAConfig:
    """DUDA (method.md Part C)."""

    large: ModelConfig = field(default_factory=ModelConfig)  # T and L architecture
    # start L and T from trained weights instead of large.pretrained (ImageNet backbone only):
    # - a published DAFormer / MIC (mmseg) latest.pth, or a folder holding one: L <- its model.*
    #   network (the one the reference evaluates); T <- its ema_model.* when the file has one,
    #   else T = a copy of L. HRDA / MIC(HRDA) files fit an HRDA large (method.base hrda|mic_hrda).
    # - a duda deploy folder, training checkpoint or run folder: L <- its shipped network, T = L.
    # The weights must fit `large` (name, arch, classes; checked, the error names both). The EMA
    # schedule still starts at step 0, so T follows L closely in the first steps. null = off.
    large_init: str | None = None
    stage1_iters: int = 40000  # pre-adaptation; stage 2 lasts train.iters - stage1_iters
    distill: Literal["linear", "sigmoid", "constant"] = "linear"  # gradual distillation lambda(t)
    distill_ramp: float = 0.5  # lambda reaches 1 after this share of stage 1
    finetune_mix: bool = True  # stage 2 trains S on ClassMix images labelled by the teachers
    inconsistency: bool = True  # stage 2 per-class weights 1 + gamma * I'_c
    gamma: float = 1.0
    inconsistency_refresh: int = 0  # recompute every K iterations of stage 2; 0 = once
    inconsistency_images: int = 0  # target images used to compute I_c; 0 = the whole set
    teachers: list[TeacherSpec] = field(default_factory=list)  # extra frozen teachers (multi-teacher)
    stage1_teacher_weight: float = 1.0  # weight of the stage-1 teacher T in the fusion; 0 = drop it
    # project defaults (docs/method.md 7, docs/ablation.md); the paper's DUDA: kd_weight 0,
    # stage2_lr_restart 0
    kd_weight: float = 1.0  # soft KD (temperature-scaled KL, T -> S on target); 0 = off
    kd_temperature: float = 1.0
    kd_stages: Literal["both", "stage2"] = "stage2"  # where soft KD applies (stage 1: times lambda)
    # stage 2 (project options; the paper's stage 2 is: hard fused labels, the same source weight,
    # S's single poly schedule running on across the stage boundary)
    stage2_targets: Literal["hard", "soft"] = "hard"  # ClassMix target pixels: argmax or fused probs
    stage1_targets: Literal["hard", "soft"] = "hard"  # stage-1 mixed target pixels: argmax or probs
    stage2_source_weight: float = 1.0  # weight of S's source CE in stage 2
    # 0: S's learning rate follows one warm-up + poly schedule over all train.iters; > 0: it
    # restarts at stage 2 at this multiple of optim.lr and decays (poly) to 0 at the end
    stage2_lr_restart: float = 1.0
    # S's input scale: S resizes every image it is given by this factor first (in training, in
    # evaluation and as shipped), e.g. 0.5 for a single-resolution small student under a
    # multi-resolution (HRDA) teacher on 1024 crops; its logits are upsampled to the labels
    small_input_scale: float = 1.0


# the order of the keys in a resolved config (`duda config show`): name, base, uda, duda, hrda, options
MethodConfig.default_name = "daformer"
MethodConfig.describe(
    "name",
    "a registered method (`duda config methods`): source_only, daformer, mic, hrda, mic_hrda, duda, "
    "or one of your own (duda --import MODULE)",
)
register_section(
    "base", str, lambda: "daformer", "DUDA's base: the method L trains with (daformer, mic, hrda, mic_hrda)"
)
register_section("uda", UDAConfig)
register_section("duda", DUDAConfig)
register_section("hrda", HRDAConfig)

__all__ = [
    "DETAIL_CROP_KEY",
    "FEATURE_DISTANCE_OFF",
    "MULTIRES_SECTION",
    "DUDAConfig",
    "HRDAConfig",
    "TeacherSpec",
    "UDAConfig",
    "register_section",
    "section_names",
]

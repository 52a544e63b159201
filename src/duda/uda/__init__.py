"""UDA building blocks: small, pure functions the method steps compose (method.md Parts B, C).

Every random choice takes an explicit ``torch.Generator`` so a run is reproducible and resumable.
"""

from ._checks import UdaInputError
from .classmix import classmix_masks, mix, pick_half
from .distill import distill_weight, ramp_progress
from .ema import copy_parameters, disable_dropout, ema_alpha, ema_step, ema_update, make_ema_teacher
from .feature_distance import THING_CLASSES, downscale_label_ratio, feature_distance_loss, thing_cell_mask
from .fusion import fuse_probs, fuse_teacher_logits, normalised_weights
from .inconsistency import (
    InconsistencyMeter,
    InconsistencyResult,
    absent_classes,
    class_confusion_counts,
    inconsistency,
    normalised_inconsistency,
    pixel_weights,
    rank_correlation,
)
from .losses import ce, kd_kl, pixel_ce, resize_logits, soft_ce, weighted_ce
from .masking import apply_mask, block_mask
from .pseudo_label import ignore_rows_mask, pseudo_label
from .strong_aug import (
    StrongAugConfig,
    blur_kernel_size,
    color_jitter,
    denormalise,
    gaussian_blur,
    jitter_unit_image,
    renormalise,
    strong_transform,
)

__all__ = [
    "THING_CLASSES",
    "InconsistencyMeter",
    "InconsistencyResult",
    "StrongAugConfig",
    "UdaInputError",
    "absent_classes",
    "apply_mask",
    "block_mask",
    "blur_kernel_size",
    "ce",
    "class_confusion_counts",
    "classmix_masks",
    "color_jitter",
    "copy_parameters",
    "denormalise",
    "disable_dropout",
    "distill_weight",
    "downscale_label_ratio",
    "ema_alpha",
    "ema_step",
    "ema_update",
    "feature_distance_loss",
    "fuse_probs",
    "fuse_teacher_logits",
    "gaussian_blur",
    "ignore_rows_mask",
    "inconsistency",
    "jitter_unit_image",
    "kd_kl",
    "soft_ce",
    "make_ema_teacher",
    "mix",
    "normalised_inconsistency",
    "normalised_weights",
    "pick_half",
    "pixel_ce",
    "pixel_weights",
    "pseudo_label",
    "ramp_progress",
    "rank_correlation",
    "renormalise",
    "resize_logits",
    "strong_transform",
    "thing_cell_mask",
    "weighted_ce",
]

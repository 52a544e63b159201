"""DAFormer and MIC: EMA self-training on one network (:mod:`duda.methods.self_training`)."""

from __future__ import annotations

from duda.methods.registry import register_method
from duda.methods.self_training import SelfTraining


@register_method
class DAFormer(SelfTraining):
    """EMA teacher, ClassMix, strong augmentation, rare-class sampling, ImageNet feature distance."""

    name = "daformer"
    summary = "DAFormer: EMA self-training with ClassMix, strong augmentation and feature distance"


@register_method
class MIC(DAFormer):
    """DAFormer plus masked image consistency (``method.uda.mask_*``)."""

    name = "mic"
    summary = "MIC: DAFormer plus masked image consistency"
    masking = True

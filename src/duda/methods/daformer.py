"""DAFormer and MIC: EMA self-training on one network (:mod:`duda.methods.self_training`)."""

from __future__ import annotations

from duda.methods.bench_cases import BenchCase
from duda.methods.registry import register_method
from duda.methods.self_training import SelfTraining

#: what the large-model-alone cases of `duda bench` train
LARGE_ALONE = "the large model alone"


@register_method
class DAFormer(SelfTraining):
    """EMA teacher, ClassMix, strong augmentation, rare-class sampling, ImageNet feature distance."""

    name = "daformer"
    summary = "DAFormer: EMA self-training with ClassMix, strong augmentation and feature distance"
    # `duda bench`: the one-network large-model step the other cases are compared with
    bench_cases = (
        BenchCase(
            "daformer", "daformer", rank=1, trains=LARGE_ALONE, label="large-model DAFormer",
            short_label="large DAFormer", reference=True, loader_demand=True,
        ),
    )  # fmt: skip


@register_method
class MIC(DAFormer):
    """DAFormer plus masked image consistency (``method.uda.mask_*``)."""

    name = "mic"
    summary = "MIC: DAFormer plus masked image consistency"
    masking = True
    bench_cases = (BenchCase("mic", "mic", rank=2, trains=LARGE_ALONE),)

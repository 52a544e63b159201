"""Deprecated: whole / sliding-window inference moved to :mod:`duda.inference.modes`; this alias
keeps ``from duda.evaluation.inference import infer`` working. Nothing inside duda imports it."""

from duda.inference.modes import infer, infer_slide, infer_whole, upsample_logits

__all__ = ["infer", "infer_slide", "infer_whole", "upsample_logits"]

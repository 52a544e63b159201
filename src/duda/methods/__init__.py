"""Training methods: one object per method owns its networks and computes one step."""

from __future__ import annotations

import torch

from duda.config import ExperimentConfig, ModelConfig
from duda.methods.base import Method, StepContext, TrainSpan


def build_method(cfg: ExperimentConfig, num_classes: int, device: torch.device) -> Method:
    name = cfg.method.name
    if name == "source_only":
        from duda.methods.source_only import SourceOnly

        return SourceOnly(cfg, num_classes, device)
    if name in ("daformer", "mic"):
        from duda.methods.daformer import DAFormer

        return DAFormer(cfg, num_classes, device, mic=name == "mic")
    if name == "duda":
        from duda.methods.duda import DUDA

        return DUDA(cfg, num_classes, device)
    raise ValueError(f"unknown method {name!r}")


def network_specs(cfg: ExperimentConfig) -> dict[str, ModelConfig]:
    """The networks a run of ``cfg`` holds, by name, with the config that builds each."""
    name = cfg.method.name
    if name == "source_only":
        return {"student": cfg.model}
    if name in ("daformer", "mic"):
        return {"student": cfg.model, "teacher": cfg.model, "imnet": cfg.model}
    large = cfg.method.duda.large
    return {"student": cfg.model, "large": large, "teacher": large, "imnet": large}


__all__ = ["Method", "StepContext", "TrainSpan", "build_method", "network_specs"]

"""Training methods: one registered class per method, owning its networks and computing a step.

See :mod:`duda.methods.base` for what a method declares and :mod:`duda.methods.registry` for
how a method defined outside duda is registered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from duda.methods.base import Method, NetworkSpec, StepContext, TrainSpan
from duda.methods.registry import import_method_modules, method_class, method_names, register_method

if TYPE_CHECKING:
    import torch

    from duda.config import ExperimentConfig


def build_method(cfg: ExperimentConfig, num_classes: int, device: torch.device) -> Method:
    """The method of ``cfg.method.name`` with its networks built on ``device``."""
    return method_class(cfg.method.name)(cfg, num_classes, device)


def network_specs(cfg: ExperimentConfig) -> dict[str, NetworkSpec]:
    """The networks a run of ``cfg`` holds, by name (:meth:`Method.network_specs`)."""
    return method_class(cfg.method.name).network_specs(cfg)


__all__ = [
    "Method",
    "NetworkSpec",
    "StepContext",
    "TrainSpan",
    "build_method",
    "import_method_modules",
    "method_class",
    "method_names",
    "network_specs",
    "register_method",
]

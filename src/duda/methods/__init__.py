"""Training methods: one registered class per method, owning its networks and computing a step.

See :mod:`duda.methods.base` for what a method declares, :mod:`duda.methods.registry` for
how a method defined outside duda is registered, :mod:`duda.methods.sections` for the config
sections the methods bring, and :mod:`duda.methods.experiment` for the config checks they
register. Importing this package registers both, so configs are built here
(:func:`config_from_dict`, :func:`load_config`), never with a method section or check missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from duda.methods.base import Method, NetworkSpec, StepContext, TrainSpan
from duda.methods.experiment import compose_config, config_from_dict, load_config, show_config
from duda.methods.registry import import_method_modules, method_class, method_names, register_method
from duda.methods.sections import register_section

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
    "compose_config",
    "config_from_dict",
    "import_method_modules",
    "load_config",
    "method_class",
    "method_names",
    "network_specs",
    "register_method",
    "register_section",
    "show_config",
]

"""Experiment configs with the methods' sections and checks: what ``duda.load_config`` is.

:mod:`duda.config` sits below the methods and the models, so it neither knows the methods'
sections nor checks a config against them. Importing this module (any ``duda.methods`` import
does) registers both (:func:`duda.config.register_config_check`):

1. the method's own checks (:meth:`duda.methods.Method.check_config`; an unknown ``method.name``
   is an error listing the registered ones);
2. the trained network is named (``model.name``), and every model section (``model`` and each
   :class:`~duda.config.ModelConfig` inside a method section, e.g. ``method.duda.large``) has
   ``arch`` fields its network knows and ``checkpointing`` only on a MiT backbone.

The functions of :mod:`duda.config` that build configs are re-exported here, so that a caller
above the methods imports them from here and never meets a config that was not checked.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from duda.config import (
    ExperimentConfig,
    ModelConfig,
    compose_config,
    config_from_dict,
    load_config,
    register_config_check,
    require_model,
    show_config,
)
from duda.errors import ConfigError
from duda.methods.registry import method_class
from duda.methods.sections import section_names
from duda.models.factory import recipe, resolve_arch


def check_method(cfg: ExperimentConfig, data: dict[str, Any]) -> None:
    """The method's own checks (:meth:`duda.methods.Method.check_config`)."""
    method_class(cfg.method.name).check_config(cfg)


def model_sections(cfg: ExperimentConfig) -> list[tuple[str, ModelConfig]]:
    """Every model section of ``cfg`` with its key: ``model``, then those inside the method's
    sections (``method.duda.large``), in the order they are shown."""
    out = [("model", cfg.model)]
    for name in section_names():
        section = getattr(cfg.method, name)
        if not dataclasses.is_dataclass(section):
            continue
        for f in dataclasses.fields(section):
            value = getattr(section, f.name)
            if isinstance(value, ModelConfig):
                out.append((f"method.{name}.{f.name}", value))
    return out


def check_models(cfg: ExperimentConfig, data: dict[str, Any]) -> None:
    """``model.name`` is given; ``arch`` and ``checkpointing`` of every model section fit its network."""
    require_model(data)
    for key, model_cfg in model_sections(cfg):
        if model_cfg.arch:  # checked against the model's architecture fields
            resolve_arch(model_cfg.name, model_cfg.arch, prefix=f"{key}.arch")
        if model_cfg.checkpointing:
            backbone = recipe(model_cfg.name).backbone
            if backbone != "mit":
                error = ConfigError(
                    f"{key}.checkpointing: activation checkpointing is for MiT encoders; model "
                    f"{model_cfg.name!r} has a {backbone} backbone"
                )
                error.key = f"{key}.checkpointing"
                raise error


register_config_check(check_method)
register_config_check(check_models)

__all__ = [
    "check_method",
    "check_models",
    "compose_config",
    "config_from_dict",
    "load_config",
    "model_sections",
    "show_config",
]

"""AdamW with DAFormer's parameter groups, and the warm-up + poly learning-rate schedule."""

from __future__ import annotations

import torch
from torch import nn

from duda.errors import ConfigError

_NORM_TYPES = (
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
)
_FAMILIES = ("mit", "resnet", "other")


def backbone_family(model: nn.Module) -> str:
    """``model.backbone.family`` (``"mit"`` for MiTBackbone, ``"resnet"`` for ResNetBackbone);
    ``"other"`` for a model whose backbone does not say."""
    family = getattr(getattr(model, "backbone", None), "family", "other")
    if family not in _FAMILIES:
        raise ConfigError(f"backbone family {family!r}: expected one of {', '.join(_FAMILIES)}")
    return family


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, head_lr_mult: float, family: str | None = None
) -> list[dict]:
    """DAFormer's parameter groups, as mmcv's DefaultOptimizerConstructor builds them.

    DAFormer's ``experiments.py`` sets ``paramwise_cfg.custom_keys`` to ``head: lr_mult 10`` for
    every model, plus ``pos_block`` and ``norm`` with ``decay_mult 0`` only when the backbone is a
    MiT. mmcv gives a parameter the first custom key contained in its name, longest key first
    (``pos_block``, then ``head``, then ``norm``), so:

    - decode head (``model.head``): ``lr * head_lr_mult`` and ``weight_decay`` for every
      parameter, its BatchNorms included (``head`` matches before ``norm``);
    - MiT backbone: no weight decay on normalisation layers and position embeddings;
    - any other backbone (ResNet, ``family="other"``): every parameter decays, BatchNorm too.

    ``family`` (``"mit"``, ``"resnet"``, ``"other"``) defaults to :func:`backbone_family`.
    Groups: ``backbone``, ``backbone_no_decay`` (MiT only), ``head``; empty ones are left out.
    """
    family = backbone_family(model) if family is None else family
    if family not in _FAMILIES:
        raise ConfigError(f"param_groups family={family!r}: expected one of {', '.join(_FAMILIES)}")
    head = getattr(model, "head", None)
    head_ids = {id(p) for p in head.parameters()} if head is not None else set()
    no_decay: set[int] = set()
    if family == "mit":
        for name, module in model.named_modules():
            if isinstance(module, _NORM_TYPES) or "pos" in name.split(".")[-1]:
                no_decay.update(id(p) for p in module.parameters(recurse=False))
        no_decay -= head_ids
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        groups.setdefault((id(p) in head_ids, id(p) in no_decay), []).append(p)
    out = []
    for (is_head, is_nd), params in sorted(groups.items()):
        mult = head_lr_mult if is_head else 1.0
        out.append(
            {
                "params": params,
                "lr": lr * mult,
                "lr_mult": mult,
                "weight_decay": 0.0 if is_nd else weight_decay,
                "name": f"{'head' if is_head else 'backbone'}{'_no_decay' if is_nd else ''}",
            }
        )
    return out


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float,
    head_lr_mult: float,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, lr, weight_decay, head_lr_mult), lr=lr, betas=betas)


def lr_factor(step: int, total: int, warmup_iters: int, warmup_ratio: float, power: float) -> float:
    """Multiplier of the base lr at ``step`` (0-based) of a schedule of ``total`` steps.

    Poly decay ``(1 - step/total)^power`` to 0, multiplied during warm-up by a factor rising
    linearly from ``warmup_ratio`` to 1 (mmcv's linear warm-up on top of poly, as DAFormer).
    """
    step = min(max(step, 0), total)
    factor = (1.0 - step / total) ** power
    if warmup_iters > 0 and step < warmup_iters:
        factor *= 1.0 - (1.0 - step / warmup_iters) * (1.0 - warmup_ratio)
    return factor


def span_lr_factor(span, step: int, optim) -> float:
    """The learning-rate multiplier of a trainable network's ``span`` (a TrainSpan: start, end,
    optional ``restart`` = (step, multiple)) at ``step``: warm-up + poly over [start, end), or from
    ``restart`` on a fresh poly decay (no warm-up) from ``multiple`` to 0 at ``end``."""
    restart = getattr(span, "restart", None)
    if restart is not None and step >= restart[0]:
        at, multiple = restart
        return multiple * lr_factor(step - at, span.end - at, 0, 1.0, optim.power)
    o = optim
    return lr_factor(step - span.start, span.end - span.start, o.warmup_iters, o.warmup_ratio, o.power)


def set_lr(optimizer: torch.optim.Optimizer, base_lr: float, factor: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = base_lr * group.get("lr_mult", 1.0) * factor

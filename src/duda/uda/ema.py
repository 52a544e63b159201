"""Mean-teacher EMA (DAFormer/MIC; method.md B.1): the teacher is an average of the student.

The caller owns the step counter: at step 0 ``ema_step`` copies the student into the teacher,
at every later step it averages with ``alpha_t = min(1 - 1/(t+1), alpha)``. Only parameters are
averaged; buffers (BN running statistics) are left as they are, as in the reference code.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ._checks import UdaInputError


def ema_alpha(step: int, alpha: float = 0.999) -> float:
    """EMA factor at ``step``: ``min(1 - 1/(step+1), alpha)`` — 0, 0.5, 0.667, … capped at ``alpha``."""
    if step < 0:
        raise UdaInputError(f"ema step: expected a step >= 0, got {step}")
    if not 0.0 <= alpha <= 1.0:
        raise UdaInputError(f"ema alpha: expected a value in [0, 1], got {alpha}")
    return min(1.0 - 1.0 / (step + 1), alpha)


def is_stochastic_depth(module: nn.Module) -> bool:
    """True for dropout layers and drop-path layers (any class whose name contains 'DropPath')."""
    return isinstance(module, nn.modules.dropout._DropoutNd) or "DropPath" in type(module).__name__


def disable_dropout(module: nn.Module) -> nn.Module:
    """Put every Dropout/DropPath sub-module of ``module`` in eval mode; the rest keeps its mode.

    ``module.train()`` switches them back on, so call this again after any ``.train()``
    (the reference does so before each teacher forward). Returns ``module``.
    """
    for sub in module.modules():
        if is_stochastic_depth(sub):
            sub.training = False
    return module


def make_ema_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` without gradients, in the student's mode but with dropout off."""
    teacher = copy.deepcopy(student)
    for param in teacher.parameters():
        param.requires_grad_(False)
    return disable_dropout(teacher)


def _paired_parameters(teacher: nn.Module, student: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Teacher and student parameters side by side; raises if the two architectures differ."""
    t_named = list(teacher.named_parameters())
    s_named = list(student.named_parameters())
    if len(t_named) != len(s_named):
        raise UdaInputError(
            f"ema: teacher has {len(t_named)} parameters, student {len(s_named)}; "
            "expected the same architecture"
        )
    pairs = []
    for (t_name, t_param), (s_name, s_param) in zip(t_named, s_named, strict=True):
        if t_param.shape != s_param.shape:
            raise UdaInputError(
                f"ema: parameter {t_name} has shape {tuple(t_param.shape)} in the teacher but "
                f"{s_name} has {tuple(s_param.shape)} in the student"
            )
        pairs.append((t_param, s_param))
    return pairs


@torch.no_grad()
def copy_parameters(teacher: nn.Module, student: nn.Module) -> None:
    """Copy the student's parameters into the teacher in place (the step-0 rule)."""
    for t_param, s_param in _paired_parameters(teacher, student):
        t_param.copy_(s_param.detach())


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, alpha: float) -> None:
    """``θ_T ← alpha·θ_T + (1 − alpha)·θ_S`` for parameters only, in place."""
    if not 0.0 <= alpha <= 1.0:
        raise UdaInputError(f"ema alpha: expected a value in [0, 1], got {alpha}")
    for t_param, s_param in _paired_parameters(teacher, student):
        # lerp_ keeps the teacher's dtype and device; weight (1 - alpha) pulls toward the student.
        t_param.lerp_(s_param.detach().to(t_param.dtype), 1.0 - alpha)


def ema_step(teacher: nn.Module, student: nn.Module, step: int, alpha: float = 0.999) -> float:
    """Apply the reference rule for ``step``: copy at step 0, otherwise average with ``ema_alpha``.

    Returns the factor used (0.0 at step 0, where the copy is the same as averaging with 0).
    """
    alpha_t = ema_alpha(step, alpha)
    if step == 0:
        copy_parameters(teacher, student)
    else:
        ema_update(teacher, student, alpha_t)
    return alpha_t

"""What every method shares: its networks, their optimisers' spans, autocast, state.

A method object owns the networks it needs and computes one training step
(``train_step``), calling ``backward`` itself (the reference methods back-propagate each loss
group separately to keep activation memory low). The loop (``duda.engine.trainer``) owns
optimisers, schedules, checkpoints, logging and distribution, and is shared by all methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from duda.config import ExperimentConfig, ModelConfig


@dataclass
class TrainSpan:
    """A trainable network, the model config that built it and the steps [start, end) it trains."""

    config: ModelConfig
    start: int
    end: int


@dataclass
class StepContext:
    """What the loop hands a step besides the batch."""

    step: int
    generator: torch.Generator  # seeded from (seed, step, rank): every random draw of the step
    want_visuals: bool = False
    target_images: Callable[[], Iterator[dict]] | None = None  # target training images (no crops)
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None


class Method:
    """Base class. Subclasses fill ``self.networks`` and implement ``train_step``."""

    #: networks to evaluate, the shipped one first
    eval_networks: tuple[str, ...] = ("student",)

    def __init__(self, cfg: ExperimentConfig, num_classes: int, device: torch.device) -> None:
        self.cfg = cfg
        self.num_classes = num_classes
        self.device = device
        self.networks: dict[str, nn.Module] = {}
        # wrapped (DDP / compiled) versions used for forward passes of trainable networks
        self.forward_nets: dict[str, nn.Module] = {}

    # ------------------------------------------------------------------ construction helpers
    def build(self, model_cfg: ModelConfig, pretrained: bool = True) -> nn.Module:
        from duda.models import build_model

        model = build_model(
            model_cfg.name,
            num_classes=self.num_classes,
            pretrained=model_cfg.pretrained if pretrained else None,
            **model_cfg.arch,
        )
        model = model.to(self.device)
        if self.cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def spans(self) -> dict[str, TrainSpan]:
        """Trainable networks and the steps they train; each gets its own optimiser."""
        raise NotImplementedError

    def net(self, name: str) -> nn.Module:
        """The module to call for a forward pass (wrapped when trainable)."""
        return self.forward_nets.get(name, self.networks[name])

    # ------------------------------------------------------------------ step
    def autocast(self):
        if not self.cfg.train.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def train_step(self, batch: dict, ctx: StepContext) -> dict:
        """Forward, losses, backward. Returns ``{"losses": {name: float}, "visuals": {...}}``."""
        raise NotImplementedError

    def on_train_start(self, step: int) -> None:
        """Called once before the first step of this process (fresh or resumed)."""

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        return {
            name: {k: v.detach().cpu() for k, v in net.state_dict().items()}
            for name, net in self.networks.items()
        }

    def load_state_dict(self, state: dict) -> None:
        from duda.errors import CheckpointError

        missing = sorted(set(self.networks) - set(state))
        if missing:
            raise CheckpointError(f"checkpoint lacks networks {missing} of this method")
        for name, net in self.networks.items():
            net.load_state_dict(state[name])

    def extra_state(self) -> dict:
        """Method-specific state beside the networks (e.g. DUDA's inconsistency weights)."""
        return {}

    def load_extra_state(self, state: dict) -> None:
        pass


def to_device(batch: dict, device: torch.device, channels_last: bool = False) -> dict:
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device, non_blocking=True)
            if channels_last and v.ndim == 4:
                v = v.contiguous(memory_format=torch.channels_last)
        out[k] = v
    return out

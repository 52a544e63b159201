"""What every method shares, and what a method declares about itself.

A method is one class, registered under its ``name`` (:func:`duda.methods.register_method`).
Its class attributes and two class methods are the only place the rest of duda learns about it:

- ``name`` — the value of ``method.name`` in a config;
- ``sections`` — the sections of the ``method`` config it reads (``uda``, ``duda``, ``hrda``, or
  ``options``, the free section of methods defined outside duda, typed by ``options_class``);
- ``needs_target`` — whether it trains on unlabelled target images;
- ``eval_networks`` — the networks evaluated during training, the shipped one (``ship``) first;
- :meth:`Method.network_specs` — every network of a run: the model config that builds it, its
  role (``train``: optimised over ``span`` steps; ``ema``: an average of another; ``frozen``), so
  the trainer builds optimisers and schedules, the checkpoint code rebuilds any network for
  inference, and the bench builds the method, all without knowing which method it is;
- :meth:`Method.check_config` — config checks of its own (run by config validation).

An instance owns its networks and computes one training step (``train_step``), calling
``backward`` itself (the reference methods back-propagate each loss group separately to keep
activation memory low). The loop (``duda.engine.trainer``) owns optimisers, schedules,
checkpoints, logging and distribution.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

import torch
from torch import nn

from duda.config import ExperimentConfig, ModelConfig
from duda.config_base import from_dict
from duda.errors import CheckpointError, ConfigError
from duda.models import build_network
from duda.models.mit import set_checkpointing

if TYPE_CHECKING:
    from duda.models.segmentor import SegmentationModel


@dataclass
class NetworkSpec:
    """One network of a run.

    ``role``: ``train`` (own optimiser and poly schedule over the steps ``span`` = [start, end)),
    ``ema`` (an exponential average of ``source``), or ``frozen`` (never updated).
    ``multires``: the HRDA multi-resolution wrapper's settings (JSON-ready), None for a plain model;
    ``input_scale``: the factor a plain model resizes its input by first (1 = none).
    ``key``: where ``config`` sits in the experiment config (error messages name it).
    """

    config: ModelConfig
    role: Literal["train", "ema", "frozen"] = "train"
    span: tuple[int, int] | None = None
    source: str | None = None
    multires: dict[str, Any] | None = None
    input_scale: float = 1.0
    key: str = "model"
    # (step, multiple): from ``step`` on, a fresh poly schedule from ``multiple`` × the base lr
    # down to 0 at the span's end (no warm-up); None: one schedule over the whole span
    lr_restart: tuple[int, float] | None = None

    def build(self, num_classes: int, pretrained: bool = True) -> SegmentationModel | nn.Module:
        """The network with fresh weights (ImageNet backbone when ``pretrained``)."""

        weights = self.config.pretrained if pretrained else None
        return build_network(
            self.config.name, num_classes, weights, self.config.arch, self.multires, self.input_scale
        )


@dataclass
class TrainSpan:
    """A trainable network, the model config that built it and the steps [start, end) it trains."""

    config: ModelConfig
    start: int
    end: int
    restart: tuple[int, float] | None = None  # (step, multiple): the lr restarts there (see lr_restart)


@dataclass
class StepContext:
    """What the loop hands a step besides the batch."""

    step: int
    generator: torch.Generator  # seeded from (seed, step, rank): every random draw of the step
    want_visuals: bool = False
    # target training images, without crops; ``limit`` images at most (0 = all), sharded over ranks
    target_images: Callable[[int], Iterator[dict]] | None = None
    all_reduce: Callable[[torch.Tensor], torch.Tensor] | None = None


class Method:
    """Base class. Subclasses declare the class attributes below, fill ``self.networks`` and
    implement :meth:`network_specs` and :meth:`train_step`."""

    name: ClassVar[str] = ""
    #: one line for ``duda config methods``
    summary: ClassVar[str] = ""
    #: sections of the ``method`` config this method reads
    sections: ClassVar[tuple[str, ...]] = ()
    #: the dataclass ``method.options`` is read into (methods defined outside duda)
    options_class: ClassVar[type | None] = None
    #: trains on unlabelled target images (``data.target`` is required)
    needs_target: ClassVar[bool] = True
    #: networks to evaluate during training
    eval_networks: ClassVar[tuple[str, ...]] = ("student",)
    #: the network written to ``work_dir/model`` at the end: the deployable one
    ship: ClassVar[str] = "student"

    def __init__(self, cfg: ExperimentConfig, num_classes: int, device: torch.device) -> None:
        self.cfg = cfg
        self.num_classes = num_classes
        self.device = device
        self.networks: dict[str, nn.Module] = {}
        # wrapped (DDP / compiled) versions used for forward passes of trainable networks
        self._forward: dict[str, nn.Module] = {}

    # ------------------------------------------------------------------ declaration
    @classmethod
    def network_specs(cls, cfg: ExperimentConfig) -> dict[str, NetworkSpec]:
        """Every network a run of ``cfg`` holds, by name (see :class:`NetworkSpec`)."""
        raise NotImplementedError(f"method {cls.name!r} does not declare network_specs()")

    @classmethod
    def check_config(cls, cfg: ExperimentConfig) -> None:
        """Raise ``ConfigError`` (naming the key) for settings this method cannot run with."""

        if cls.needs_target and cfg.data.target is None:
            raise ConfigError(f"method '{cls.name}' needs data.target (the unlabelled domain)")
        if cls.options_class is not None:
            cls.options(cfg)
        elif cfg.method.options:
            raise ConfigError(
                f"method.options: method '{cls.name}' takes no options, got {sorted(cfg.method.options)}"
            )

    @classmethod
    def options(cls, cfg: ExperimentConfig) -> Any:
        """``method.options`` read into ``options_class`` (typed, errors name the key)."""

        if cls.options_class is None:
            return None
        return from_dict(cls.options_class, dict(cfg.method.options), prefix="method.options")

    # ------------------------------------------------------------------ construction helpers
    def build(
        self,
        model_cfg: ModelConfig,
        pretrained: bool = True,
        multires: dict | None = None,
        input_scale: float = 1.0,
    ) -> nn.Module:
        """A fresh network of ``model_cfg`` on the method's device."""
        spec = NetworkSpec(model_cfg, multires=multires, input_scale=input_scale)
        model = spec.build(self.num_classes, pretrained)
        if model_cfg.checkpointing:  # checked by config validation: a MiT encoder is inside
            set_checkpointing(model, True)
        model = model.to(self.device)
        if self.cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def spans(self) -> dict[str, TrainSpan]:
        """Trainable networks and the steps they train; each gets its own optimiser."""
        return {
            name: TrainSpan(spec.config, *spec.span, restart=spec.lr_restart)
            for name, spec in self.network_specs(self.cfg).items()
            if spec.role == "train" and spec.span is not None
        }

    def net(self, name: str) -> nn.Module:
        """The module to call for a forward pass (wrapped when trainable)."""
        return self._forward.get(name, self.networks[name])

    def set_forward(self, name: str, module: nn.Module) -> None:
        """Use ``module`` (a DDP / compiled wrapper of ``networks[name]``) for forward passes."""
        self._forward[name] = module

    # ------------------------------------------------------------------ step
    def autocast(self):
        if not self.cfg.train.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)

    def train_step(self, batch: dict, ctx: StepContext) -> dict:
        """Forward, losses, backward. Returns ``{"losses": {name: float}, "visuals": {...}}``
        and optionally ``"events"`` (``{kind: {class index or key: value}}``, logged as they come)."""
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


# --------------------------------------------------------------------------- networks from files


class NetworkFiles(Protocol):
    """How a method reads networks from files (extra teachers, initial weights). The methods do
    not import the loaders, which sit above them: ``duda.inference`` installs one when imported
    (the training engine imports it)."""

    def load(self, path: str | os.PathLike, which: str) -> Any:
        """An ``InferenceModel`` of network ``which`` held by ``path`` (any source duda loads)."""
        ...

    def init_states(
        self,
        path: str | os.PathLike,
        model: nn.Module,
        where: str,
        model_name: str | None = None,
        num_classes: int | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor] | None]:
        """``model``'s weights from ``path``, and its EMA teacher's when the file has them."""
        ...


_network_files: NetworkFiles | None = None


def set_network_files(provider: NetworkFiles | None) -> None:
    """Install how methods read networks from files (``duda.inference`` does it on import)."""
    global _network_files
    _network_files = provider


def network_files(where: str) -> NetworkFiles:
    """The installed :class:`NetworkFiles`; a ConfigError naming ``where`` when there is none."""
    if _network_files is None:
        raise ConfigError(
            f"{where}: reading networks from files needs duda.inference, which is not imported; "
            "`import duda.inference` first (duda train and duda.train do)"
        )
    return _network_files

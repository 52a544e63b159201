"""The experiment configuration: one typed tree, loaded from YAML, overridable with ``--set``.

Sections: ``model`` (the network that is trained and shipped; for a distilling method the small
student), ``data``, ``method`` (a registered method's name and the sections it declares, see
:class:`MethodConfig`), ``optim``, ``train``. Every key is documented by its comment (here, or
beside the method that declares it) and in the annotated configs under ``configs/``. Unknown
keys and wrong types are errors naming the key (``duda.config_base``). A config file may name
base files (``_base_: [FILE, ...]``) that it is merged over; :func:`show_config` prints the
merged result with the file that set each key.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from duda.config_base import (
    OVERRIDE,
    Composed,
    Extensible,
    annotated_yaml,
    apply_overrides,
    compose_yaml,
    from_dict,
    to_dict,
)
from duda.errors import ConfigError

DatasetType = Literal["gta", "synthia", "cityscapes", "acdc", "darkzurich", "folder"]
DATASET_TYPES: tuple[str, ...] = ("gta", "synthia", "cityscapes", "acdc", "darkzurich", "folder")


@dataclass
class DatasetConfig:
    """Which dataset to read. ``resize`` None → the reader's default (W, H) keep-ratio target."""

    type: DatasetType
    root: str
    split: str = "train"
    conditions: list[str] | None = None  # acdc: subset of fog, night, rain, snow (None = all)
    time: str = "night"  # darkzurich: day, night or twilight
    resize: tuple[int, int] | None = None
    images: str | None = None  # folder: image folder (default ROOT/images)
    labels: str | None = None  # folder: label folder (default ROOT/labels if it exists)
    classes_file: str | None = None  # folder: class list (default ROOT/classes.{yaml,yml,json} if present)


@dataclass
class ModelConfig:
    name: str = "daformer_mitb5"  # a name from `duda models` (required in an experiment's model section)
    pretrained: str | None = None  # backbone ImageNet weights: local file or hub id (e.g. nvidia/mit-b5)
    arch: dict[str, Any] = field(default_factory=dict)  # architecture overrides (embed_dims, depths, ...)
    # activation checkpointing of the MiT encoder blocks while training: their activations are
    # recomputed in the backward pass (less GPU memory, about one more encoder forward per step;
    # same gradients); MiT backbones only. `duda plan` predicts the saving
    checkpointing: bool = False


@dataclass
class RCSConfig:
    enabled: bool = True  # rare-class sampling of source images
    temperature: float = 0.01  # P(c) = softmax((1 - f_c) / T)
    min_pixels: int = 3000  # a source image qualifies for class c with > min_pixels of c
    min_crop_ratio: float = 0.5  # re-crop until the crop holds > min_pixels * ratio of c


@dataclass
class DataConfig:
    source: DatasetConfig | None = None  # labelled domain
    target: DatasetConfig | None = None  # unlabelled domain (training split)
    val: DatasetConfig | None = None  # labelled target split for evaluation
    crop_size: tuple[int, int] = (512, 512)  # (H, W) training crop
    batch_size: int = 2  # source and target images per step and process
    workers: int = 4  # data-loader processes per training process
    rcs: RCSConfig = field(default_factory=RCSConfig)
    target_valid_margins: tuple[int, int, int, int] | None = None  # MIC: (top, bottom, left, right)
    # pixels of the original target image excluded from pseudo-labels; null = none


@dataclass(eq=False, repr=False)
class MethodConfig(Extensible):
    """The method and the settings it reads. Besides ``name`` and ``options``, its keys are the
    sections the registered methods declare (:meth:`Extensible.extend`; ``duda.methods`` registers
    those of duda's own methods), placed before ``options``."""

    extensions_before: ClassVar[str] = "options"
    #: the method a config without ``method.name`` runs (set by the methods layer)
    default_name: ClassVar[str] = ""

    # a registered method (`duda config methods`) or one of your own (duda --import MODULE)
    name: str = field(default_factory=lambda: MethodConfig.default_name)
    options: dict[str, Any] = field(default_factory=dict)  # a method of your own's settings


@dataclass
class OptimConfig:
    lr: float = 6e-5  # AdamW base learning rate (backbone)
    head_lr_mult: float = 10.0  # decode head learning rate multiplier
    weight_decay: float = 0.01  # not applied to normalisation layers
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_iters: int = 1500  # linear warm-up
    warmup_ratio: float = 1e-6  # warm-up starts at lr * ratio
    power: float = 1.0  # poly decay to 0 after warm-up


@dataclass
class TrainConfig:
    iters: int = 40000  # total iterations (DUDA: both stages)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads of the trainer; 0 = torch's default (one per core)
    bf16: bool = False  # bf16 autocast (fast on GPUs; slow on CPUs without bf16 units)
    channels_last: bool = False
    compile: bool = False  # torch.compile the trained networks
    eval_every: int = 4000  # iterations; 0 = only at the end
    eval_mode: Literal["whole", "slide"] = "whole"
    eval_crop: tuple[int, int] = (1024, 1024)  # slide window (H, W)
    eval_stride: tuple[int, int] = (512, 512)
    ckpt_every: int = 2000  # iterations between checkpoints
    keep_last: int = 3  # checkpoints kept (0 = all); >= 2 leaves one to resume from if the newest is damaged
    log_every: int = 50  # iterations between JSONL/TensorBoard records
    debug_every: int = 0  # iterations between debug image grids; 0 = never
    max_eval_images: int = 0  # 0 = the whole val split


@dataclass
class ExperimentConfig:
    work_dir: str = "runs/experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        if self.data.source is None:
            raise ConfigError("data.source is required (the labelled training domain)")
        if self.train.iters <= 0:
            raise ConfigError(f"train.iters must be positive, got {self.train.iters}")


#: a check of a whole experiment config: (the config, the dict it was built from) -> None or a
#: ConfigError naming the key
ConfigCheck = Callable[[ExperimentConfig, dict[str, Any]], None]
_CHECKS: list[ConfigCheck] = []


def register_config_check(check: ConfigCheck) -> ConfigCheck:
    """Run ``check`` on every config :func:`config_from_dict` builds, after those registered
    before it. The layers above register theirs on import (``duda.methods``: the method's own
    checks, the model names and architectures); registering one again is a no-op."""
    if check not in _CHECKS:
        _CHECKS.append(check)
    return check


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Build the config and run the registered checks (:func:`register_config_check`).

    The method sections and the checks come from ``duda.methods``, which must be imported first
    (``duda.methods.config_from_dict`` does it); without them this is an error, never a config
    that was not checked."""
    if not _CHECKS:
        raise ConfigError(
            "duda.config.config_from_dict: no config checks are registered (nor the methods' config "
            "sections); import duda.methods first, or call duda.methods.config_from_dict / "
            "duda.load_config, which do"
        )
    cfg = from_dict(ExperimentConfig, data)
    for check in _CHECKS:
        check(cfg, data)
    return cfg


def require_model(data: dict[str, Any]) -> None:
    """``model`` (with its ``name``) is required: defaulting the trained network would silently
    train (and write checkpoints of) a large MiT-B5."""
    model = data.get("model")
    if not isinstance(model, dict) or "name" not in model:
        what = "section 'model'" if not isinstance(model, dict) else "key 'model.name'"
        raise ConfigError(
            f"missing required {what}: the network to train, e.g. model: {{name: daformer_mitb0}} "
            "(`duda models` lists the names)"
        )


def packaged_configs_dir() -> Path:
    """The paper benchmarks' configs shipped inside the package (``configs/`` in a checkout links
    to them): ``gta2cs/``, ``syn2cs/``, ``cs2acdc/``, ``cs2darkzurich/``, ``_base_/``."""
    return Path(__file__).resolve().parent / "configs"


def resolve_config_path(path: str) -> str:
    """``path`` when it exists; else the shipped config of that name, so that
    ``duda train configs/gta2cs/duda_mitb5_mitb0.yaml`` (or ``gta2cs/duda_mitb5_mitb0``) works
    from any folder after ``pip install``. A missing file is an error naming both places."""
    if os.path.exists(path) or os.path.isabs(path):
        return path
    rel = Path(path)
    if rel.parts and rel.parts[0] == "configs":
        rel = Path(*rel.parts[1:])
    for candidate in (rel, rel.with_suffix(".yaml")) if rel.suffix != ".yaml" else (rel,):
        shipped = packaged_configs_dir() / candidate
        if candidate.parts and shipped.is_file():
            return str(shipped)
    raise ConfigError(
        f"{path}: no such config file (also not among the configs shipped with duda in "
        f"{packaged_configs_dir()}; `duda config list` shows them)"
    )


def compose_config(path: str | None, overrides: list[str] | None = None) -> tuple[ExperimentConfig, Composed]:
    """The config of ``path`` (its ``_base_`` files merged in; defaults when None) with
    ``overrides`` applied, and where each key was set (:class:`duda.config_base.Composed`)."""
    composed = compose_yaml(resolve_config_path(path)) if path else Composed({}, {})
    apply_overrides(composed.data, list(overrides or []), composed.sources)
    try:
        return config_from_dict(composed.data), composed
    except ConfigError as exc:
        files = composed.files_for(exc.key) if exc.key else []
        where = path or "config"
        if files == [OVERRIDE]:
            where = f"{where} (value from --set)"
        elif len(files) == 1 and files[0] != path:
            where = f"{files[0]} (a base of {path})"
        elif len(files) > 1:
            where = f"{where} (the section's keys come from {', '.join(files)})"
        error = ConfigError(f"{where}: {exc}")
        error.key = exc.key
        raise error from None


def load_config(path: str | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML config (or start from defaults when ``path`` is None) and apply overrides.

    ``_base_: [FILE, ...]`` in the file names configs it is merged over (see
    :func:`duda.config_base.compose_yaml`); ``overrides`` (``key.sub=value``) apply after that."""
    return compose_config(path, overrides)[0]


def show_config(path: str, overrides: list[str] | None = None) -> str:
    """The resolved config of ``path`` as YAML; each key's comment names the file that set it
    (``default`` for built-in defaults, ``--set`` for overrides) and what it means."""
    cfg, composed = compose_config(path, overrides)
    header = [
        f"# resolved config of {path}" + "".join(f" --set {o}" for o in overrides or []),
        "# after each key: the file that set it (default: not set by any file; --set: the command line)",
        "# | the key's meaning from duda.config",
    ]
    return "\n".join(header) + "\n" + annotated_yaml(cfg, composed)


__all__ = [
    "DATASET_TYPES",
    "ConfigCheck",
    "DataConfig",
    "DatasetConfig",
    "ExperimentConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "RCSConfig",
    "TrainConfig",
    "compose_config",
    "config_from_dict",
    "register_config_check",
    "require_model",
    "load_config",
    "show_config",
    "to_dict",
]

"""The experiment configuration: one typed tree, loaded from YAML, overridable with ``--set``.

Sections: ``model`` (the network that is trained and shipped; for DUDA the small student),
``data``, ``method`` (a registered method's name and the switches it reads), ``optim``,
``train``. Every key is documented by its comment here and in the annotated configs under
``configs/``. Unknown keys and wrong types are errors naming the key (``duda.config_base``).
A config file may name base files (``_base_: [FILE, ...]``) that it is merged over;
:func:`show_config` prints the merged result with the file that set each key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from duda.config_base import (
    OVERRIDE,
    Composed,
    annotated_yaml,
    apply_overrides,
    compose_yaml,
    from_dict,
    to_dict,
)
from duda.data.datasets import DatasetConfig
from duda.errors import ConfigError


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


@dataclass
class UDAConfig:
    """Switches of the EMA self-training methods (DAFormer, MIC; also DUDA's base)."""

    alpha: float = 0.999  # EMA factor; alpha_t = min(1 - 1/(t+1), alpha)
    pseudo_threshold: float = 0.968  # confidence for the pseudo-label weight q
    pseudo_weight_per_image: bool = False  # q per image (reference: one scalar per batch)
    # how q is computed: "threshold" (reference) or "confidence" = mean max-probability, which
    # needs no threshold (for teachers trained from scratch, whose confidence rarely reaches 0.968)
    pseudo_weighting: Literal["threshold", "confidence"] = "threshold"
    ignore_top: int = 15  # DAFormer: pseudo-label weight 0 in the top rows of the crop
    ignore_bottom: int = 120  # ... and the bottom rows (Cityscapes ego car); 0 to disable
    mix: Literal["class", "none"] = "class"  # ClassMix of source into target
    color_jitter_p: float = 0.8  # share of iterations with colour jitter
    color_jitter_strength: float = 0.2  # brightness, contrast, saturation, hue
    blur_p: float = 0.5  # share of iterations with Gaussian blur
    fd_weight: float = 0.005  # ImageNet feature distance; 0 disables
    fd_thing_classes: tuple[int, ...] = (6, 7, 11, 12, 13, 14, 15, 16, 17, 18)
    fd_min_ratio: float = 0.75  # a cell counts if its thing class covers this share
    # MIC (masked image consistency); used when method.name is mic or duda with base mic
    mask_block_size: int = 32  # px per mask block (64 for 1024 crops)
    mask_ratio: float = 0.7  # share of blocks zeroed
    mask_weight: float = 1.0  # loss weight of the masked-image CE
    mask_mode: Literal["separatetrgaug", "separate"] = "separatetrgaug"


@dataclass
class HRDAConfig:
    """HRDA's multi-resolution networks (methods hrda, mic_hrda, and duda with such a base);
    defaults = the published GTA→Cityscapes HRDA config (1024×1024 training crops)."""

    scales: tuple[float, float] = (0.5, 1.0)  # (context, detail) scale of the training crop
    hr_crop_size: tuple[int, int] = (512, 512)  # (H, W) detail crop inside the crop; HR window at test
    crop_coord_divisible: int = 8  # detail-crop offsets are multiples of this (stride 4 x ratio 2)
    hr_slide_inference: bool = True  # test: the detail branch slides hr_crop_size windows
    hr_slide_overlapping: bool = True  # ... with a stride of half the window
    attention_classwise: bool = True  # one scale-attention map per class (else one for all)
    hr_loss_weight: float = 0.1  # weight of the detail-crop loss; the fused loss gets 1 - hr - lr
    lr_loss_weight: float = 0.0  # weight of the context loss
    fixed_attention: float | None = None  # a constant attention instead of the learned head
    feature_scale: float | Literal["all"] = 0.5  # ImageNet feature distance on the context scale
    blur_hr_crop: bool = False  # ablation: the detail branch sees a blurred (down-up) crop
    attention_channels: int | None = None  # width of the attention head; null = the head's width


@dataclass
class TeacherSpec:
    checkpoint: str  # a training checkpoint (.pt), a deploy folder or a published mmseg latest.pth
    network: str = "teacher"  # which network in the checkpoint (mmseg: teacher = ema_model.*)
    weight: float = 1.0  # weight in the fused probability


@dataclass
class DUDAConfig:
    """DUDA (method.md Part C)."""

    large: ModelConfig = field(default_factory=ModelConfig)  # T and L architecture
    # start L and T from trained weights instead of large.pretrained (ImageNet backbone only):
    # - a published DAFormer / MIC (mmseg) latest.pth, or a folder holding one: L <- its model.*
    #   network (the one the reference evaluates); T <- its ema_model.* when the file has one,
    #   else T = a copy of L. HRDA / MIC(HRDA) files fit an HRDA large (method.base hrda|mic_hrda).
    # - a duda deploy folder, training checkpoint or run folder: L <- its shipped network, T = L.
    # The weights must fit `large` (name, arch, classes; checked, the error names both). The EMA
    # schedule still starts at step 0, so T follows L closely in the first steps. null = off.
    large_init: str | None = None
    stage1_iters: int = 40000  # pre-adaptation; stage 2 lasts train.iters - stage1_iters
    distill: Literal["linear", "sigmoid", "constant"] = "linear"  # gradual distillation lambda(t)
    distill_ramp: float = 0.5  # lambda reaches 1 after this share of stage 1
    finetune_mix: bool = True  # stage 2 trains S on ClassMix images labelled by the teachers
    inconsistency: bool = True  # stage 2 per-class weights 1 + gamma * I'_c
    gamma: float = 1.0
    inconsistency_refresh: int = 0  # recompute every K iterations of stage 2; 0 = once
    inconsistency_images: int = 0  # target images used to compute I_c; 0 = the whole set
    teachers: list[TeacherSpec] = field(default_factory=list)  # extra frozen teachers (multi-teacher)
    stage1_teacher_weight: float = 1.0  # weight of the stage-1 teacher T in the fusion; 0 = drop it
    # project defaults (docs/method.md 7, docs/ablation.md); the paper's DUDA: kd_weight 0,
    # stage2_lr_restart 0
    kd_weight: float = 1.0  # soft KD (temperature-scaled KL, T -> S on target); 0 = off
    kd_temperature: float = 1.0
    kd_stages: Literal["both", "stage2"] = "stage2"  # where soft KD applies (stage 1: times lambda)
    # stage 2 (project options; the paper's stage 2 is: hard fused labels, the same source weight,
    # S's single poly schedule running on across the stage boundary)
    stage2_targets: Literal["hard", "soft"] = "hard"  # ClassMix target pixels: argmax or fused probs
    stage1_targets: Literal["hard", "soft"] = "hard"  # stage-1 mixed target pixels: argmax or probs
    stage2_source_weight: float = 1.0  # weight of S's source CE in stage 2
    # 0: S's learning rate follows one warm-up + poly schedule over all train.iters; > 0: it
    # restarts at stage 2 at this multiple of optim.lr and decays (poly) to 0 at the end
    stage2_lr_restart: float = 1.0
    # S's input scale: S resizes every image it is given by this factor first (in training, in
    # evaluation and as shipped), e.g. 0.5 for a single-resolution small student under a
    # multi-resolution (HRDA) teacher on 1024 crops; its logits are upsampled to the labels
    small_input_scale: float = 1.0


@dataclass
class MethodConfig:
    # a registered method (`duda config methods`): source_only, daformer, mic, hrda, mic_hrda,
    # duda, or one of your own (duda --import MODULE)
    name: str = "daformer"
    base: str = "daformer"  # DUDA's base: the method L trains with (daformer, mic, hrda, mic_hrda)
    uda: UDAConfig = field(default_factory=UDAConfig)
    duda: DUDAConfig = field(default_factory=DUDAConfig)
    hrda: HRDAConfig = field(default_factory=HRDAConfig)
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


def config_from_dict(data: dict[str, Any]) -> ExperimentConfig:
    """Build the config; ``model`` (with its ``name``) is required: defaulting the trained network
    would silently train (and write checkpoints of) a large MiT-B5."""
    cfg = from_dict(ExperimentConfig, data)
    from duda.methods.registry import method_class  # the method's own checks (imports torch)

    method_class(cfg.method.name).check_config(cfg)
    model = data.get("model")
    if not isinstance(model, dict) or "name" not in model:
        what = "section 'model'" if not isinstance(model, dict) else "key 'model.name'"
        raise ConfigError(
            f"missing required {what}: the network to train, e.g. model: {{name: daformer_mitb0}} "
            "(`duda models` lists the names)"
        )
    for key, model_cfg in (("model", cfg.model), ("method.duda.large", cfg.method.duda.large)):
        if model_cfg.arch:  # checked against the model's architecture fields (imports torch)
            from duda.models.factory import resolve_arch

            resolve_arch(model_cfg.name, model_cfg.arch, prefix=f"{key}.arch")
        if model_cfg.checkpointing:
            from duda.models.factory import recipe

            backbone = recipe(model_cfg.name).backbone
            if backbone != "mit":
                error = ConfigError(
                    f"{key}.checkpointing: activation checkpointing is for MiT encoders; model "
                    f"{model_cfg.name!r} has a {backbone} backbone"
                )
                error.key = f"{key}.checkpointing"
                raise error
    return cfg


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
    "DataConfig",
    "DUDAConfig",
    "ExperimentConfig",
    "HRDAConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimConfig",
    "RCSConfig",
    "TeacherSpec",
    "TrainConfig",
    "UDAConfig",
    "compose_config",
    "config_from_dict",
    "load_config",
    "show_config",
    "to_dict",
]

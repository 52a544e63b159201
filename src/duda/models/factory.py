"""Models by name: ``build_model("daformer_mitb5", num_classes=19, pretrained="nvidia/mit-b5")``.

Each name is a recipe: a backbone family, a head type, default architecture fields and the hub id
of its ImageNet backbone weights. Keyword overrides change architecture fields; the model's
``spec`` records them so that the exact architecture can be rebuilt from a checkpoint.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import typing
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from duda.config_base import PositiveInt, from_dict
from duda.errors import CheckpointError, ConfigError
from duda.models import heads as H
from duda.models.flops import flop_counter
from duda.models.mit import MiTArch, MiTBackbone, mit_variant
from duda.models.pretrained import (
    load_backbone_weights,
    mit_checkpoint_to_backbone,
    resnet_checkpoint_to_backbone,
)
from duda.models.resnet import ResNetArch, ResNetBackbone
from duda.models.segmentor import SegmentationModel


@dataclass(frozen=True)
class DAFormerHeadArch:
    head_channels: PositiveInt = 256  # channels of the embedded features and of the fusion
    head_dilations: tuple[int, ...] = (1, 6, 12, 18)  # rates of the depthwise-separable ASPP fusion
    dropout: float = 0.1  # before the classifier


@dataclass(frozen=True)
class SegFormerHeadArch:
    head_channels: PositiveInt = 256  # channels of the all-MLP decoder
    dropout: float = 0.1  # before the classifier


@dataclass(frozen=True)
class DeepLabV2HeadArch:
    head_dilations: tuple[int, ...] = (6, 12, 18, 24)  # ASPP classifier rates (summed)


@dataclass(frozen=True)
class DeepLabV3PlusHeadArch:
    head_channels: PositiveInt = 128  # ASPP and decoder channels
    head_dilations: tuple[int, ...] = (1, 6, 12, 18)  # ASPP rates
    dropout: float = 0.1  # before the classifier


# Architecture fields of each head type (overridable like the backbone's, e.g. head_channels=64).
_HEAD_ARCH: dict[str, type] = {
    "daformer": DAFormerHeadArch,
    "segformer": SegFormerHeadArch,
    "deeplabv2": DeepLabV2HeadArch,
    "deeplabv3p": DeepLabV3PlusHeadArch,
}


@dataclass(frozen=True)
class Recipe:
    """How one model name is built."""

    backbone: str  # "mit" | "resnet"
    head: str  # a key of _HEAD_ARCH
    defaults: dict[str, Any] = field(default_factory=dict)  # backbone + head fields
    hub_id: str | None = None  # ImageNet weights of the default backbone
    description: str = ""
    weights_url: str | None = None  # where to download the ImageNet weights when not on the hub


def _mit_defaults(variant: str) -> dict[str, Any]:
    return dataclasses.asdict(mit_variant(variant))


_TINY_MIT = {"embed_dims": (8, 16, 32, 64), "depths": (1, 1, 1, 1), "num_heads": (1, 1, 2, 4)}
_R18 = {"layers": (2, 2, 2, 2), "width": 64, "block": "basic", "dilations": (1, 1, 1, 2)}
# DeepLabV2 as the UDA literature runs it (DAFormer's ``deeplabv2red_r50-d8.py`` + ``r101v1c``):
# a ResNet-V1c (deep stem, mmseg's contract_dilation) and an ASPP classifier with dilations 6 and
# 12 only (AdaptSegNet's ``return`` inside its loop over the four rates).
_DLV2_RED = {"stem": "deep", "contract_dilation": True, "head_dilations": (6, 12)}
_OPENMMLAB_V1C = "https://download.openmmlab.com/pretrain/third_party/resnet{}_v1c-{}.pth"

RECIPES: dict[str, Recipe] = {}
for _v in ("b0", "b1", "b2", "b3", "b4", "b5"):
    RECIPES[f"daformer_mit{_v}"] = Recipe(
        "mit", "daformer", _mit_defaults(_v), f"nvidia/mit-{_v}", f"MiT-{_v.upper()} + DAFormer head"
    )
    RECIPES[f"segformer_mit{_v}"] = Recipe(
        "mit",
        "segformer",
        # SegFormer's published decoders: 256 channels for B0 and B1 (B1: 13.7 M parameters in the
        # paper), 768 for B2–B5.
        {**_mit_defaults(_v), "head_channels": 256 if _v in ("b0", "b1") else 768},
        f"nvidia/mit-{_v}",
        f"MiT-{_v.upper()} + SegFormer all-MLP head",
    )
RECIPES.update(
    {
        "deeplabv2_r50": Recipe(
            "resnet",
            "deeplabv2",
            {"layers": (3, 4, 6, 3)},
            "microsoft/resnet-50",
            "ResNet-50 (OS8, 7x7 stem) + DeepLabV2 dilations 6/12/18/24 (original)",
        ),
        "deeplabv2_r101": Recipe(
            "resnet",
            "deeplabv2",
            {"layers": (3, 4, 23, 3)},
            "microsoft/resnet-101",
            "ResNet-101 (OS8, 7x7 stem) + DeepLabV2 dilations 6/12/18/24 (original)",
        ),
        "deeplabv2red_r50": Recipe(
            "resnet",
            "deeplabv2",
            {"layers": (3, 4, 6, 3), **_DLV2_RED},
            None,
            "ResNet-50-V1c (OS8) + DeepLabV2 dilations 6/12 (UDA literature; open-mmlab weights)",
            _OPENMMLAB_V1C.format(50, "2cccc1ad"),
        ),
        "deeplabv2red_r101": Recipe(
            "resnet",
            "deeplabv2",
            {"layers": (3, 4, 23, 3), **_DLV2_RED},
            None,
            "ResNet-101-V1c (OS8) + DeepLabV2 dilations 6/12 (UDA literature; open-mmlab weights)",
            _OPENMMLAB_V1C.format(101, "e67eebb6"),
        ),
        "deeplabv3p_r18": Recipe(
            "resnet",
            "deeplabv3p",
            dict(_R18),
            "microsoft/resnet-18",
            "ResNet-18 (OS16) + DeepLabV3+ (CNN student)",
        ),
        "daformer_mit_tiny": Recipe(
            "mit", "daformer", {**_TINY_MIT, "head_channels": 32}, None, "tiny MiT + DAFormer head (tests)"
        ),
        "segformer_mit_tiny": Recipe(
            "mit", "segformer", {**_TINY_MIT, "head_channels": 32}, None, "tiny MiT + SegFormer head (tests)"
        ),
        "deeplabv2_r_tiny": Recipe(
            "resnet",
            "deeplabv2",
            {"layers": (1, 1, 1, 1), "width": 8},
            None,
            "tiny ResNet + DeepLabV2 (tests)",
        ),
        "deeplabv2red_r_tiny": Recipe(
            "resnet",
            "deeplabv2",
            {"layers": (1, 1, 1, 1), "width": 8, **_DLV2_RED},
            None,
            "tiny ResNet-V1c + DeepLabV2 dilations 6/12 (tests)",
        ),
        "deeplabv3p_r_tiny": Recipe(
            "resnet",
            "deeplabv3p",
            {**_R18, "layers": (1, 1, 1, 1), "width": 16, "head_channels": 32},
            None,
            "tiny ResNet + DeepLabV3+ (tests)",
        ),
    }
)


def list_models() -> list[str]:
    """All model names accepted by :func:`build_model`."""
    return list(RECIPES)


def recipe(name: str) -> Recipe:
    """The recipe of ``name``; ConfigError listing the known names otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ConfigError(f"model {name!r}: unknown; expected one of {', '.join(RECIPES)}") from None


def _backbone_fields(kind: str) -> dict[str, Any]:
    arch = MiTArch() if kind == "mit" else ResNetArch()
    return dataclasses.asdict(arch)


@functools.cache
def arch_class(name: str) -> type:
    """The dataclass of ``name``'s architecture fields (backbone and head), typed as in
    ``MiTArch`` / ``ResNetArch`` and the head's ``*HeadArch``, with the recipe's defaults."""
    r = recipe(name)
    parts = (MiTArch if r.backbone == "mit" else ResNetArch, _HEAD_ARCH[r.head])
    hints = {k: v for cls in parts for k, v in typing.get_type_hints(cls, include_extras=True).items()}
    defaults = {k: v for cls in parts for k, v in dataclasses.asdict(cls()).items()} | r.defaults
    fields = [(k, hints[k], dataclasses.field(default=defaults[k])) for k in hints]
    return dataclasses.make_dataclass(f"{name}_arch", fields, frozen=True)


def allowed_overrides(name: str) -> dict[str, Any]:
    """Architecture fields of ``name`` and their values before overrides."""
    return dataclasses.asdict(arch_class(name)())


def resolve_arch(name: str, overrides: dict[str, Any], prefix: str = "arch") -> dict[str, Any]:
    """Full architecture fields of ``name`` with ``overrides`` applied, checked and converted
    (lists become tuples) by the config machinery; errors name ``prefix.<field>`` and the model."""
    try:
        arch = from_dict(arch_class(name), overrides, prefix=prefix)
    except ConfigError as exc:
        error = ConfigError(f"{exc} (architecture fields of model {name!r})")
        error.key = exc.key
        raise error from None
    return dataclasses.asdict(arch)


def _json_ready(overrides: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}


def build_head(
    kind: str, fields: dict[str, Any], in_channels: tuple[int, ...], num_classes: int
) -> nn.Module:
    """The decode head of ``kind`` (a recipe's ``head``: ``"daformer"``, ``"segformer"``,
    ``"deeplabv2"`` or DeepLabV3+) from resolved architecture ``fields``, on backbone stages of
    ``in_channels``, with ``num_classes`` outputs."""
    if kind == "daformer":
        return H.DAFormerHead(
            in_channels, num_classes, fields["head_channels"], fields["head_dilations"], fields["dropout"]
        )
    if kind == "segformer":
        return H.SegFormerHead(in_channels, num_classes, fields["head_channels"], fields["dropout"])
    if kind == "deeplabv2":
        return H.DeepLabV2Head(in_channels[-1], num_classes, fields["head_dilations"])
    return H.DeepLabV3PlusHead(
        in_channels, num_classes, fields["head_channels"], fields["head_dilations"], dropout=fields["dropout"]
    )


def build_model(
    name: str,
    num_classes: int = 19,
    pretrained: str | os.PathLike | None = None,
    **overrides: Any,
) -> SegmentationModel:
    """Build model ``name`` with ``num_classes`` outputs.

    ``pretrained``: ImageNet weights for the backbone only — a local ``.safetensors``/``.pth``/
    ``.bin``/``.pt`` file, a hub id (e.g. ``"nvidia/mit-b5"``), ``"imagenet"`` for the name's
    default hub id, or None (random init). ``overrides`` change architecture fields (see
    :func:`allowed_overrides`), e.g. ``embed_dims=(16, 32, 64, 128)``, ``depths=(1, 1, 1, 1)``,
    ``head_channels=64``, ``num_heads``, ``sr_ratios``, ``layers``, ``width``.
    """
    r = recipe(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"model {name!r}: num_classes must be a positive integer, got {num_classes!r}")
    fields = resolve_arch(name, overrides)
    backbone_keys = _backbone_fields(r.backbone)
    backbone_args = {k: v for k, v in fields.items() if k in backbone_keys}
    try:
        if r.backbone == "mit":
            backbone: nn.Module = MiTBackbone(MiTArch(**backbone_args))
        else:
            backbone = ResNetBackbone(ResNetArch(**backbone_args))
        head = build_head(r.head, fields, backbone.out_channels, num_classes)
    except ValueError as exc:
        raise ConfigError(f"model {name!r} with {overrides}: {exc}") from None
    # DeepLabV2 classifies the last stage; the others return logits at the finest level.
    output_stride = backbone.feature_strides[-1] if r.head == "deeplabv2" else backbone.feature_strides[0]
    spec = {"name": name, "num_classes": num_classes, "arch": _json_ready(overrides)}
    model = SegmentationModel(backbone, head, output_stride, spec)
    if pretrained is not None:
        source = pretrained
        if str(pretrained) == "imagenet":
            if r.hub_id is None:
                where = f"; download {r.weights_url} and pass that file" if r.weights_url else "; pass a file"
                raise CheckpointError(f"model {name!r} has no published ImageNet weights on the hub{where}")
            source = r.hub_id
        convert = mit_checkpoint_to_backbone if r.backbone == "mit" else resnet_checkpoint_to_backbone
        load_backbone_weights(model.backbone, source, convert)
    return model


def build_network(
    name: str,
    num_classes: int,
    pretrained: str | os.PathLike | None = None,
    arch: dict[str, Any] | None = None,
    multires: dict[str, Any] | None = None,
    input_scale: float = 1.0,
) -> nn.Module:
    """Model ``name`` (:func:`build_model`), wrapped for multi-resolution training and inference
    (HRDA, :mod:`duda.models.hrda`) when ``multires`` holds the wrapper's settings, or resizing
    its input by ``input_scale`` first (see :class:`SegmentationModel`)."""
    model = build_model(name, num_classes, pretrained, **dict(arch or {}))
    if input_scale != 1.0:
        if multires is not None:
            raise ConfigError(f"model {name!r}: input_scale and multi-resolution settings exclude each other")
        spec = {**model.spec, "input_scale": float(input_scale)}
        try:
            return SegmentationModel(model.backbone, model.head, model.output_stride, spec)
        except ValueError as exc:
            raise ConfigError(f"model {name!r}: {exc}") from None
    if multires is None:
        return model
    # In the function: duda.models.hrda imports this module (build_from_spec, build_head), so a
    # module-level import here would be circular.
    from duda.models.hrda import wrap_multires

    return wrap_multires(model, multires)


def build_from_spec(spec: dict[str, Any], pretrained: str | os.PathLike | None = None) -> nn.Module:
    """Rebuild a model from its ``spec`` (``{"name", "num_classes", "arch"}``, plus ``"hrda"``
    for a multi-resolution model or ``"input_scale"``); other keys (a deploy folder's metadata)
    are ignored."""
    try:
        return build_network(
            spec["name"],
            spec["num_classes"],
            pretrained,
            spec.get("arch") or {},
            spec.get("hrda"),
            spec.get("input_scale", 1.0),
        )
    except KeyError as exc:
        raise ConfigError(f"model spec: missing key {exc} (have {sorted(spec)})") from None


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(
    name: str, size: tuple[int, int] = (512, 1024), batch: int = 1, num_classes: int = 19, **overrides: Any
) -> int:
    """FLOPs of one forward pass of ``name`` on a ``batch``×3×H×W input (2 per multiply-add).

    Counted with ``torch.utils.flop_counter.FlopCounterMode`` on the meta device: shapes only,
    no memory and no arithmetic, so even MiT-B5 takes about a second.
    """
    with torch.device("meta"):
        model = build_model(name, num_classes, **overrides).eval()
        x = torch.empty(batch, 3, *size)
    with flop_counter() as counter, torch.no_grad():
        model(x)
    return int(counter.get_total_flops())


def model_summary(name: str, size: tuple[int, int] = (512, 1024), num_classes: int = 19) -> dict[str, Any]:
    """Parameters, forward FLOPs at ``size`` (batch 1), output stride and weights of ``name``.

    Everything is computed on the meta device, so no memory is allocated for the weights.
    """
    r = recipe(name)
    with torch.device("meta"):
        model = build_model(name, num_classes)
    return {
        "name": name,
        "params": count_parameters(model),
        "flops": count_flops(name, size, num_classes=num_classes),
        "output_stride": model.output_stride,
        "hub_id": r.hub_id,
        "description": r.description,
    }

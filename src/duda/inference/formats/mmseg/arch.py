"""Architecture inference: which of our models a reference network's weights are.

Backbone and head from the key layout and tensor shapes, HRDA's multi-resolution settings from
the weights and the mmcv config text in ``meta['config']`` (read as data, never executed).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from typing import Any

import torch

from duda.errors import CheckpointError, ConfigError
from duda.models.factory import RECIPES, allowed_overrides
from duda.models.hrda import MultiResSpec

_ASPP_DILATIONS = {4: (1, 6, 12, 18)}  # DAFormer's sep-ASPP, by number of branches
_DLV2_DILATIONS = {2: (6, 12), 4: (6, 12, 18, 24)}  # deeplabv2red / deeplabv2


@dataclass
class ReferenceArch:
    """What a reference network is, as one of our models."""

    name: str  # our model name (a key of duda.models.factory.RECIPES)
    num_classes: int
    overrides: dict[str, Any] = field(default_factory=dict)  # architecture overrides for build_model
    backbone: str = ""  # the reference backbone, in words
    head: str = ""  # the reference head, in words
    head_kind: str = ""  # our head type: daformer | segformer | deeplabv2
    segformer_order: str = ""  # DAFormerHead(conv1) / SegFormerHead: fused channels reordered
    notes: list[str] = field(default_factory=list)
    #: HRDA: the MultiResSpec fields (``MultiResSpec.to_dict()``) of the HRDAModel; None: plain
    hrda: dict[str, Any] | None = None
    #: HRDA: notes that deserve a warning where they are not printed (settings assumed, not read)
    warnings: list[str] = field(default_factory=list)

    def describe(self) -> str:
        extra = f" {self.overrides}" if self.overrides else ""
        if self.hrda is not None:
            mr = self.hrda
            extra += f" in HRDA (scales {tuple(mr['scales'])}, hr_crop_size {tuple(mr['hr_crop_size'])})"
        return f"{self.name}{extra} ({self.backbone} + {self.head}, {self.num_classes} classes)"


def _shape(state: dict, key: str) -> tuple[int, ...]:
    return tuple(state[key].shape)


def key_listing(keys, limit: int = 8) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return f"{shown}, ... ({len(keys)} in all)" if len(keys) > limit else shown


def _indices(state: dict, pattern: str) -> list[int]:
    """Sorted distinct integers captured by ``pattern`` (one group) over the keys of ``state``."""
    rx = re.compile(pattern)
    return sorted({int(m[1]) for k in state if (m := rx.match(k))})


def _mit_fields(bb: dict, source: str) -> dict[str, Any]:
    stages = _indices(bb, r"patch_embed(\d+)\.proj\.weight$")
    if stages != list(range(1, len(stages) + 1)) or len(stages) != 4:
        raise CheckpointError(f"{source}: MiT backbone with patch_embed stages {stages}; expected 1..4")
    dims, depths, srs, mlps, patches = [], [], [], [], []
    for s in stages:
        w = _shape(bb, f"patch_embed{s}.proj.weight")
        dims.append(w[0])
        patches.append(w[-1])
        blocks = _indices(bb, rf"block{s}\.(\d+)\.")
        if blocks != list(range(len(blocks))) or not blocks:
            raise CheckpointError(f"{source}: MiT stage {s} has blocks {blocks}; expected 0..n-1")
        depths.append(len(blocks))
        sr_key = f"block{s}.0.attn.sr.weight"
        srs.append(_shape(bb, sr_key)[-1] if sr_key in bb else 1)
        fc1 = f"block{s}.0.mlp.fc1.weight"
        if fc1 not in bb:
            raise CheckpointError(f"{source}: MiT key {fc1} missing")
        hidden = _shape(bb, fc1)[0]
        if hidden % w[0]:
            raise CheckpointError(f"{source}: {fc1} {_shape(bb, fc1)} is not a multiple of width {w[0]}")
        mlps.append(hidden // w[0])
    return {
        "embed_dims": tuple(dims),
        "depths": tuple(depths),
        "sr_ratios": tuple(srs),
        "mlp_ratios": tuple(mlps),
        "patch_sizes": tuple(patches),
    }


#: (our head kind, head fields, num_classes, description, concat order, notes) of a decode head
HeadFields = tuple[str, dict[str, Any], int, str, str, list[str]]


def _head_fields(head: dict, source: str) -> HeadFields:
    """(our head kind, head fields, num_classes, description, concat order, notes) of a decode head."""
    keys = sorted(head)
    notes: list[str] = []
    if "embed_layers.0.proj.weight" in head:
        return _daformer_head(head, keys, source, notes)
    if "linear_c.0.proj.weight" in head:
        return _segformer_head(head, source, notes)
    if "aspp_modules.0.conv.weight" in head:
        return _dlv2_head(head, source, notes)
    groups = sorted({k.split(".")[0] for k in keys})
    raise CheckpointError(
        f"{source}: unknown decode head (decode_head.{{{', '.join(groups)}}}); supported: DAFormerHead, "
        "SegFormerHead, DLV2Head"
    )


def _daformer_head(head: dict, keys: list[str], source: str, notes: list[str]) -> HeadFields:
    """A DAFormerHead: sep-ASPP fusion (our daformer) or a 1x1 conv fusion (our segformer)."""
    embeds = _indices(head, r"embed_layers\.(\d+)\.proj\.weight$")
    dims = {_shape(head, f"embed_layers.{i}.proj.weight")[0] for i in embeds}
    if len(dims) != 1:
        raise CheckpointError(f"{source}: DAFormerHead with unequal embed dims {sorted(dims)}; unsupported")
    embed = dims.pop()
    if "conv_seg.weight" not in head:
        raise CheckpointError(f"{source}: DAFormerHead without decode_head.conv_seg.weight")
    num_classes, channels = _shape(head, "conv_seg.weight")[:2]
    if channels != embed:
        raise CheckpointError(
            f"{source}: DAFormerHead with embed dims {embed} and {channels} fused channels; our heads "
            "use one width for both (the published configs do)"
        )
    fuse_keys = [k for k in keys if k.startswith("fuse_layer.")]
    if any(k.startswith(("fuse_layer.image_pool.", "fuse_layer.context_layer.")) for k in fuse_keys):
        raise CheckpointError(
            f"{source}: DAFormerHead ASPP fusion with image pooling or a context layer "
            f"({key_listing(sorted({'.'.join(k.split('.')[:2]) for k in fuse_keys}))}); only the published "
            "sep-ASPP without pooling (pool=False) is supported"
        )
    if "fuse_layer.aspp_modules.0.conv.weight" in head:
        branches = _indices(head, r"fuse_layer\.aspp_modules\.(\d+)\.")
        plain_3x3 = [
            b for b in branches[1:] if f"fuse_layer.aspp_modules.{b}.depthwise_conv.conv.weight" not in head
        ]
        if _shape(head, "fuse_layer.aspp_modules.0.conv.weight")[-1] != 1 or plain_3x3:
            raise CheckpointError(
                f"{source}: DAFormerHead ASPP fusion with plain 3x3 branches (sep=False, "
                "daformer_aspp); only the depthwise-separable ASPP (sep=True) is supported"
            )
        if len(branches) not in _ASPP_DILATIONS:
            raise CheckpointError(
                f"{source}: DAFormerHead sep-ASPP with {len(branches)} branches; the dilations are not "
                f"stored in the weights and only the published 4-branch (1, 6, 12, 18) one is known"
            )
        dil = _ASPP_DILATIONS[len(branches)]
        notes.append(f"ASPP dilations {dil} assumed (not stored in the weights; the published config)")
        fields = {"head_channels": channels, "head_dilations": dil}
        return "daformer", fields, num_classes, "DAFormerHead (sep-ASPP fusion)", "", notes
    if "fuse_layer.conv.weight" in head and _shape(head, "fuse_layer.conv.weight")[-1] == 1:
        if "fuse_layer.bn.weight" not in head:
            raise CheckpointError(f"{source}: DAFormerHead 1x1 conv fusion without BatchNorm; unsupported")
        notes.append("DAFormerHead with a 1x1 conv fusion is a SegFormer head: mapped to our segformer_*")
        fields = {"head_channels": channels}
        return "segformer", fields, num_classes, "DAFormerHead (1x1 conv fusion)", "fuse_layer", notes
    raise CheckpointError(
        f"{source}: DAFormerHead with an unsupported fusion "
        f"({key_listing(sorted({'.'.join(k.split('.')[:3]) for k in fuse_keys}))}); supported: the "
        "separable ASPP (daformer_sepaspp) and the 1x1 conv (daformer_conv1)"
    )


def _segformer_head(head: dict, source: str, notes: list[str]) -> HeadFields:
    """The DAFormer repository's SegFormerHead (our segformer)."""
    embed = _shape(head, "linear_c.0.proj.weight")[0]
    if "linear_fuse.conv.weight" not in head or "linear_pred.weight" not in head:
        raise CheckpointError(f"{source}: SegFormerHead without linear_fuse.conv / linear_pred weights")
    if _shape(head, "linear_fuse.conv.weight")[-1] != 1:
        raise CheckpointError(f"{source}: SegFormerHead with conv_kernel_size > 1; only 1 is supported")
    num_classes = _shape(head, "linear_pred.weight")[0]
    if "conv_seg.weight" in head:
        notes.append("SegFormerHead's conv_seg is never used by its forward pass: dropped")
    fields = {"head_channels": embed}
    return "segformer", fields, num_classes, "SegFormerHead", "linear_fuse", notes


def _dlv2_head(head: dict, source: str, notes: list[str]) -> HeadFields:
    """DAFormer's DLV2Head (our deeplabv2)."""
    branches = _indices(head, r"aspp_modules\.(\d+)\.conv\.weight$")
    if len(branches) not in _DLV2_DILATIONS:
        raise CheckpointError(f"{source}: DLV2Head with {len(branches)} branches; expected 2 or 4")
    dil = _DLV2_DILATIONS[len(branches)]
    notes.append(f"DeepLabV2 dilations {dil} assumed (not stored in the weights)")
    num_classes = _shape(head, "aspp_modules.0.conv.weight")[0]
    return "deeplabv2", {"head_dilations": dil}, num_classes, "DLV2Head", "", notes


# ----------------------------------------------------------------------------- HRDA

_HRDA_PARTS = ("head.", "scale_attention.")
# MultiResSpec fields read from the config's ``model = dict(...)``: those the inference form uses
# (a value our model cannot take is an error) and training-only ones (such a value is ignored)
_HRDA_INFERENCE_FIELDS = (
    "scales",
    "hr_crop_size",
    "hr_slide_inference",
    "hr_slide_overlapping",
    "blur_hr_crop",
)
_HRDA_TRAINING_FIELDS = ("crop_coord_divisible", "feature_scale")
_HRDA_HEAD_FIELDS = ("hr_loss_weight", "lr_loss_weight")  # of model.decode_head (HRDAHead)
_UNREADABLE = object()  # a config value that is not plain data


def is_hrda_head(head: dict) -> bool:
    """True for the ``decode_head.*`` weights (prefix removed) of the reference's ``HRDAHead``."""
    return any(isinstance(k, str) and k.startswith(_HRDA_PARTS) for k in head)


def split_hrda_head(head: dict[str, torch.Tensor], source: str) -> tuple[dict, dict]:
    """(single-scale head, scale-attention head) of an ``HRDAHead``'s weights, prefixes removed.

    The attention part is empty for a fixed attention (``fixed_attention``: no module).
    """
    seg = {k[len("head.") :]: v for k, v in head.items() if k.startswith("head.")}
    att = {k[len("scale_attention.") :]: v for k, v in head.items() if k.startswith("scale_attention.")}
    stray = sorted(k for k in head if not k.startswith(_HRDA_PARTS))
    if stray:
        raise CheckpointError(
            f"{source}: an HRDA decode head with keys outside decode_head.head.* and "
            f"decode_head.scale_attention.*: {key_listing(f'decode_head.{k}' for k in stray)}"
        )
    if not seg:
        raise CheckpointError(
            f"{source}: an HRDA decode head without its segmentation head (decode_head.head.*); it has "
            f"{key_listing(f'decode_head.{k}' for k in sorted(head))}"
        )
    return seg, att


def _attention_fields(
    att: dict[str, torch.Tensor],
    kind: str,
    order: str,
    seg_fields: dict[str, Any],
    num_classes: int,
    levels: int,
    source: str,
) -> tuple[dict[str, Any], str]:
    """MultiResSpec fields the scale-attention weights show, and the attention head in words.

    ``attention_classwise`` (K outputs, or 1) and ``attention_channels`` (its width where it
    differs from the segmentation head's). The reference builds it from the single-scale head's
    config: a DAFormerHead ``attention_embed_dim`` wide whose sep-ASPP fusion becomes a 1x1
    ConvModule, or a second DLV2Head.
    """
    where = "decode_head.scale_attention"
    width = None
    if kind == "deeplabv2":
        branches = _indices(att, r"aspp_modules\.(\d+)\.conv\.weight$")
        if len(branches) != len(seg_fields["head_dilations"]):
            raise CheckpointError(
                f"{source}: HRDA scale attention with {len(branches)} DLV2 branches "
                f"({where}.aspp_modules.*); the segmentation head has {len(seg_fields['head_dilations'])}"
            )
        out = _shape(att, "aspp_modules.0.conv.weight")[0]
        desc = "DLV2Head"
    elif order != "linear_fuse":  # DAFormerHead: sep-ASPP (our daformer) or 1x1 conv (our segformer)
        needed = [f"embed_layers.{i}.proj.weight" for i in range(levels)]
        needed += ["fuse_layer.conv.weight", "fuse_layer.bn.weight", "conv_seg.weight"]
        missing = [k for k in needed if k not in att]
        if missing:
            raise CheckpointError(
                f"{source}: HRDA scale attention (a DAFormerHead with a 1x1 conv fusion) without "
                f"{key_listing(f'{where}.{k}' for k in missing)}"
            )
        width = _shape(att, "embed_layers.0.proj.weight")[0]
        out, channels = _shape(att, "conv_seg.weight")[:2]
        fuse = _shape(att, "fuse_layer.conv.weight")
        if channels != width or fuse != (width, width * levels, 1, 1):
            raise CheckpointError(
                f"{source}: HRDA scale attention with embed width {width}, fusion conv {fuse} "
                f"({where}.fuse_layer.conv.weight) and {channels} classifier inputs; expected one width "
                "and a 1x1 fusion over the concatenated levels (the reference's attention_embed_dim)"
            )
        desc = f"DAFormerHead (1x1 conv fusion, {width} channels)"
    else:
        raise CheckpointError(
            f"{source}: an HRDA decode head over a SegFormerHead (decode_head.head.linear_c.*); the "
            "reference's HRDAHead takes a DAFormerHead or a DLV2Head"
        )
    if out not in (1, num_classes):
        raise CheckpointError(
            f"{source}: HRDA scale attention with {out} outputs; expected 1 or one per class ({num_classes})"
        )
    fields: dict[str, Any] = {"attention_classwise": out == num_classes and num_classes > 1}
    if width is not None and width != seg_fields.get("head_channels"):
        fields["attention_channels"] = width
    return fields, desc


def _config_value(node: ast.AST) -> Any:
    """Plain data of a config expression (literals; ``dict(k=v)``, lists, tuples and dicts of
    them), else ``_UNREADABLE``. Nothing is evaluated: the syntax tree is only read."""
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id != "dict" or node.args:
            return _UNREADABLE
        if any(kw.arg is None for kw in node.keywords):
            return _UNREADABLE
        return {kw.arg: _config_value(kw.value) for kw in node.keywords}
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_config_value(e) for e in node.elts]
        if any(i is _UNREADABLE for i in items):
            return _UNREADABLE
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        keys = [_config_value(k) if k is not None else _UNREADABLE for k in node.keys]
        if not all(isinstance(k, str) for k in keys):
            return _UNREADABLE
        return {k: _config_value(v) for k, v in zip(keys, node.values, strict=True)}
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return _UNREADABLE


def reference_config_model(meta: Any) -> dict[str, Any] | None:
    """The ``model = dict(...)`` of the mmcv config text in ``meta['config']`` as plain data.

    mmseg's ``train.py`` stores the merged config there (``cfg.pretty_text``: Python source).
    It is parsed with :func:`ast.parse` and read as data; nothing in it is executed. Values that
    are not plain data are ``_UNREADABLE``. None without a config text or a ``model`` dict.
    """
    text = meta.get("config") if isinstance(meta, dict) else None
    if not isinstance(text, str):
        return None
    try:
        tree = ast.parse(text, mode="exec")
        model = None
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "model" for t in node.targets
            ):
                model = _config_value(node.value)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    return model if isinstance(model, dict) else None


def _as_scales(value: Any) -> Any:
    """The reference sorts ``scales`` ([1, 0.5] -> (0.5, 1.0)); others pass to the validation."""
    if isinstance(value, (list, tuple)) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    ):
        return tuple(sorted(float(v) for v in value))
    return value


def hrda_settings(
    meta: Any, from_weights: dict[str, Any], source: str
) -> tuple[dict[str, Any], list[str], list[str]]:
    """The MultiResSpec of an HRDA checkpoint: ``(fields as MultiResSpec.to_dict(), notes, warnings)``.

    ``from_weights`` (attention_classwise, attention_channels; nothing with a fixed attention) wins;
    the rest comes from the ``model`` of ``meta['config']`` (:func:`reference_config_model`):
    ``scales`` (sorted, as the reference does), ``hr_crop_size``, ``hr_slide_inference``,
    ``hr_slide_overlapping``, ``blur_hr_crop``, ``crop_coord_divisible``, ``feature_scale`` and the
    head's ``hr_loss_weight``, ``lr_loss_weight``, ``fixed_attention``. A field the config does not
    set keeps the published GTA->Cityscapes value (MultiResSpec default). Without such a config
    every field is that default and the warnings say so.
    """
    notes: list[str] = []
    warns: list[str] = []
    cfg = _hrda_config(meta, warns)
    found = _read_hrda_config(cfg, from_weights, notes, warns) if cfg is not None else {}
    fields = _hrda_inference_fields(found, source)
    _hrda_attention(fields, found, from_weights, warns, source)
    for name in (*_HRDA_TRAINING_FIELDS, *_HRDA_HEAD_FIELDS):
        if name not in found:
            continue
        try:
            MultiResSpec(**{**fields, name: found[name]})
        except (TypeError, ValueError) as exc:
            notes.append(f"meta['config'] {name}={found[name]!r} ignored (training only; {exc})")
            continue
        fields[name] = found[name]
    try:
        spec = MultiResSpec(**fields)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: HRDA settings {fields}: {exc}") from None
    if cfg is not None:
        read = sorted(k for k in found if k in fields and fields[k] == found[k])
        kept = sorted(
            k for k in (*_HRDA_INFERENCE_FIELDS, *_HRDA_TRAINING_FIELDS, *_HRDA_HEAD_FIELDS) if k not in found
        )
        notes.append(f"HRDA settings read from meta['config']: {', '.join(read) or 'none'}")
        if kept:
            notes.append(f"not in meta['config'], published defaults kept: {', '.join(kept)}")
    return spec.to_dict(), notes, warns


def _hrda_config(meta: Any, warns: list[str]) -> dict[str, Any] | None:
    """The ``model`` of ``meta['config']`` when it is an HRDAEncoderDecoder, else None (warned)."""
    cfg = reference_config_model(meta)
    if cfg is not None and cfg.get("type") != "HRDAEncoderDecoder":
        warns.append(
            f"meta['config'] describes a model of type {cfg.get('type')!r}, not HRDAEncoderDecoder: "
            "its settings are not used"
        )
        cfg = None
    if cfg is None:
        defaults = MultiResSpec()
        warns.append(
            "no HRDA settings in the checkpoint (meta['config']): the published GTA->Cityscapes HRDA "
            f"settings are assumed (scales {defaults.scales}, hr_crop_size {defaults.hr_crop_size}, "
            f"hr_slide_inference {defaults.hr_slide_inference}, hr_slide_overlapping "
            f"{defaults.hr_slide_overlapping})"
        )
    return cfg


def _read_hrda_config(
    cfg: dict[str, Any], from_weights: dict[str, Any], notes: list[str], warns: list[str]
) -> dict[str, Any]:
    """The MultiResSpec fields an HRDA ``model`` config sets (plain data only)."""
    found: dict[str, Any] = {}
    head = cfg.get("decode_head") if isinstance(cfg.get("decode_head"), dict) else {}
    for name in (*_HRDA_INFERENCE_FIELDS, *_HRDA_TRAINING_FIELDS):
        if name in cfg:
            found[name] = cfg[name]
    for name in (*_HRDA_HEAD_FIELDS, "fixed_attention"):
        if name in head:
            found[name] = head[name]
    unreadable = sorted(k for k, v in found.items() if v is _UNREADABLE)
    if unreadable:
        warns.append(f"meta['config']: {unreadable} not plain data; published defaults kept")
    found = {k: v for k, v in found.items() if v is not _UNREADABLE}
    if "scales" in found:
        found["scales"] = _as_scales(found["scales"])
    if isinstance(found.get("hr_crop_size"), list):
        found["hr_crop_size"] = tuple(found["hr_crop_size"])
    if "hr_crop_size" in found and found["hr_crop_size"] is None:
        del found["hr_crop_size"]
        notes.append("meta['config'] has hr_crop_size None (no detail crop): the default window kept")
    said = head.get("attention_classwise")
    if isinstance(said, bool) and said != from_weights.get("attention_classwise", said):
        has = "one map per class" if from_weights["attention_classwise"] else "one map"
        warns.append(
            f"meta['config'] says attention_classwise={said} but the attention weights have {has}: "
            "the weights are followed"
        )
    test_cfg = cfg.get("test_cfg") if isinstance(cfg.get("test_cfg"), dict) else {}
    if test_cfg.get("mode") == "slide":
        notes.append(
            f"the reference evaluates this model with sliding windows of {test_cfg.get('crop_size')} "
            f"every {test_cfg.get('stride')} (here: train.eval_mode slide, train.eval_crop, "
            "train.eval_stride)"
        )

    return found


def _hrda_inference_fields(found: dict[str, Any], source: str) -> dict[str, Any]:
    """The inference fields of ``found`` with ``feature_scale``; they must fit (an error)."""
    fields = {k: found[k] for k in _HRDA_INFERENCE_FIELDS if k in found}
    lr_scale = fields["scales"][0] if isinstance(fields.get("scales"), tuple) and fields["scales"] else 0.5
    try:
        MultiResSpec(**fields, feature_scale=lr_scale)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{source}: the HRDA settings of meta['config'] ({fields}) do not fit this project's HRDA "
            f"model: {exc}"
        ) from None
    fields["feature_scale"] = lr_scale
    return fields


def _hrda_attention(
    fields: dict[str, Any], found: dict[str, Any], from_weights: dict[str, Any], warns: list[str], source: str
) -> None:
    """The learned attention the weights show, or the config's ``fixed_attention``, into ``fields``."""
    fixed = found.pop("fixed_attention", None)
    if from_weights:
        if fixed is not None:
            warns.append(
                f"meta['config'] sets fixed_attention={fixed!r} but the checkpoint has a scale-attention "
                "head: the learned attention is used"
            )
        fields.update(from_weights)
    elif fixed is None:
        raise CheckpointError(
            f"{source}: an HRDA checkpoint without a scale-attention head (decode_head.scale_attention.*) "
            "and without fixed_attention in meta['config']; the constant attention is not in the weights"
        )
    else:
        fields["fixed_attention"] = fixed


def infer_architecture(
    net: dict[str, torch.Tensor], source: str, model_name: str | None = None, meta: Any = None
) -> ReferenceArch:
    """Our model name, class count and overrides for a reference network's weights.

    With ``model_name`` that recipe is used and only the fields visible in the weights that differ
    from it become overrides; without, the recipe is searched: same backbone family and head type,
    same stage widths and depths (MiT attention heads are not in the weights), fewest overrides.
    An HRDA decode head (``decode_head.head.*`` + ``decode_head.scale_attention.*``) is recognised
    from its single-scale head; ``arch.hrda`` then holds the multi-resolution settings
    (:func:`hrda_settings`, read from ``meta['config']`` where it has them).
    """
    bb = {k[len("backbone.") :]: v for k, v in net.items() if k.startswith("backbone.")}
    head = {k[len("decode_head.") :]: v for k, v in net.items() if k.startswith("decode_head.")}
    others = sorted({k.split(".")[0] for k in net} - {"backbone", "decode_head"})
    if others:
        raise CheckpointError(f"{source}: unexpected parts {others} beside backbone and decode_head")
    if not bb or not head:
        raise CheckpointError(f"{source}: expected backbone.* and decode_head.* weights")
    hrda_parts = split_hrda_head(head, source) if is_hrda_head(head) else None
    seg_head = hrda_parts[0] if hrda_parts else head
    kind, head_fields, num_classes, head_desc, order, notes = _head_fields(seg_head, source)
    hrda, warns = None, []
    if hrda_parts is not None:
        head_desc, hrda, warns = _hrda_head(
            hrda_parts, kind, order, head_fields, num_classes, head_desc, meta, source, notes
        )
    family, fields, backbone_desc = _backbone_fields(bb, source, notes)
    fields.update(head_fields)
    described = f"{backbone_desc} + {head_desc}"
    if model_name is not None:
        name, overrides = _named_recipe(model_name, family, kind, fields, described, source)
    else:
        name, overrides = _closest_recipe(family, kind, fields, described, source)
    return ReferenceArch(
        name=name,
        num_classes=num_classes,
        overrides=_json_ready(overrides),
        backbone=backbone_desc,
        head=head_desc,
        head_kind=kind,
        segformer_order=order,
        notes=notes,
        hrda=hrda,
        warnings=warns,
    )


def _hrda_head(
    hrda_parts: tuple[dict, dict],
    kind: str,
    order: str,
    head_fields: dict[str, Any],
    num_classes: int,
    head_desc: str,
    meta: Any,
    source: str,
    notes: list[str],
) -> tuple[str, dict[str, Any], list[str]]:
    """(head in words, MultiResSpec fields, warnings) of an HRDAHead; its notes go to ``notes``."""
    seg, att = hrda_parts
    from_weights: dict[str, Any] = {}
    att_desc = "fixed (no learned)"
    if att:
        levels = len(_indices(seg, r"embed_layers\.(\d+)\.proj\.weight$"))
        from_weights, att_desc = _attention_fields(att, kind, order, head_fields, num_classes, levels, source)
    head_desc = f"HRDAHead over {head_desc} with a {att_desc} scale attention"
    hrda, hrda_notes, warns = hrda_settings(meta, from_weights, source)
    notes += [*warns, *hrda_notes]
    return head_desc, hrda, warns


def _backbone_fields(bb: dict, source: str, notes: list[str]) -> tuple[str, dict[str, Any], str]:
    """(our backbone family, its fields, the reference backbone in words)."""
    if "patch_embed1.proj.weight" in bb:
        family, fields = "mit", _mit_fields(bb, source)
        backbone_desc = f"MiT {fields['embed_dims']} depths {fields['depths']}"
    elif "stem.0.weight" in bb:
        family = "resnet"
        layers = tuple(len(_indices(bb, rf"layer{i}\.(\d+)\.")) for i in range(1, 5))
        if "stem.6.weight" not in bb or "layer1.0.conv3.weight" not in bb:
            raise CheckpointError(f"{source}: ResNetV1c backbone without stem.6 or Bottleneck conv3 weights")
        fields = {
            "layers": layers,
            "width": _shape(bb, "stem.6.weight")[0],
            "block": "bottleneck",
            "stem": "deep",
            "contract_dilation": True,
        }
        notes.append("ResNetV1c dilations (1, 1, 2, 4) with contract_dilation assumed (the reference config)")
        backbone_desc = f"ResNetV1c layers {layers}"
    else:
        groups = sorted({k.split(".")[0] for k in bb})
        raise CheckpointError(
            f"{source}: unknown backbone (backbone.{{{', '.join(groups[:8])}}}); supported: MiT "
            "(patch_embed1..4, block1..4), ResNetV1c (stem.*, layer1..4) with DLV2Head"
        )
    return family, fields, backbone_desc


def _needed(name: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The ``fields`` that differ from recipe ``name``'s defaults: its overrides."""
    defaults = allowed_overrides(name)
    return {k: v for k, v in fields.items() if k in defaults and _as_tuple(defaults[k]) != _as_tuple(v)}


def _named_recipe(
    model_name: str, family: str, kind: str, fields: dict[str, Any], described: str, source: str
) -> tuple[str, dict[str, Any]]:
    """``model_name`` and its overrides, when that recipe has this backbone and head."""
    r = RECIPES.get(model_name)
    if r is None:
        raise ConfigError(f"model {model_name!r}: unknown; expected one of {', '.join(RECIPES)}")
    if (r.backbone, r.head) != (family, kind):
        raise CheckpointError(
            f"{source}: holds a {described} network (our {family} backbone with a "
            f"{kind} head); model {model_name!r} is {r.backbone} + {r.head}"
        )
    return model_name, _needed(model_name, fields)


def _closest_recipe(
    family: str, kind: str, fields: dict[str, Any], described: str, source: str
) -> tuple[str, dict[str, Any]]:
    """The recipe of this backbone and head, with these widths and depths, needing fewest overrides."""
    # fields a recipe must have as they are (MiT heads follow the widths; a stem is a stem)
    shape_fields = ("embed_dims", "depths") if family == "mit" else ("layers", "width", "stem")
    candidates = []
    for cand, r in RECIPES.items():
        if (r.backbone, r.head) != (family, kind):
            continue
        defaults = allowed_overrides(cand)
        if any(f not in defaults or _as_tuple(defaults[f]) != _as_tuple(fields[f]) for f in shape_fields):
            continue
        over = _needed(cand, fields)
        candidates.append((len(over), cand, over))
    if not candidates:
        shown = {f: fields[f] for f in shape_fields}
        hint = (
            "pass the model name (duda convert --model-name) whose attention heads fit these widths"
            if family == "mit"
            else "this installation has no such model (DeepLabV2 on ResNetV1c needs deeplabv2red_*)"
        )
        raise CheckpointError(
            f"{source}: a {described} network with {shown}, which matches none of "
            f"our {family}+{kind} models; {hint}"
        )
    _, name, overrides = min(candidates)
    return name, overrides


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _json_ready(overrides: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}

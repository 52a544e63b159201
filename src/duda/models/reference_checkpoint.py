"""Published DAFormer / MIC (mmseg) checkpoints: read them safely, recognise, convert to our models.

The reference code saves ``latest.pth`` with mmcv's ``save_checkpoint``: ``{"meta": ...,
"state_dict": ..., "optimizer": ...}``. For a UDA run the state dict holds up to three
``EncoderDecoder`` networks: ``model.*`` (the trained network, the one the reference evaluates),
``ema_model.*`` (its EMA teacher) and ``imnet_model.*`` (the frozen ImageNet model of the feature
distance). A plain mmseg run holds one network without a prefix (``backbone.*``,
``decode_head.*``).

Supported architectures (the layout follows the reference module names):

- backbone MiT (``MixVisionTransformer``, ``patch_embed{s}``, ``block{s}.{j}``, ``norm{s}``):
  mapped by :func:`duda.models.pretrained.mit_checkpoint_to_backbone` (fused ``kv`` split into key
  and value). The variant (B0..B5) is recognised from the stage widths and block counts.
- head ``DAFormerHead`` with the separable-ASPP fusion (the published DAFormer / MIC head,
  ``configs/_base_/models/daformer_sepaspp_mitb5.py``) -> our ``daformer_*`` models;
  ``DAFormerHead`` with a 1x1 conv fusion (``daformer_conv1_mitb5.py``) and the DAFormer repository's
  ``SegFormerHead`` -> our ``segformer_*`` models (same function; the fused channels are reordered
  because the reference concatenates the finest level first and our SegFormer head the coarsest).
- ``DLV2Head`` on ``ResNetV1c`` (DAFormer's ``deeplabv2red``): only when this installation has the
  ``deeplabv2red_r101`` model; the backbone keys go through
  :func:`duda.models.pretrained.resnet_checkpoint_to_backbone`.
- HRDA and MIC(HRDA) (``HRDAEncoderDecoder`` + ``HRDAHead``): ``decode_head.head.*`` is the
  single-scale head (any of the above that the reference's HRDAHead takes: DAFormerHead or
  DLV2Head), ``decode_head.scale_attention.*`` the scale-attention head (for DAFormerHead the same
  embeddings, ``attention_embed_dim`` wide, with a 1x1 conv fusion) -> our
  :class:`~duda.models.hrda.HRDAModel` (``head.seg.*``, ``head.attention.*``). What its weights show
  (class-wise attention or one map, the attention width) is taken from them; the multi-resolution
  settings (``scales``, ``hr_crop_size``, ``hr_slide_inference``, ...) from the mmcv config text in
  ``meta['config']`` when it is there (parsed with :mod:`ast` as data, never executed), else the
  published GTA->Cityscapes HRDA settings (:class:`~duda.models.hrda.MultiResSpec` defaults), with a
  warning.

Not supported, with an error naming the keys: ASPP fusions with image pooling or non-separable 3x3
branches, other heads and backbones.

What the weights do not store is assumed from the published configs and reported as a note:
the ASPP dilations (1, 6, 12, 18) for 4 branches, DeepLabV2's (6, 12) / (6, 12, 18, 24), the MiT
attention heads (those of the recognised variant), normalisation (ImageNet mean/std on RGB).
"""

from __future__ import annotations

import ast
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from duda.errors import CheckpointError, ConfigError
from duda.log import logger
from duda.models.pretrained import state_mismatches

# Networks of a UDA checkpoint and the names a user may give them.
NETWORKS = ("model", "ema_model", "imnet_model")
NETWORK_ALIASES = {
    "model": "model",
    "student": "model",
    "ema_model": "ema_model",
    "teacher": "ema_model",
    "ema": "ema_model",
    "imnet_model": "imnet_model",
    "imnet": "imnet_model",
}
# The reference's Cityscapes test scale (W, H), keep-ratio: stored in converted deploy folders.
REFERENCE_TEST_SCALE = (1024, 512)
# HRDA's (the high-resolution Cityscapes pipeline, uda_gtaHR_to_cityscapesHR_1024x1024.py).
HRDA_TEST_SCALE = (2048, 1024)
_ASPP_DILATIONS = {4: (1, 6, 12, 18)}  # DAFormer's sep-ASPP, by number of branches
_DLV2_DILATIONS = {2: (6, 12), 4: (6, 12, 18, 24)}  # deeplabv2red / deeplabv2


# ----------------------------------------------------------------------------- reading the file


def strip_command(path: str | os.PathLike) -> str:
    """A one-line command that rewrites ``path`` keeping the weights and the classes/palette only.

    It loads with ``weights_only=False`` and so runs the file's pickled code: run it only on a
    file from a source you trust.
    """
    src = str(path)
    dst = str(Path(src).with_name(Path(src).stem + "_weights.pth"))
    return (
        "python -c \"import torch; c = torch.load('" + src + "', map_location='cpu', weights_only=False); "
        "m = c.get('meta') or {}; "
        "torch.save({'state_dict': c['state_dict'], 'meta': {k: [[int(x) for x in v] if k == 'PALETTE' "
        "else str(v) for v in m[k]] for k in ('CLASSES', 'PALETTE') if m.get(k) is not None}}, '"
        + dst
        + "')\""
    )


def _numpy_safe_globals(names: list[str]) -> list[tuple[Any, str]] | None:
    """``(object, pickled name)`` pairs when every name is a numpy array/scalar/dtype constructor.

    These rebuild plain arrays from bytes (object arrays unpickle their items through the same
    restricted unpickler), so they are as safe to allow as the tensors themselves. The pickled name
    is kept because files written with numpy 1 say ``numpy.core`` where numpy 2 has ``numpy._core``.
    None when any name is something else.
    """
    core = getattr(np, "_core", None) or np.core
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25; older numpy pickles dtypes as numpy.dtype
    out: list[tuple[Any, str]] = []
    for name in names:
        module, _, attr = name.rpartition(".")
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and attr in (
            "_reconstruct",
            "scalar",
        ):
            out.append((getattr(core.multiarray, attr), name))
        elif name in ("numpy.ndarray", "numpy.dtype"):
            out.append((getattr(np, attr), name))
        elif module == "numpy.dtypes" and isinstance(getattr(dtypes, attr, None), type):
            out.append((getattr(dtypes, attr), name))
        else:
            return None
    if out:  # a rebuilt dtype is an instance of its class (numpy.dtypes.Int64DType, ...)
        if dtypes is not None:
            classes = [t for t in vars(dtypes).values() if _is_dtype_class(t)]
        else:  # numpy < 1.25: the same classes, reachable only through their instances
            classes = sorted({type(np.dtype(t)) for t in set(np.sctypeDict.values())}, key=str)
        out += [(t, f"{t.__module__}.{t.__name__}") for t in classes]
    return out


def _is_dtype_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, np.dtype) and obj is not np.dtype


def read_reference_file(path: str | os.PathLike) -> dict:
    """Load a checkpoint with ``weights_only=True``.

    mmcv stores a ``meta`` entry next to the weights; plain data loads as is, numpy arrays and
    scalars are rebuilt through an allowlist, and anything else (pickled classes) is refused with
    an error that names the objects and gives the command that strips them once.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        data = _load_with_numpy(path)
    except Exception as exc:  # truncated file, not a torch file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict (a checkpoint), got {type(data).__name__}")
    return data


def _load_with_numpy(path: Path) -> dict:
    try:
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    allowed = _numpy_safe_globals(names)
    if allowed is None:
        refused = [n for n in names if _numpy_safe_globals([n]) is None]
        raise CheckpointError(
            f"{path}: holds pickled Python objects ({', '.join(refused)}) that are not loaded without "
            "running their code (weights are read with torch.load(weights_only=True)). mmcv stores such "
            "objects in the checkpoint's 'meta' or 'optimizer' entries, not in the weights. If the file "
            "comes from a source you trust, strip them once and use the new file:\n  " + strip_command(path)
        )
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None


# ----------------------------------------------------------------------------- recognising it


def is_reference_checkpoint(ckpt: Any) -> bool:
    """True for an mmseg checkpoint: a ``state_dict`` of a UDA wrapper or of one segmentor."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        return False
    keys = ckpt["state_dict"].keys()
    return any(
        isinstance(k, str) and k.startswith(tuple(f"{n}.backbone." for n in NETWORKS) + ("backbone.",))
        for k in keys
    )


def reference_networks(state: dict[str, torch.Tensor]) -> list[str]:
    """Networks present in a reference state dict (``model`` for a bare segmentor)."""
    found = [n for n in NETWORKS if any(k.startswith(f"{n}.backbone.") for k in state)]
    if not found and any(k.startswith("backbone.") for k in state):
        found = ["model"]
    return found


def network_state(state: dict[str, torch.Tensor], which: str, source: str) -> dict[str, torch.Tensor]:
    """The ``backbone.*`` / ``decode_head.*`` weights of network ``which`` (an alias is accepted)."""
    name = NETWORK_ALIASES.get(which)
    have = reference_networks(state)
    if name is None or name not in have:
        aliases = ", ".join(f"{a} ({n})" for a, n in NETWORK_ALIASES.items() if n in have and a != n)
        raise CheckpointError(
            f"{source}: no network {which!r} in this mmseg checkpoint; it holds {have}"
            + (f" (also called {aliases})" if aliases else "")
        )
    if any(k.startswith(f"{name}.backbone.") for k in state):
        prefix = f"{name}."
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return {k: v for k, v in state.items() if k.startswith(("backbone.", "decode_head."))}


# ----------------------------------------------------------------------------- architecture


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


def _listing(keys, limit: int = 8) -> str:
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


def _head_fields(head: dict, source: str) -> tuple[str, dict[str, Any], int, str, str, list[str]]:
    """(our head kind, head fields, num_classes, description, concat order, notes) of a decode head."""
    keys = sorted(head)
    notes: list[str] = []
    if "embed_layers.0.proj.weight" in head:
        embeds = _indices(head, r"embed_layers\.(\d+)\.proj\.weight$")
        dims = {_shape(head, f"embed_layers.{i}.proj.weight")[0] for i in embeds}
        if len(dims) != 1:
            raise CheckpointError(
                f"{source}: DAFormerHead with unequal embed dims {sorted(dims)}; unsupported"
            )
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
                f"({_listing(sorted({'.'.join(k.split('.')[:2]) for k in fuse_keys}))}); only the published "
                "sep-ASPP without pooling (pool=False) is supported"
            )
        if "fuse_layer.aspp_modules.0.conv.weight" in head:
            branches = _indices(head, r"fuse_layer\.aspp_modules\.(\d+)\.")
            plain_3x3 = [
                b
                for b in branches[1:]
                if f"fuse_layer.aspp_modules.{b}.depthwise_conv.conv.weight" not in head
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
                raise CheckpointError(
                    f"{source}: DAFormerHead 1x1 conv fusion without BatchNorm; unsupported"
                )
            notes.append("DAFormerHead with a 1x1 conv fusion is a SegFormer head: mapped to our segformer_*")
            fields = {"head_channels": channels}
            return "segformer", fields, num_classes, "DAFormerHead (1x1 conv fusion)", "fuse_layer", notes
        raise CheckpointError(
            f"{source}: DAFormerHead with an unsupported fusion "
            f"({_listing(sorted({'.'.join(k.split('.')[:3]) for k in fuse_keys}))}); supported: the "
            "separable ASPP (daformer_sepaspp) and the 1x1 conv (daformer_conv1)"
        )
    if "linear_c.0.proj.weight" in head:
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
    if "aspp_modules.0.conv.weight" in head:
        branches = _indices(head, r"aspp_modules\.(\d+)\.conv\.weight$")
        if len(branches) not in _DLV2_DILATIONS:
            raise CheckpointError(f"{source}: DLV2Head with {len(branches)} branches; expected 2 or 4")
        dil = _DLV2_DILATIONS[len(branches)]
        notes.append(f"DeepLabV2 dilations {dil} assumed (not stored in the weights)")
        num_classes = _shape(head, "aspp_modules.0.conv.weight")[0]
        return "deeplabv2", {"head_dilations": dil}, num_classes, "DLV2Head", "", notes
    groups = sorted({k.split(".")[0] for k in keys})
    raise CheckpointError(
        f"{source}: unknown decode head (decode_head.{{{', '.join(groups)}}}); supported: DAFormerHead, "
        "SegFormerHead, DLV2Head"
    )


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
            f"decode_head.scale_attention.*: {_listing(f'decode_head.{k}' for k in stray)}"
        )
    if not seg:
        raise CheckpointError(
            f"{source}: an HRDA decode head without its segmentation head (decode_head.head.*); it has "
            f"{_listing(f'decode_head.{k}' for k in sorted(head))}"
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
                f"{_listing(f'{where}.{k}' for k in missing)}"
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
    from duda.models.hrda import MultiResSpec

    notes: list[str] = []
    warns: list[str] = []
    cfg = reference_config_model(meta)
    if cfg is not None and cfg.get("type") != "HRDAEncoderDecoder":
        warns.append(
            f"meta['config'] describes a model of type {cfg.get('type')!r}, not HRDAEncoderDecoder: "
            "its settings are not used"
        )
        cfg = None
    found: dict[str, Any] = {}
    if cfg is None:
        defaults = MultiResSpec()
        warns.append(
            "no HRDA settings in the checkpoint (meta['config']): the published GTA->Cityscapes HRDA "
            f"settings are assumed (scales {defaults.scales}, hr_crop_size {defaults.hr_crop_size}, "
            f"hr_slide_inference {defaults.hr_slide_inference}, hr_slide_overlapping "
            f"{defaults.hr_slide_overlapping})"
        )
    else:
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

    # the inference fields must fit (an error), the training-only ones may be dropped (a note)
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
    from duda.models.factory import RECIPES, allowed_overrides

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
        seg, att = hrda_parts
        from_weights: dict[str, Any] = {}
        att_desc = "fixed (no learned)"
        if att:
            levels = len(_indices(seg, r"embed_layers\.(\d+)\.proj\.weight$"))
            from_weights, att_desc = _attention_fields(
                att, kind, order, head_fields, num_classes, levels, source
            )
        head_desc = f"HRDAHead over {head_desc} with a {att_desc} scale attention"
        hrda, hrda_notes, warns = hrda_settings(meta, from_weights, source)
        notes += [*warns, *hrda_notes]

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
    fields.update(head_fields)

    def needed(name: str) -> dict[str, Any]:
        defaults = allowed_overrides(name)
        return {k: v for k, v in fields.items() if k in defaults and _as_tuple(defaults[k]) != _as_tuple(v)}

    if model_name is not None:
        r = RECIPES.get(model_name)
        if r is None:
            raise ConfigError(f"model {model_name!r}: unknown; expected one of {', '.join(RECIPES)}")
        if (r.backbone, r.head) != (family, kind):
            raise CheckpointError(
                f"{source}: holds a {backbone_desc} + {head_desc} network (our {family} backbone with a "
                f"{kind} head); model {model_name!r} is {r.backbone} + {r.head}"
            )
        name, overrides = model_name, needed(model_name)
    else:
        # fields a recipe must have as they are (MiT heads follow the widths; a stem is a stem)
        shape_fields = ("embed_dims", "depths") if family == "mit" else ("layers", "width", "stem")
        candidates = []
        for cand, r in RECIPES.items():
            if (r.backbone, r.head) != (family, kind):
                continue
            defaults = allowed_overrides(cand)
            if any(f not in defaults or _as_tuple(defaults[f]) != _as_tuple(fields[f]) for f in shape_fields):
                continue
            over = needed(cand)
            candidates.append((len(over), cand, over))
        if not candidates:
            shown = {f: fields[f] for f in shape_fields}
            hint = (
                "pass the model name (duda convert --model-name) whose attention heads fit these widths"
                if family == "mit"
                else "this installation has no such model (DeepLabV2 on ResNetV1c needs deeplabv2red_*)"
            )
            raise CheckpointError(
                f"{source}: a {backbone_desc} + {head_desc} network with {shown}, which matches none of "
                f"our {family}+{kind} models; {hint}"
            )
        _, name, overrides = min(candidates)
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


def _as_tuple(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _json_ready(overrides: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()}


# ----------------------------------------------------------------------------- key mapping


def _linear_to_conv(t: torch.Tensor) -> torch.Tensor:
    """nn.Linear weight (out, in) -> 1x1 conv weight (out, in, 1, 1); biases pass through."""
    return t.reshape(*t.shape, 1, 1) if t.ndim == 2 else t


def _reverse_levels(t: torch.Tensor, levels: int) -> torch.Tensor:
    """Fuse-conv weight whose input blocks are finest-first -> coarsest-first (our SegFormer head)."""
    if t.ndim != 4:
        return t
    return torch.cat(list(t.chunk(levels, dim=1))[::-1], dim=1)


_Rule = tuple[str, str, Callable[[torch.Tensor], torch.Tensor] | None]

_DAFORMER_RULES: list[_Rule] = [
    (r"embed_layers\.(\d+)\.proj\.(weight|bias)", r"embed.\1.\2", _linear_to_conv),
    (r"fuse_layer\.aspp_modules\.(\d+)\.conv\.(.+)", r"fuse.branches.\1.0.\2", None),
    (r"fuse_layer\.aspp_modules\.(\d+)\.bn\.(.+)", r"fuse.branches.\1.1.\2", None),
    (r"fuse_layer\.aspp_modules\.(\d+)\.depthwise_conv\.conv\.(.+)", r"fuse.branches.\1.0.0.\2", None),
    (r"fuse_layer\.aspp_modules\.(\d+)\.depthwise_conv\.bn\.(.+)", r"fuse.branches.\1.0.1.\2", None),
    (r"fuse_layer\.aspp_modules\.(\d+)\.pointwise_conv\.conv\.(.+)", r"fuse.branches.\1.1.0.\2", None),
    (r"fuse_layer\.aspp_modules\.(\d+)\.pointwise_conv\.bn\.(.+)", r"fuse.branches.\1.1.1.\2", None),
    (r"fuse_layer\.bottleneck\.conv\.(.+)", r"fuse.bottleneck.0.\1", None),
    (r"fuse_layer\.bottleneck\.bn\.(.+)", r"fuse.bottleneck.1.\1", None),
    (r"conv_seg\.(weight|bias)", r"classifier.\1", None),
]
_DAFORMER_CONV1_RULES: list[_Rule] = [
    (r"embed_layers\.(\d+)\.proj\.(weight|bias)", r"embed.\1.\2", _linear_to_conv),
    (r"fuse_layer\.conv\.(.+)", r"fuse.0.\1", None),  # input blocks reordered below
    (r"fuse_layer\.bn\.(.+)", r"fuse.1.\1", None),
    (r"conv_seg\.(weight|bias)", r"classifier.\1", None),
]
_SEGFORMER_RULES: list[_Rule] = [
    (r"linear_c\.(\d+)\.proj\.(weight|bias)", r"embed.\1.\2", _linear_to_conv),
    (r"linear_fuse\.conv\.(.+)", r"fuse.0.\1", None),  # input blocks reordered below
    (r"linear_fuse\.bn\.(.+)", r"fuse.1.\1", None),
    (r"linear_pred\.(weight|bias)", r"classifier.\1", None),
    (r"conv_seg\.(weight|bias)", "", None),  # built by BaseDecodeHead, never used: dropped
]
_DLV2_RULES: list[_Rule] = [
    (r"aspp_modules\.(\d+)\.conv\.(weight|bias)", r"branches.\1.\2", None),
]


def _head_rules(kind: str, order: str) -> list[_Rule]:
    if kind == "daformer":
        return _DAFORMER_RULES
    if kind == "deeplabv2":
        return _DLV2_RULES
    return _DAFORMER_CONV1_RULES if order == "fuse_layer" else _SEGFORMER_RULES


def _map_part(
    part: dict[str, torch.Tensor],
    rules: list[_Rule],
    out_prefix: str,
    in_prefix: str,
    reorder_levels: int,
    into: str,
    source: str,
) -> dict[str, torch.Tensor]:
    """``part``'s keys (``in_prefix`` removed) through ``rules`` to ``out_prefix``-ed keys; each key
    goes to one place and no two to the same; unmatched keys are an error naming them. With
    ``reorder_levels`` the fuse conv's input blocks are reversed (finest-first -> coarsest-first)."""
    out: dict[str, torch.Tensor] = {}
    unmapped, twice = [], []
    for key, value in part.items():
        for pattern, repl, fn in rules:
            if re.fullmatch(pattern, key):
                if repl:
                    target = out_prefix + re.sub(pattern, repl, key)
                    if target in out:
                        twice.append(f"{in_prefix}{key}")
                    out[target] = fn(value) if fn else value
                break
        else:
            unmapped.append(f"{in_prefix}{key}")
    if unmapped:
        raise CheckpointError(f"{source}: decode head keys with no place in {into}: {_listing(unmapped)}")
    if twice:
        raise CheckpointError(f"{source}: decode head keys mapped twice in {into}: {_listing(twice)}")
    fuse = f"{out_prefix}fuse.0.weight"
    if reorder_levels and fuse in out:
        out[fuse] = _reverse_levels(out[fuse], reorder_levels)
    return out


def _map_head(head: dict[str, torch.Tensor], arch: ReferenceArch, levels: int, source: str) -> dict:
    """``decode_head.*`` (prefix removed) -> our ``head.*`` keys; for HRDA ``decode_head.head.*`` ->
    ``head.seg.*`` and ``decode_head.scale_attention.*`` -> ``head.attention.*``."""
    rules = _head_rules(arch.head_kind, arch.segformer_order)
    reorder = levels if arch.segformer_order else 0
    if arch.hrda is None:
        return _map_part(head, rules, "head.", "decode_head.", reorder, arch.name, source)
    seg, att = split_hrda_head(head, source)
    into = f"HRDA {arch.name}"
    out = _map_part(seg, rules, "head.seg.", "decode_head.head.", reorder, into, source)
    # our attention head: for a DAFormerHead a DAFormerHead whose fusion is a 1x1 conv (levels
    # finest first, as the reference); for our SegFormer head a copy of it (coarsest first)
    att_rules = _DLV2_RULES if arch.head_kind == "deeplabv2" else _DAFORMER_CONV1_RULES
    att_reorder = levels if arch.head_kind == "segformer" else 0
    out.update(
        _map_part(
            att, att_rules, "head.attention.", "decode_head.scale_attention.", att_reorder, into, source
        )
    )
    return out


def convert_network(
    net: dict[str, torch.Tensor], arch: ReferenceArch, model: nn.Module, source: str
) -> dict[str, torch.Tensor]:
    """Reference ``backbone.*`` / ``decode_head.*`` weights -> ``model``'s state-dict keys."""
    from duda.models.pretrained import mit_checkpoint_to_backbone, resnet_checkpoint_to_backbone

    bb = {k[len("backbone.") :]: v for k, v in net.items() if k.startswith("backbone.")}
    head = {k[len("decode_head.") :]: v for k, v in net.items() if k.startswith("decode_head.")}
    to_backbone = (
        mit_checkpoint_to_backbone if "patch_embed1.proj.weight" in bb else resnet_checkpoint_to_backbone
    )
    out = {f"backbone.{k}": v for k, v in to_backbone(bb, model.backbone).items()}
    levels = len(getattr(model.backbone, "out_channels", ())) or 4
    out.update(_map_head(head, arch, levels, source))
    return out


def check_fits(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor], source: str) -> None:
    """Every key of ``expected`` present in ``state``, none left over, same shapes; else an error."""
    parts = state_mismatches(expected, state, ("missing", "unexpected"))
    if parts:
        raise CheckpointError(f"{source}: weights do not fit the model ({'; '.join(parts)})")


def load_converted(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` strictly (see :func:`check_fits`)."""
    check_fits(model.state_dict(), state, source)
    model.load_state_dict(state, strict=True)


def build_reference_model(
    net: dict[str, torch.Tensor], source: str, model_name: str | None = None, meta: Any = None
) -> tuple[nn.Module, ReferenceArch]:
    """Our model with the weights of one reference network, and what it was recognised as
    (an :class:`~duda.models.hrda.HRDAModel` for an HRDA network)."""
    from duda.models import build_network

    arch = infer_architecture(net, source, model_name, meta)
    try:
        model = build_network(arch.name, arch.num_classes, None, arch.overrides, multires=arch.hrda)
    except ConfigError as exc:
        raise CheckpointError(f"{source}: holds {arch.describe()}, which does not build: {exc}") from None
    load_converted(model, convert_network(net, arch, model, source), f"{source} as {arch.describe()}")
    return model.eval(), arch


# ----------------------------------------------------------------------------- labels and loading


def reference_labels(meta: Any, num_classes: int) -> tuple[list[str], np.ndarray, list[str]]:
    """Class names and palette from mmcv's ``meta`` (``CLASSES``, ``PALETTE``) when usable.

    Otherwise the Cityscapes 19 classes (19 outputs) or ``class_i`` names, with a note saying so.
    """
    from duda.data.labels import CITYSCAPES, default_palette

    notes: list[str] = []
    meta = meta if isinstance(meta, dict) else {}
    classes, palette = meta.get("CLASSES"), meta.get("PALETTE")
    names: list[str] | None = None
    if isinstance(classes, (list, tuple)) and len(classes) == num_classes:
        names = [str(c) for c in classes]
    colours: np.ndarray | None = None
    if palette is not None:
        try:
            arr = np.asarray(palette, dtype=np.int64)
        except (TypeError, ValueError):
            arr = None
        if arr is not None and arr.shape == (num_classes, 3) and arr.min() >= 0 and arr.max() <= 255:
            colours = arr.astype(np.uint8)
    if names is None:
        if num_classes == CITYSCAPES.num_classes:
            names = list(CITYSCAPES.names)
            notes.append("no usable meta['CLASSES'] in the checkpoint: the Cityscapes 19 classes are assumed")
        else:
            names = [f"class_{i}" for i in range(num_classes)]
            notes.append(
                f"no usable meta['CLASSES'] in the checkpoint: classes named class_0..{num_classes - 1}"
            )
    if colours is None:
        colours = (
            CITYSCAPES.palette.copy() if names == list(CITYSCAPES.names) else default_palette(num_classes)
        )
        if palette is not None:
            notes.append("meta['PALETTE'] unusable (expected one RGB triple per class): default palette")
    return names, colours, notes


def reference_inference_model(ckpt: dict, path: str | os.PathLike, which: str = "model"):
    """An :class:`~duda.loading.InferenceModel` for network ``which`` of a read checkpoint."""
    from duda.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from duda.loading import InferenceModel

    source = str(path)
    net = network_state(ckpt["state_dict"], which, source)
    where = f"{source} [{NETWORK_ALIASES[which]}]"
    model, arch = build_reference_model(net, where, meta=ckpt.get("meta"))
    _warn(arch, where)
    classes, palette, _ = reference_labels(ckpt.get("meta"), arch.num_classes)
    return InferenceModel(
        model=model,
        model_name=arch.name,
        num_classes=arch.num_classes,
        classes=classes,
        palette=palette,
        mean=tuple(float(v) for v in IMAGENET_MEAN),
        std=tuple(float(v) for v in IMAGENET_STD),
        resize=reference_test_scale(arch),
        spec=dict(model.spec),
    )


def reference_test_scale(arch: ReferenceArch) -> tuple[int, int]:
    """The reference's Cityscapes test scale (W, H) for ``arch``: 2048x1024 for HRDA, else 1024x512."""
    return HRDA_TEST_SCALE if arch.hrda is not None else REFERENCE_TEST_SCALE


def _warn(arch: ReferenceArch, where: str) -> None:
    for message in arch.warnings:
        logger.warning("%s: %s", where, message)


@dataclass
class ReferenceInit:
    """Weights for a large student and its EMA teacher from a reference checkpoint."""

    student: dict[str, torch.Tensor]
    teacher: dict[str, torch.Tensor] | None  # None: the file has no ema_model
    arch: ReferenceArch


def reference_init_states(
    ckpt: dict, model: nn.Module, source: str, model_name: str | None = None, num_classes: int | None = None
) -> ReferenceInit:
    """``model.*`` (and ``ema_model.*`` when present) converted to ``model``'s keys, checked strictly.

    ``model`` is a built network of the architecture to initialise (an HRDAModel for an HRDA
    checkpoint: its multi-resolution settings are the run's, only the weights come from the file);
    it is not modified.
    """
    state = ckpt["state_dict"]
    have = reference_networks(state)
    expected = model.state_dict()
    out: dict[str, dict | None] = {"model": None, "ema_model": None}
    arch = None
    for name in ("model", "ema_model"):
        if name not in have:
            continue
        net = network_state(state, name, source)
        where = f"{source} [{name}]"
        arch = infer_architecture(net, where, model_name, ckpt.get("meta"))
        if name == "model":
            _warn(arch, where)
        if num_classes is not None and arch.num_classes != num_classes:
            raise ConfigError(f"{where}: predicts {arch.num_classes} classes, this run has {num_classes}")
        converted = convert_network(net, arch, model, where)
        check_fits(expected, converted, f"{where} (holds {arch.describe()})")
        out[name] = {k: v.to(expected[k].dtype) for k, v in converted.items()}
    if out["model"] is None or arch is None:
        raise CheckpointError(f"{source}: no model.* network to initialise from; it holds {have}")
    return ReferenceInit(student=out["model"], teacher=out["ema_model"], arch=arch)


# ----------------------------------------------------------------------------- conversion


@dataclass
class ConversionResult:
    out_dir: Path
    arch: ReferenceArch
    network: str  # model | ema_model | imnet_model
    params: int
    notes: list[str]


def convert_reference_checkpoint(
    path: str | os.PathLike,
    out_dir: str | os.PathLike,
    network: str = "model",
    model_name: str | None = None,
    resize: tuple[int, int] | None | str = "reference",
) -> ConversionResult:
    """Write network ``network`` of an mmseg checkpoint as a deploy folder (model.safetensors +
    model.json, as :func:`duda.loading.save_deploy_model`), then reload it to check it.

    ``resize``: the test scale (W, H) stored for ``duda predict``; ``"reference"``: the reference's
    for the recognised architecture (:func:`reference_test_scale`); None: none."""
    from duda.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from duda.loading import load_inference_model, save_deploy_model
    from duda.models.factory import count_parameters

    path = Path(path)
    if path.is_dir() and (path / "latest.pth").is_file():
        path = path / "latest.pth"
    ckpt = read_reference_file(path)
    if not is_reference_checkpoint(ckpt):
        raise CheckpointError(
            f"{path}: not an mmseg checkpoint (expected a 'state_dict' with model.backbone.* or "
            "backbone.* weights); duda's own checkpoints ship with `duda train` or `duda export`"
        )
    name = NETWORK_ALIASES.get(network, network)
    source = f"{path} [{name}]"
    net = network_state(ckpt["state_dict"], network, str(path))
    model, arch = build_reference_model(net, source, model_name, ckpt.get("meta"))
    if isinstance(resize, str):
        if resize != "reference":
            raise ValueError(f"resize: expected (W, H), None or 'reference', got {resize!r}")
        resize = reference_test_scale(arch)
    classes, palette, label_notes = reference_labels(ckpt.get("meta"), arch.num_classes)
    notes = [*arch.notes, *label_notes]
    meta = {
        "num_classes": arch.num_classes,
        "classes": classes,
        "palette": palette,
        "mean": [float(v) for v in IMAGENET_MEAN],
        "std": [float(v) for v in IMAGENET_STD],
        "resize": list(resize) if resize else None,
        "converted_from": {"file": str(path), "network": name, "reference": f"{arch.backbone} + {arch.head}"},
        "notes": notes,
    }
    out_dir = save_deploy_model(out_dir, model, meta)
    reloaded = load_inference_model(out_dir)
    mine, theirs = model.state_dict(), reloaded.model.state_dict()
    if mine.keys() != theirs.keys() or not all(torch.equal(mine[k], theirs[k]) for k in mine):
        raise CheckpointError(f"{out_dir}: the written deploy folder does not reload to the same weights")
    return ConversionResult(out_dir, arch, name, count_parameters(model), notes)

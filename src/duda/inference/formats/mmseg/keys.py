"""Key mapping: reference ``backbone.*`` / ``decode_head.*`` weights to our models' state dicts."""

from __future__ import annotations

import re
from collections.abc import Callable

import torch
from torch import nn

from duda.errors import CheckpointError
from duda.inference.formats.mmseg.arch import ReferenceArch, key_listing, split_hrda_head
from duda.models.pretrained import mit_checkpoint_to_backbone, resnet_checkpoint_to_backbone, state_mismatches

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
        raise CheckpointError(f"{source}: decode head keys with no place in {into}: {key_listing(unmapped)}")
    if twice:
        raise CheckpointError(f"{source}: decode head keys mapped twice in {into}: {key_listing(twice)}")
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

"""Loading ImageNet backbone weights from a local file or the Hugging Face hub.

Accepted sources: a ``.safetensors`` file, a ``.bin``/``.pth``/``.pt`` file (read with
``torch.load(weights_only=True)``), or a hub id such as ``nvidia/mit-b5`` (resolved through the
local hub cache, so it works offline once downloaded). Checkpoint key layouts are translated to
the backbone's own module names; whatever does not fit is an error listing the keys, never a
silent partial load. Classifier / decode-head weights are always dropped: only the backbone loads.

Accepted layouts:
- MiT: HF ``segformer.encoder.*`` (the ``nvidia/mit-b*`` checkpoints), ``encoder.*`` or bare;
  the module names of the installed ``transformers`` (``stages.*``); DAFormer/mmseg
  ``mit_b*.pth`` (``patch_embed1.*``, ``block1.0.attn.kv.*`` …, kv split into key and value).
- ResNet: torchvision (``conv1.weight``, ``layer1.0.conv1.weight``; ``fc.*`` dropped), HF
  ``microsoft/resnet-*`` (``resnet.embedder.*``, ``resnet.encoder.stages.*``) and mmseg's
  ResNet-V1c (``open-mmlab://resnet*_v1c``: ``stem.0.weight`` … ``stem.7.*``, ``layer1.0.bn1.*``,
  optionally under ``backbone.``), see :func:`resnet_v1c_key`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from duda.errors import CheckpointError

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")
# Wrappers added by DataParallel, HF task models, mmseg segmentors and our own SegmentationModel.
_WRAPPER_PREFIXES = ("module.", "segformer.", "resnet.", "backbone.")
# Task heads: never part of an ImageNet backbone.
_HEAD_PREFIXES = ("classifier.", "fc.", "head.", "decode_head.", "auxiliary_head.")
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


# ----------------------------------------------------------------------------- reading files


def _is_truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def download_from_hub(repo_id: str) -> Path:
    """Path of ``model.safetensors`` (else ``pytorch_model.bin``) of hub repo ``repo_id``.

    Honours ``HF_HUB_OFFLINE`` at call time (only the cache is used). Raises CheckpointError with
    instructions when the files are neither cached nor downloadable.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = _is_truthy(os.environ.get("HF_HUB_OFFLINE"))
    reasons = []
    for filename in HUB_FILENAMES:
        try:
            return Path(hf_hub_download(repo_id, filename, local_files_only=offline))
        except LocalEntryNotFoundError:
            reasons.append(f"{filename}: not in the local cache")
        except RepositoryNotFoundError:
            raise CheckpointError(
                f"pretrained={repo_id!r}: no such repository on the Hugging Face hub"
            ) from None
        except EntryNotFoundError:
            reasons.append(f"{filename}: not in the repository")
        except OSError as exc:  # network failures, permission problems in the cache
            reasons.append(f"{filename}: {type(exc).__name__}: {exc}".splitlines()[0])
    mode = "offline (HF_HUB_OFFLINE is set)" if offline else "hub not reachable or files missing"
    raise CheckpointError(
        f"pretrained={repo_id!r}: cannot get the weights, {mode} ({'; '.join(reasons)}). "
        f"Pre-download them while online with `hf download {repo_id}` "
        f"(older huggingface_hub: `huggingface-cli download {repo_id}`); they are then found in the "
        f"cache offline (HF_HUB_OFFLINE=1). Or pass a local .safetensors/.pth file instead."
    )


SHIPPED_PREFIX = "duda:"


def shipped_weights_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "assets" / "pretrained"


def shipped_weights(name: str) -> Path:
    """``duda:NAME``: encoder weights shipped in the package (``duda pretrain --demo`` writes them)."""
    folder = shipped_weights_dir()
    path = folder / f"{name}.safetensors"
    if not path.is_file():
        have = sorted(p.stem for p in folder.glob("*.safetensors")) if folder.is_dir() else []
        raise CheckpointError(
            f"pretrained='{SHIPPED_PREFIX}{name}': no such shipped encoder "
            f"(have: {', '.join(have) or 'none'}); `duda pretrain --demo --keys {name}` makes it"
        )
    return path


def resolve_weights_path(source: str | os.PathLike) -> Path:
    """A local weights file for ``source``: an existing path, ``duda:NAME`` (an encoder shipped in
    the package), or a hub id fetched via the cache."""
    if str(source).startswith(SHIPPED_PREFIX):
        return shipped_weights(str(source)[len(SHIPPED_PREFIX) :])
    path = Path(source).expanduser()
    if path.is_file():
        return path
    text = str(source)
    if path.exists():
        raise CheckpointError(f"pretrained={text!r}: is a directory, expected a weights file or a hub id")
    if text.endswith(WEIGHT_SUFFIXES) or not _HUB_ID.fullmatch(text):
        raise CheckpointError(
            f"pretrained={text!r}: file not found (expected an existing {'/'.join(WEIGHT_SUFFIXES)} file "
            "or a hub id like 'nvidia/mit-b5')"
        )
    return download_from_hub(text)


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weights file; unwraps ``{"state_dict": …}`` / ``{"model": …}`` containers."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            data = load_file(str(path), device="cpu")
        else:
            data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    except Exception as exc:  # corrupt file, pickled objects refused by weights_only, wrong format
        raise CheckpointError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from None
    for container in ("state_dict", "model", "state"):
        if isinstance(data, dict) and isinstance(data.get(container), dict):
            data = data[container]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise CheckpointError(f"{path}: expected a mapping of parameter names to tensors")
    return data


# ----------------------------------------------------------------------------- key layouts


def strip_wrappers(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes and drop task-head weights."""
    out = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _WRAPPER_PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix) :], True
        if not key.startswith(_HEAD_PREFIXES):
            out[key] = value
    return out


# Block-level names: HF legacy layout (transformers 4.x, hub checkpoints) → transformers 5.x.
_MIT_BLOCK_NAMES = (
    ("layer_norm_1.", "layernorm_before."),
    ("layer_norm_2.", "layernorm_after."),
    ("attention.self.query.", "attention.q_proj."),
    ("attention.self.key.", "attention.k_proj."),
    ("attention.self.value.", "attention.v_proj."),
    ("attention.self.sr.", "attention.sequence_reduction.sequence_reduction."),
    ("attention.self.layer_norm.", "attention.sequence_reduction.layer_norm."),
    ("attention.output.dense.", "attention.o_proj."),
    ("mlp.dense1.", "mlp.fc1."),
    ("mlp.dense2.", "mlp.fc2."),
    ("mlp.dwconv.dwconv.", "mlp.dwconv.dwconv."),
)
# Block-level names: DAFormer/mmseg MiT → HF legacy layout (kv handled separately).
_MMSEG_BLOCK_NAMES = (
    ("norm1.", "layer_norm_1."),
    ("norm2.", "layer_norm_2."),
    ("attn.q.", "attention.self.query."),
    ("attn.proj.", "attention.output.dense."),
    ("attn.sr.", "attention.self.sr."),
    ("attn.norm.", "attention.self.layer_norm."),
    ("mlp.fc1.", "mlp.dense1."),
    ("mlp.fc2.", "mlp.dense2."),
    ("mlp.dwconv.dwconv.", "mlp.dwconv.dwconv."),
)


def _rename_prefix(rest: str, table: tuple[tuple[str, str], ...]) -> str | None:
    for old, new in table:
        if rest.startswith(old):
            return new + rest[len(old) :]
    return None


def mit_legacy_to_stages(key: str) -> str:
    """HF legacy MiT key (``block.0.1.attention.self.query.weight``) → ``stages.*`` layout."""
    if m := re.fullmatch(r"patch_embeddings\.(\d+)\.(.+)", key):
        return f"stages.{m[1]}.patch_embeddings.{m[2]}"
    if m := re.fullmatch(r"layer_norm\.(\d+)\.(.+)", key):
        return f"stages.{m[1]}.layer_norm.{m[2]}"
    if (m := re.fullmatch(r"block\.(\d+)\.(\d+)\.(.+)", key)) and (
        rest := _rename_prefix(m[3], _MIT_BLOCK_NAMES)
    ):
        return f"stages.{m[1]}.blocks.{m[2]}.{rest}"
    return key


def mit_stages_to_legacy(key: str) -> str:
    """Inverse of :func:`mit_legacy_to_stages` (for a ``transformers`` 4.x installation)."""
    if m := re.fullmatch(r"stages\.(\d+)\.patch_embeddings\.(.+)", key):
        return f"patch_embeddings.{m[1]}.{m[2]}"
    if m := re.fullmatch(r"stages\.(\d+)\.layer_norm\.(.+)", key):
        return f"layer_norm.{m[1]}.{m[2]}"
    inverse = tuple((new, old) for old, new in _MIT_BLOCK_NAMES)
    if (m := re.fullmatch(r"stages\.(\d+)\.blocks\.(\d+)\.(.+)", key)) and (
        rest := _rename_prefix(m[3], inverse)
    ):
        return f"block.{m[1]}.{m[2]}.{rest}"
    return key


def mit_mmseg_to_legacy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DAFormer/mmseg MiT keys → HF legacy keys; the fused ``kv`` projection is split in two."""
    out = {}
    for key, value in state.items():
        if m := re.fullmatch(r"patch_embed(\d+)\.(proj|norm)\.(.+)", key):
            name = "proj" if m[2] == "proj" else "layer_norm"
            out[f"patch_embeddings.{int(m[1]) - 1}.{name}.{m[3]}"] = value
        elif m := re.fullmatch(r"norm(\d+)\.(.+)", key):
            out[f"layer_norm.{int(m[1]) - 1}.{m[2]}"] = value
        elif m := re.fullmatch(r"block(\d+)\.(\d+)\.(.+)", key):
            prefix = f"block.{int(m[1]) - 1}.{m[2]}."
            if kv := re.fullmatch(r"attn\.kv\.(weight|bias)", m[3]):
                # mmseg computes kv then reshapes (…, 2, heads, dim): the first half is the key.
                k, v = value.chunk(2, dim=0)
                out[f"{prefix}attention.self.key.{kv[1]}"] = k.clone()
                out[f"{prefix}attention.self.value.{kv[1]}"] = v.clone()
            else:
                out[prefix + (_rename_prefix(m[3], _MMSEG_BLOCK_NAMES) or m[3])] = value
        else:
            out[key] = value
    return out


def mit_checkpoint_to_backbone(
    state: dict[str, torch.Tensor], backbone: nn.Module
) -> dict[str, torch.Tensor]:
    """Translate any accepted MiT checkpoint layout to ``MiTBackbone``'s state-dict keys.

    ``MiTBackbone.encoder`` is a ``SegformerModel``: its keys are ``stages.*`` in transformers 5.x
    and ``encoder.{block,patch_embeddings,layer_norm}.*`` in 4.x, so the backbone's own keys are
    ``encoder.stages.*`` (5.x) or ``encoder.encoder.block.*`` (4.x). Every ``encoder.`` in front
    is dropped from the checkpoint's keys (ours from either version, HF ``SegformerModel``, hub
    ``segformer.encoder.*``), the names are converted, and the installed prefix is put back.
    """
    state = strip_wrappers(state)
    state = {re.sub(r"^(encoder\.)+", "", k): v for k, v in state.items()}
    if any(re.match(r"patch_embed\d+\.", k) for k in state):
        state = mit_mmseg_to_legacy(state)
    installed_uses_stages = any(k.startswith("encoder.stages.") for k in backbone.state_dict())
    convert = mit_legacy_to_stages if installed_uses_stages else mit_stages_to_legacy
    prefix = "encoder." if installed_uses_stages else "encoder.encoder."
    return {prefix + convert(k): v for k, v in state.items()}


def _hf_resnet_key(key: str) -> str:
    """HF ``microsoft/resnet-*`` key (after stripping ``resnet.``) → torchvision layout."""
    if m := re.fullmatch(r"embedder\.embedder\.(convolution|normalization)\.(.+)", key):
        return f"{'conv1' if m[1] == 'convolution' else 'bn1'}.{m[2]}"
    if m := re.fullmatch(r"encoder\.stages\.(\d+)\.layers\.(\d+)\.(.+)", key):
        stage, block, rest = int(m[1]) + 1, m[2], m[3]
        if s := re.fullmatch(r"shortcut\.(convolution|normalization)\.(.+)", rest):
            return f"layer{stage}.{block}.downsample.{0 if s[1] == 'convolution' else 1}.{s[2]}"
        if c := re.fullmatch(r"layer\.(\d+)\.(convolution|normalization)\.(.+)", rest):
            name = "conv" if c[2] == "convolution" else "bn"
            return f"layer{stage}.{block}.{name}{int(c[1]) + 1}.{c[3]}"
    return key


# mmseg ResNetV1c backbone parameters and buffers: the deep stem ``stem.<i>`` (convs 0/3/6, BNs
# 1/4/7; ReLUs 2/5/8 hold nothing) and the stages' ``conv<k>``, ``bn<k>``, ``downsample.0/1``.
_V1C_KEY = re.compile(
    r"(stem\.[013467]|layer[1-4]\.\d+\.(conv[1-3]|bn[1-3]|downsample\.[01]))"
    r"\.(weight|bias|running_mean|running_var|num_batches_tracked)"
)


def resnet_v1c_key(key: str) -> str | None:
    """mmseg ResNet-V1c backbone key (``backbone.`` already removed) → ``ResNetBackbone`` key.

    ``ResNetBackbone(stem="deep")`` builds its stem as mmseg's ``stem`` Sequential and its stages
    with the names mmseg and torchvision share, so every V1c key keeps its name:
    ``stem.0.weight`` (3×3 conv, stride 2), ``stem.1.*`` (its BN), ``stem.3``/``stem.4``,
    ``stem.6``/``stem.7``, ``layer1.0.conv1.weight``, ``layer1.0.bn1.*``,
    ``layer1.0.downsample.0.weight`` (1×1 conv), ``layer1.0.downsample.1.*`` (BN) … Returns None
    for a key outside that layout (e.g. ``fc.weight``, a decode head's keys).
    """
    return key if _V1C_KEY.fullmatch(key) else None


def resnet_v1c_to_backbone(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An mmseg ResNet-V1c checkpoint (ImageNet ``resnet*_v1c`` file, or the ``backbone.*`` part of
    an mmseg segmentor) in ``ResNetBackbone(stem="deep")``'s keys.

    Wrapper prefixes (``module.``, ``backbone.``) and task heads (``fc.*``, ``decode_head.*`` …) are
    removed; any other key outside the V1c layout raises CheckpointError listing it.
    """
    out, unknown = {}, []
    for key, value in strip_wrappers(state).items():
        mapped = resnet_v1c_key(key)
        if mapped is None:
            unknown.append(key)
        else:
            out[mapped] = value
    if unknown:
        raise CheckpointError(f"not ResNet-V1c backbone keys: {_listing(sorted(unknown))}")
    return out


def resnet_checkpoint_to_backbone(
    state: dict[str, torch.Tensor], backbone: nn.Module
) -> dict[str, torch.Tensor]:
    """Translate torchvision, HF or mmseg-V1c ResNet checkpoints to ``ResNetBackbone``'s keys."""
    state = strip_wrappers(state)
    if any(k.startswith(("embedder.", "encoder.stages.")) for k in state):
        state = {_hf_resnet_key(k): v for k, v in state.items()}
    elif any(k.startswith("stem.") for k in state):
        # Keys outside the V1c layout stay as they are: the strict loader lists them, with the file.
        state = {resnet_v1c_key(k) or k: v for k, v in state.items()}
    return state


# ----------------------------------------------------------------------------- loading


def _listing(keys: list[str], limit: int = 6) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, … ({len(keys)} in all)" if len(keys) > limit else shown


def state_mismatches(
    expected: dict[str, torch.Tensor],
    state: dict[str, torch.Tensor],
    labels: tuple[str, str] = ("missing keys", "unexpected keys"),
    optional_suffix: str | None = None,
) -> list[str]:
    """What keeps ``state`` from loading strictly into a module with ``expected`` tensors: the
    missing, unexpected and wrongly shaped keys, as message parts (empty when it fits).
    Expected keys ending in ``optional_suffix`` may be missing."""
    missing = sorted(
        k for k in expected if k not in state and not (optional_suffix and k.endswith(optional_suffix))
    )
    unexpected = sorted(k for k in state if k not in expected)
    wrong_shape = sorted(
        f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
        for k in state
        if k in expected and state[k].shape != expected[k].shape
    )
    parts = []
    if missing:
        parts.append(f"{labels[0]}: {_listing(missing)}")
    if unexpected:
        parts.append(f"{labels[1]}: {_listing(unexpected)}")
    if wrong_shape:
        parts.append(f"shape mismatches (checkpoint vs model): {_listing(wrong_shape)}")
    return parts


def load_state_into_backbone(backbone: nn.Module, state: dict[str, torch.Tensor], origin: str) -> None:
    """Load ``state`` (already in the backbone's layout) strictly; errors list offending keys."""
    # Old torchvision checkpoints lack BN's step counter; it carries no weights.
    parts = state_mismatches(backbone.state_dict(), state, optional_suffix="num_batches_tracked")
    if parts:
        raise CheckpointError(
            f"{origin}: does not fit the {type(backbone).__name__} backbone ({'; '.join(parts)}). "
            "Is it the ImageNet checkpoint of this backbone variant?"
        )
    backbone.load_state_dict(state, strict=False)


def load_backbone_weights(
    backbone: nn.Module,
    source: str | os.PathLike,
    convert: Callable[[dict[str, torch.Tensor], nn.Module], dict[str, torch.Tensor]],
) -> Path:
    """Load ImageNet weights from ``source`` (file or hub id) into ``backbone``; returns the file."""
    path = resolve_weights_path(source)
    state = convert(read_state_dict(path), backbone)
    load_state_into_backbone(backbone, state, f"pretrained={str(source)!r} ({path})")
    return path

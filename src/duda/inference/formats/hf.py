"""Hugging Face ``transformers`` folders of SegFormer-head models: export and loading.

A ``segformer_mit*`` model is transformers' ``SegformerForSemanticSegmentation`` layer for layer:
the MiT encoder *is* transformers' ``SegformerModel`` and the all-MLP head has the same layers
(per-level 1×1 convolutions here, ``nn.Linear`` there). :func:`export_hf` writes such a model as
a folder that ``SegformerForSemanticSegmentation.from_pretrained`` and
``pipeline("image-segmentation")`` read:

- ``config.json``: a ``SegformerConfig`` (architecture, ``id2label``/``label2id``) plus a
  ``"duda"`` entry (model name, palette, mean/std in 0–255 units, keep-ratio test scale) that
  transformers ignores;
- ``model.safetensors``: the weights in the hub's key layout (``segformer.encoder.block.*``,
  ``decode_head.linear_c.*``), the layout of the ``nvidia/segformer-*`` checkpoints: transformers
  4.x's module names, which 5.x renames on load (checked with 5.24);
- ``preprocessor_config.json``: a ``SegformerImageProcessor`` with the model's normalisation (in
  0–1 units, after ``rescale_factor`` 1/255) and test scale, ``do_reduce_labels`` false.

:func:`load_hf_folder` reads such a folder — or an ``nvidia/segformer-*``-style one, also by hub
id through ``huggingface_hub`` — back into a duda model: the ``SegformerConfig`` becomes the
closest ``segformer_mit*`` name plus architecture overrides, and the weights load strictly.

The one difference is LayerNorm eps: duda's MiT uses the reference's 1e-6 in the block and stage
norms (``mit.set_reference_layer_norm_eps``); transformers builds every SegFormer LayerNorm with
1e-5 and has no config field for it. Logits therefore differ slightly: max |Δlogit| 8.8e-6 for the
random tiny model of ``tests/inference/test_formats_hf.py`` (4.8e-7 with duda's eps set to 1e-5),
1.1–1.3e-4 for a trained tiny demo model with logits up to 16 (2.9e-6 with eps aligned), argmax
identical. Every tensor is mapped by :func:`hf_key` and checked against transformers' own module
list, so the mapping itself is exact.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from duda.data.labels import CITYSCAPES, default_palette
from duda.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from duda.errors import CheckpointError, ConfigError, DudaError
from duda.files import atomic_path, ensure_dir, write_text
from duda.inference.model import InferenceModel
from duda.models.factory import allowed_overrides, build_model, list_models, recipe, resolve_arch
from duda.models.pretrained import mit_stages_to_legacy, read_state_dict, state_mismatches

HF_CONFIG = "config.json"
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
HF_PREPROCESSOR = "preprocessor_config.json"
HF_CLASS = "SegformerForSemanticSegmentation"
DUDA_ENTRY = "duda"  # config.json entry with what SegformerConfig has no field for
FORMAT_TAG = "duda-hf-1"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")

# --------------------------------------------------------------------------- key mapping

# Every key of SegformerForSemanticSegmentation's encoder in the hub layout (transformers 4.x
# module names, which transformers 5.x renames on load and back on save).
_HUB_ENCODER_KEY = re.compile(
    r"segformer\.encoder\.("
    r"patch_embeddings\.\d+\.(proj|layer_norm)"
    r"|block\.\d+\.\d+\.(layer_norm_[12]|attention\.self\.(query|key|value|sr|layer_norm)"
    r"|attention\.output\.dense|mlp\.(dense1|dense2|dwconv\.dwconv))"
    r"|layer_norm\.\d+"
    r")\.(weight|bias)"
)
_BN_FIELDS = "weight|bias|running_mean|running_var|num_batches_tracked"


def hf_key(key: str) -> str:
    """The hub-layout ``SegformerForSemanticSegmentation`` key of a duda ``segformer_mit*`` key.

    Encoder: ``backbone.encoder.<SegformerModel key>`` → ``segformer.<same, hub layout>``.
    Head: ``head.embed.i`` → ``decode_head.linear_c.i.proj`` (1×1 conv → Linear), ``head.fuse.0``
    → ``decode_head.linear_fuse``, ``head.fuse.1`` → ``decode_head.batch_norm``,
    ``head.classifier`` → ``decode_head.classifier``. CheckpointError for any other key.
    """
    if key.startswith("backbone.encoder."):
        rest = key.removeprefix("backbone.encoder.")
        if rest.startswith("stages."):  # transformers 5.x module names
            rest = "encoder." + mit_stages_to_legacy(rest)
        hub = "segformer." + rest  # transformers 4.x names are the hub layout already
        if _HUB_ENCODER_KEY.fullmatch(hub):
            return hub
    elif m := re.fullmatch(r"head\.embed\.(\d+)\.(weight|bias)", key):
        return f"decode_head.linear_c.{m[1]}.proj.{m[2]}"
    elif key == "head.fuse.0.weight":
        return "decode_head.linear_fuse.weight"
    elif m := re.fullmatch(rf"head\.fuse\.1\.({_BN_FIELDS})", key):
        return f"decode_head.batch_norm.{m[1]}"
    elif m := re.fullmatch(r"head\.classifier\.(weight|bias)", key):
        return f"decode_head.classifier.{m[1]}"
    raise CheckpointError(f"model key {key!r}: no SegformerForSemanticSegmentation counterpart")


def hub_layout(key: str) -> str:
    """A ``SegformerForSemanticSegmentation`` key in the hub layout; keys of transformers 5.x's
    module names (``segformer.stages.*``, ``decode_head.linear_projections.*``) are renamed."""

    if key.startswith("segformer.stages."):
        return "segformer.encoder." + mit_stages_to_legacy(key.removeprefix("segformer."))
    if key.startswith("decode_head.linear_projections."):
        return "decode_head.linear_c." + key.removeprefix("decode_head.linear_projections.")
    return key


def _is_embedding(hub: str) -> bool:
    return hub.startswith("decode_head.linear_c.") and hub.endswith(".weight")


def to_hf_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s tensors under their hub-layout keys, each used exactly once; the head's 1×1
    embedding convs (K×C×1×1) become Linear weights (K×C)."""
    out: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    for key, value in model.state_dict().items():
        hub = hf_key(key)
        if hub in out:
            raise CheckpointError(f"model keys {origin[hub]!r} and {key!r} both map to {hub!r}")
        tensor = value.detach().cpu()
        if _is_embedding(hub):
            tensor = tensor.reshape(tensor.shape[0], tensor.shape[1])
        out[hub], origin[hub] = tensor.contiguous(), key
    return out


def from_hf_state(state: dict[str, torch.Tensor], model: nn.Module, source: str) -> dict[str, torch.Tensor]:
    """A ``SegformerForSemanticSegmentation`` state dict (hub or transformers-5.x layout) in
    ``model``'s keys, shapes and dtypes. Every key must map: CheckpointError from ``source``
    listing the missing, unexpected and wrongly shaped keys (BatchNorm's ``num_batches_tracked``
    may be absent)."""

    expected = to_hf_state(model)
    local = {hf_key(k): k for k in model.state_dict()}
    normalised: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        hub = hub_layout(key)
        if hub in normalised:
            raise CheckpointError(f"{source}: holds {hub!r} twice (in two key layouts)")
        normalised[hub] = value
    parts = state_mismatches(expected, normalised, optional_suffix="num_batches_tracked")
    if parts:
        raise CheckpointError(
            f"{source}: does not fit {HF_CLASS} as described by its {HF_CONFIG} ({'; '.join(parts)})"
        )
    own = model.state_dict()
    out = {}
    for hub, value in normalised.items():
        target = own[local[hub]]
        out[local[hub]] = value.reshape(target.shape).to(target.dtype)
    return out


# --------------------------------------------------------------------------- config mapping

# duda architecture field → SegformerConfig field
_ARCH_TO_HF = {
    "embed_dims": "hidden_sizes",
    "depths": "depths",
    "num_heads": "num_attention_heads",
    "sr_ratios": "sr_ratios",
    "mlp_ratios": "mlp_ratios",
    "patch_sizes": "patch_sizes",
    "strides": "strides",
    "drop_path_rate": "drop_path_rate",
    "head_channels": "decoder_hidden_size",
    "dropout": "classifier_dropout_prob",
}


def _head_of(name: str) -> str:

    r = recipe(name)
    return "segformer" if (r.backbone, r.head) == ("mit", "segformer") else r.head


def segformer_names() -> list[str]:
    """Model names with a MiT encoder and the SegFormer head: the ones transformers can hold."""

    return [n for n in list_models() if _head_of(n) == "segformer"]


def _refusal(name: str) -> str:

    r = recipe(name)
    if r.backbone == "mit":
        alternative = name.replace(f"{r.head}_", "segformer_", 1)
        head = {"daformer": "a DAFormer head"}.get(r.head, f"a {r.head} head")
        return (
            f"{name} has {head}, which transformers has no class for; train {alternative} (the same "
            f"MiT encoder with SegFormer's all-MLP head) to export to Hugging Face, or use --format onnx"
        )
    head = {"deeplabv2": "DeepLabV2", "deeplabv3p": "DeepLabV3+"}.get(r.head, r.head)
    return (
        f"{name} is a ResNet + {head} model, which transformers has no class for; only MiT + SegFormer "
        f"head models ({', '.join(segformer_names())}) export to Hugging Face; use --format onnx"
    )


def segformer_config(spec: dict[str, Any], classes: list[str], duda_entry: dict[str, Any]):
    """The ``SegformerConfig`` of a ``segformer_mit*`` model ``spec``, labelled with ``classes``."""
    from transformers import SegformerConfig  # in here: importing transformers takes seconds

    fields = resolve_arch(spec["name"], dict(spec.get("arch") or {}))
    hf = {v: list(fields[k]) if isinstance(fields[k], tuple) else fields[k] for k, v in _ARCH_TO_HF.items()}
    return SegformerConfig(
        architectures=[HF_CLASS],
        num_channels=3,
        num_encoder_blocks=len(fields["embed_dims"]),
        hidden_act="gelu",
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-6,
        semantic_loss_ignore_index=255,
        reshape_last_stage=True,
        id2label=dict(enumerate(classes)),
        label2id={c: i for i, c in enumerate(classes)},
        **hf,
        **{DUDA_ENTRY: duda_entry},
    )


def arch_from_config(config: dict[str, Any], source: str) -> tuple[str, dict[str, Any]]:
    """The ``segformer_mit*`` name and architecture overrides that rebuild a SegformerConfig
    (a ``config.json`` dict): the name needing the fewest overrides, the one recorded in the
    ``"duda"`` entry first."""
    from transformers import SegformerConfig  # in here: importing transformers takes seconds

    defaults = SegformerConfig()

    def get(key: str) -> Any:
        value = config.get(key, getattr(defaults, key))
        return tuple(value) if isinstance(value, list) else value

    if get("num_channels") != 3:
        raise CheckpointError(f"{source}: num_channels {get('num_channels')}, expected 3 (RGB)")
    if get("hidden_act") != "gelu":
        raise CheckpointError(f"{source}: hidden_act {get('hidden_act')!r}, duda's MiT uses 'gelu'")
    if len(get("hidden_sizes")) != get("num_encoder_blocks"):
        raise CheckpointError(
            f"{source}: num_encoder_blocks {get('num_encoder_blocks')} but hidden_sizes {get('hidden_sizes')}"
        )
    fields = {k: get(v) for k, v in _ARCH_TO_HF.items()}
    entry = config.get(DUDA_ENTRY)
    stored = entry.get("model") if isinstance(entry, dict) else None
    names = segformer_names()
    if stored in names:
        names.remove(stored)
        names.insert(0, stored)
    best: tuple[str, dict[str, Any]] | None = None
    for name in names:
        allowed = allowed_overrides(name)
        overrides = {k: v for k, v in fields.items() if allowed[k] != v}
        if best is None or len(overrides) < len(best[1]):
            best = (name, overrides)
    assert best is not None
    return best


# --------------------------------------------------------------------------- export


@dataclass
class HFExport:
    """Where an export went and how closely transformers reproduces the duda model."""

    path: Path
    files: list[str]
    max_abs_diff: float  # largest |logit_transformers − logit_duda| on the check input
    agreement: float  # share of output pixels with the same argmax class
    check_shape: tuple[int, int]  # (H, W) of the check input


def _hw_scale(resize: tuple[int, int] | None) -> tuple[int, int] | None:
    """(H, W) of a keep-ratio test scale (W, H) for a landscape image; None stays None."""
    return (min(resize), max(resize)) if resize else None


def preprocessor_config(mean, std, resize: tuple[int, int] | None) -> dict[str, Any]:
    """``SegformerImageProcessor`` settings: mean/std given in 0–255 units become 0–1 units."""
    out: dict[str, Any] = {
        "image_processor_type": "SegformerImageProcessor",
        "do_resize": resize is not None,
        "resample": 2,  # PIL bilinear
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [float(v) / 255 for v in mean],
        "image_std": [float(v) / 255 for v in std],
        "do_reduce_labels": False,
    }
    if resize is not None:
        height, width = _hw_scale(resize)
        out["size"] = {"height": height, "width": width}
    return out


def _check_export(folder: Path, model: nn.Module, shape: tuple[int, int]) -> tuple[float, float, float]:
    """Load ``folder`` with transformers strictly; (max |Δlogit|, argmax agreement, max |logit|)
    against ``model`` on a random input."""
    from transformers import SegformerForSemanticSegmentation  # in here: transformers imports slowly
    from transformers.utils import logging as hf_logging

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # no "Loading weights" bar in the export's output
    try:
        hf_model, info = SegformerForSemanticSegmentation.from_pretrained(
            str(folder), output_loading_info=True
        )
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    problems = {k: v for k, v in info.items() if v}
    if problems:
        raise DudaError(f"{folder}: transformers does not load the export cleanly: {problems}")
    hf_model.eval()
    x = torch.randn(1, 3, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = model(x)
        theirs = hf_model(pixel_values=x).logits
    if ours.shape != theirs.shape:
        raise DudaError(f"{folder}: transformers logits {tuple(theirs.shape)}, duda {tuple(ours.shape)}")
    diff = float((ours - theirs).abs().max())
    agreement = float((ours.argmax(1) == theirs.argmax(1)).float().mean())
    return diff, agreement, float(ours.abs().max())


def export_hf(loaded, out_dir: str | os.PathLike, check_shape: tuple[int, int] = (64, 64)) -> HFExport:
    """Write ``loaded`` (an :class:`~duda.inference.InferenceModel` of a ``segformer_mit*``
    model) as a transformers ``SegformerForSemanticSegmentation`` folder ``out_dir``.

    The folder is written beside ``out_dir``, loaded back with transformers and compared with the
    duda model on a random ``check_shape`` input; only then are its files moved into ``out_dir``
    (other files there are left alone). DudaError for other heads (naming the SegFormer-head
    alternative), ONNX models, and an export that transformers does not reproduce: max |Δlogit|
    above 1e-3 × max(1, max |logit|). The LayerNorm eps difference (module docstring) gives about
    1e-5 × max |logit| (1.2e-4 for a trained tiny demo model with logits up to 16); a wrong
    mapping gives differences of the order of the logits.
    """
    model = loaded.model
    spec = _exportable_spec(loaded)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DudaError(f"--out {out}: is a file, expected a folder for --format hf")
    if (out / "model.json").is_file():
        raise DudaError(f"--out {out}: holds a duda deploy folder (model.json); choose another folder")
    entry = {
        "format": FORMAT_TAG,
        "model": spec["name"],
        "palette": np.asarray(loaded.palette).astype(int).tolist(),
        "mean": [float(v) for v in loaded.mean],
        "std": [float(v) for v in loaded.std],
        "resize": list(loaded.resize) if loaded.resize else None,
    }
    config = segformer_config(spec, list(loaded.classes), entry)
    state = to_hf_state(model)
    _check_against_transformers(config, state)
    ensure_dir(out.parent, "output folder")
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        write_text(staging / HF_CONFIG, config.to_json_string(use_diff=False), what="config")
        with atomic_path(staging / HF_WEIGHTS[0], what="weights") as tmp:
            save_file(state, str(tmp), metadata={"format": "pt"})
        prep = preprocessor_config(loaded.mean, loaded.std, loaded.resize)
        write_text(staging / HF_PREPROCESSOR, json.dumps(prep, indent=2) + "\n", what="preprocessor config")
        diff, agreement, largest = _check_export(staging, model, check_shape)
        if diff > 1e-3 * max(1.0, largest):
            raise DudaError(
                f"{out}: transformers reproduces {spec['name']} only to max |Δlogit| {diff:.2e} "
                f"(logits up to {largest:.2f}, argmax agreement {agreement:.4f}); export discarded"
            )
        ensure_dir(out, "output folder")
        files = [HF_CONFIG, HF_WEIGHTS[0], HF_PREPROCESSOR]
        for name in files:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return HFExport(out, files, diff, agreement, check_shape)


def _exportable_spec(loaded) -> dict[str, Any]:
    """The spec of ``loaded``'s model; DudaError when transformers' SegFormer cannot express it."""
    model = loaded.model
    if not isinstance(model, nn.Module) or not isinstance(getattr(model, "spec", None), dict):
        raise DudaError(f"{loaded.model_name}: not a PyTorch model (ONNX?); export from a checkpoint")
    spec = model.spec
    if spec.get("input_scale", 1.0) != 1.0 or "hrda" in spec:
        what = "resizes its input first" if "hrda" not in spec else "is multi-resolution (HRDA)"
        raise DudaError(
            f"{loaded.model_name}: the model {what}, which SegformerForSemanticSegmentation cannot "
            "express; export it as ONNX instead (duda export --format onnx)"
        )
    if _head_of(spec["name"]) != "segformer":
        raise DudaError(_refusal(spec["name"]))
    return spec


def _check_against_transformers(config, state: dict[str, torch.Tensor]) -> None:
    """Every key and shape of transformers' own model for ``config`` is in ``state``, no more."""
    from transformers import SegformerForSemanticSegmentation  # in here: transformers imports slowly

    with torch.device("meta"):
        reference = SegformerForSemanticSegmentation(config)
    expected = {hub_layout(k): v for k, v in reference.state_dict().items()}
    parts = state_mismatches(expected, state, ("keys transformers has and duda not", "keys only duda has"))
    if parts:  # a bug of the mapping or an unforeseen transformers layout
        raise DudaError(f"duda → {HF_CLASS} key mapping incomplete: {'; '.join(parts)}")


# --------------------------------------------------------------------------- loading


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot be read ({exc.strerror})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object")
    return data


def is_hf_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder with a ``config.json`` of ``model_type`` "segformer"."""
    config = Path(path) / HF_CONFIG
    if not config.is_file():
        return False
    try:
        return _read_json(config).get("model_type") == "segformer"
    except CheckpointError:
        return False


def is_hub_id(text: str) -> bool:
    """Whether ``text`` looks like a hub id (``owner/name``) and is not a local path."""
    local_suffixes = (".onnx", ".json", ".pt", ".pth", ".bin", ".safetensors")
    return bool(_HUB_ID.fullmatch(text)) and not text.endswith(local_suffixes) and not Path(text).exists()


def download_hf_model(repo_id: str) -> Path:
    """The local folder (hub cache) of hub repo ``repo_id``: its config.json, weights and, when
    there is one, preprocessor_config.json. Honours ``HF_HUB_OFFLINE``."""
    # in here: huggingface_hub is needed only for hub ids and slows `import duda.inference`
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = (os.environ.get("HF_HUB_OFFLINE") or "").strip().lower() in {"1", "true", "yes", "on"}

    def get(filename: str) -> Path | None:
        try:
            return Path(hf_hub_download(repo_id, filename, local_files_only=offline))
        except (EntryNotFoundError, LocalEntryNotFoundError):
            return None
        except RepositoryNotFoundError:
            raise CheckpointError(
                f"{repo_id}: neither a local file or folder nor a repository on the Hugging Face hub"
            ) from None
        except OSError as exc:  # network failures, permission problems in the cache
            raise CheckpointError(f"{repo_id}: hub download of {filename} failed ({exc})") from None

    config = get(HF_CONFIG)
    weights = next((p for p in map(get, HF_WEIGHTS) if p is not None), None) if config else None
    if config is None or weights is None:
        mode = "offline (HF_HUB_OFFLINE is set), not in the local cache" if offline else "not on the hub"
        missing = HF_CONFIG if config is None else " or ".join(HF_WEIGHTS)
        raise CheckpointError(
            f"{repo_id}: no local file or folder of that name, and {missing} {mode}; "
            f"download it while online with `hf download {repo_id}`"
        )
    get(HF_PREPROCESSOR)  # optional
    return config.parent


def _weights_file(folder: Path) -> Path:
    for name in HF_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    if any((folder / f"{name}.index.json").is_file() for name in HF_WEIGHTS):
        raise CheckpointError(
            f"{folder}: sharded weights (*.index.json) are not supported; SegFormer is one file"
        )
    raise CheckpointError(f"{folder}: no {' or '.join(HF_WEIGHTS)} next to {HF_CONFIG}")


def _labels(config: dict[str, Any], source: str) -> list[str]:
    id2label = config.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        raise CheckpointError(f"{source}: no id2label (class names)")
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except ValueError:
        raise CheckpointError(f"{source}: id2label keys must be class indices 0..K-1") from None
    if sorted(by_id) != list(range(len(by_id))):
        raise CheckpointError(f"{source}: id2label keys {sorted(by_id)} are not 0..{len(by_id) - 1}")
    return [by_id[i] for i in range(len(by_id))]


def _palette(entry: dict[str, Any], classes: list[str]) -> np.ndarray:

    palette = np.asarray(entry.get("palette") or [], dtype=np.int64)
    if palette.shape == (len(classes), 3) and palette.min() >= 0 and palette.max() <= 255:
        return palette.astype(np.uint8)
    if classes == list(CITYSCAPES.names):
        return CITYSCAPES.palette.copy()
    return default_palette(len(classes))


def _normalisation(folder: Path, entry: dict[str, Any]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """mean/std in 0–255 units: the ``"duda"`` entry, else the preprocessor's (×255), else ImageNet's."""

    if entry.get("mean") and entry.get("std"):
        return tuple(map(float, entry["mean"])), tuple(map(float, entry["std"]))
    prep_path = folder / HF_PREPROCESSOR
    if prep_path.is_file():
        prep = _read_json(prep_path)
        if prep.get("do_normalize", True) and prep.get("image_mean") and prep.get("image_std"):
            scale = 255.0 if prep.get("do_rescale", True) else 1.0
            return (
                tuple(float(v) * scale for v in prep["image_mean"]),
                tuple(float(v) * scale for v in prep["image_std"]),
            )
    return tuple(map(float, IMAGENET_MEAN)), tuple(map(float, IMAGENET_STD))


def _resize(folder: Path, entry: dict[str, Any]) -> tuple[int, int] | None:
    """Keep-ratio test scale (W, H): the ``"duda"`` entry's, else the preprocessor's size."""
    if entry:  # written by duda: its keep-ratio scale, or None (native resolution)
        return tuple(entry["resize"]) if entry.get("resize") else None
    prep_path = folder / HF_PREPROCESSOR
    if prep_path.is_file():
        prep = _read_json(prep_path)
        size = prep.get("size") or {}
        if prep.get("do_resize", True) and isinstance(size, dict) and {"height", "width"} <= set(size):
            return int(size["width"]), int(size["height"])
    return None


def load_hf_folder(path: str | os.PathLike):
    """An :class:`~duda.inference.InferenceModel` from a transformers
    ``SegformerForSemanticSegmentation`` folder (config.json + model.safetensors or
    pytorch_model.bin), as :func:`export_hf` writes and the ``nvidia/segformer-*`` repositories
    hold. CheckpointError naming the file for another model type, missing weights or weights that
    do not fit the config."""

    folder = Path(path)
    config_path = folder / HF_CONFIG
    if not config_path.is_file():
        raise CheckpointError(f"{folder}: no {HF_CONFIG}; not a Hugging Face model folder")
    config = _read_json(config_path)
    model_type = config.get("model_type")
    if model_type != "segformer":
        raise CheckpointError(
            f"{config_path}: model_type {model_type!r}; duda loads Hugging Face folders of "
            f"model_type 'segformer' ({HF_CLASS}) only"
        )
    architectures = config.get("architectures") or [HF_CLASS]
    if HF_CLASS not in architectures:
        raise CheckpointError(
            f"{config_path}: architectures {architectures}, expected {HF_CLASS}; an ImageNet MiT encoder "
            "(SegformerForImageClassification, e.g. nvidia/mit-b0) is a `pretrained:` backbone source"
        )
    weights = _weights_file(folder)
    classes = _labels(config, str(config_path))
    name, overrides = arch_from_config(config, str(config_path))
    try:
        model = build_model(name, num_classes=len(classes), **overrides)
    except ConfigError as exc:
        raise CheckpointError(f"{config_path}: no duda model for this SegformerConfig ({exc})") from None
    state = from_hf_state(read_state_dict(weights), model, str(weights))
    model.load_state_dict(state, strict=False)  # strictness checked above (num_batches_tracked optional)
    model.eval()
    entry = config.get(DUDA_ENTRY) if isinstance(config.get(DUDA_ENTRY), dict) else {}
    mean, std = _normalisation(folder, entry)
    return InferenceModel(
        model=model,
        model_name=name,
        num_classes=len(classes),
        classes=classes,
        palette=_palette(entry, classes),
        mean=mean,
        std=std,
        resize=_resize(folder, entry),
        spec=dict(model.spec),
    )

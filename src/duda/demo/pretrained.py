"""Pretrained encoders of the built-in benchmark: shipped with the package, or made and cached.

Every demo run starts from encoder weights made by ``duda.pretrain`` (the stand-in for ImageNet).
The encoders the demo's configs and the Figure-1 script use are shipped in
``duda/assets/pretrained`` (written by ``duda pretrain --demo``, fp16 to keep the package small);
any other architecture is pretrained on first use and cached beside the benchmark data.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from duda.log import info
from duda.models.pretrained import shipped_weights_dir
from duda.pretrain import PretrainConfig, cached_pretrained

#: The demo's pretraining recipe (see docs/benchmark.md, "Pretrained encoders").
RECIPE: dict[str, Any] = {"iters": 1000, "batch_size": 16, "size": 64, "lr": 1e-3, "warmup_iters": 100}

_MODEL = "segformer_mit_tiny"
#: Shipped encoders: key -> (model name, architecture overrides). "large" and "small" are the
#: demo's pair (MiT-B0 widths vs. a 29x smaller MiT); "medium" and "wide" are the other student
#: sizes of the Figure-1 script.
DEMO_ENCODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "large": (
        _MODEL,
        {
            "embed_dims": [32, 64, 160, 256],
            "depths": [2, 2, 2, 2],
            "num_heads": [1, 2, 5, 8],
            "head_channels": 128,
        },
    ),
    "small": (
        _MODEL,
        {
            "embed_dims": [8, 16, 32, 64],
            "depths": [1, 1, 1, 1],
            "num_heads": [1, 1, 2, 4],
            "head_channels": 32,
        },
    ),
    "medium": (
        _MODEL,
        {
            "embed_dims": [16, 32, 64, 128],
            "depths": [1, 1, 1, 1],
            "num_heads": [1, 1, 2, 4],
            "head_channels": 64,
        },
    ),
    "wide": (
        _MODEL,
        {
            "embed_dims": [24, 48, 96, 192],
            "depths": [1, 1, 2, 1],
            "num_heads": [1, 2, 2, 4],
            "head_channels": 96,
        },
    ),
}


def shipped_dir() -> Path:
    """Folder of the encoder weights shipped inside the package (``pretrained: duda:KEY``)."""
    return shipped_weights_dir()


def demo_pretrain_config(key: str, **overrides: Any) -> PretrainConfig:
    name, arch = DEMO_ENCODERS[key]
    return PretrainConfig(name, dict(arch), **{**RECIPE, **overrides})


def _encoder_arch(arch: dict[str, Any]) -> dict[str, Any]:
    """The architecture fields that shape the encoder (the head is not part of the weights)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items() if not k.startswith("head")}


def weights_for(
    model_name: str,
    arch: dict[str, Any],
    cache_dir: Path,
    log: Callable[[str], None] = info,
) -> tuple[Path, float]:
    """Pretrained encoder weights for ``model_name`` with ``arch``: the shipped file when one fits,
    else a cached (or newly made) one in ``cache_dir``. Returns the path and seconds spent making it."""
    for key, (name, shipped_arch) in DEMO_ENCODERS.items():
        if name != model_name or _encoder_arch(shipped_arch) != _encoder_arch(arch):
            continue
        for folder in (shipped_dir(), cache_dir):
            path = folder / f"{key}.safetensors"
            if _record_matches(path, demo_pretrain_config(key)):
                return path, 0.0
        t0 = time.perf_counter()
        log(f"pretraining the '{key}' encoder (not shipped or out of date) into {cache_dir}")
        path, _ = cached_pretrained(demo_pretrain_config(key), cache_dir / f"{key}.safetensors", log)
        return path, time.perf_counter() - t0
    digest = hashlib.sha1(json.dumps([model_name, _encoder_arch(arch)], sort_keys=True).encode()).hexdigest()[
        :10
    ]
    cfg = PretrainConfig(model_name, _encoder_arch(arch), **RECIPE)
    t0 = time.perf_counter()
    path, reused = cached_pretrained(cfg, cache_dir / f"{model_name}-{digest}.safetensors", log)
    return path, 0.0 if reused else time.perf_counter() - t0


def _record_matches(path: Path, cfg: PretrainConfig) -> bool:
    meta = Path(f"{path}.json")
    if not (path.is_file() and meta.is_file()):
        return False
    try:
        record = json.loads(meta.read_text())
    except ValueError:
        return False
    identity = cfg.identity()
    # the head is not part of the file: a shipped encoder serves any head width
    return all(
        record.get(k) == v for k, v in identity.items() if v is not None and k != "arch"
    ) and _encoder_arch(record.get("arch", {})) == _encoder_arch(identity["arch"])


def missing_keys(model_cfgs, cache_dir: Path) -> list[str]:
    """The ``duda:KEY`` encoders of ``model_cfgs`` that neither the package nor ``cache_dir``
    holds up to date (each key once, in order)."""
    keys: list[str] = []
    for m in model_cfgs:
        key = (m.pretrained or "").removeprefix("duda:")
        if not (m.pretrained or "").startswith("duda:") or key not in DEMO_ENCODERS or key in keys:
            continue
        cfg = demo_pretrain_config(key)
        if not any(_record_matches(d / f"{key}.safetensors", cfg) for d in (shipped_dir(), cache_dir)):
            keys.append(key)
    return keys


def _pretrain_one(cfg: PretrainConfig, out: Path) -> str:
    cached_pretrained(cfg, out, log=lambda _: None)
    return str(out)


def pretrain_in_parallel(
    keys: list[str], cache_dir: Path, jobs: int, log: Callable[[str], None] = info
) -> float:
    """Make the encoders ``keys`` in ``cache_dir``, up to ``jobs`` at once (one torch thread
    each), largest first. Returns the seconds spent."""

    t0 = time.perf_counter()
    log(f"pretraining the {', '.join(keys)} encoder(s) (not shipped or out of date) into {cache_dir}, "
        f"{min(jobs, len(keys))} at once")  # fmt: skip
    cache_dir.mkdir(parents=True, exist_ok=True)
    order = sorted(keys, key=lambda k: -sum(DEMO_ENCODERS[k][1].get("embed_dims", [0])))
    with ProcessPoolExecutor(min(jobs, len(keys)), mp_context=mp.get_context("spawn")) as pool:
        futures = [
            pool.submit(_pretrain_one, demo_pretrain_config(k, threads=1), cache_dir / f"{k}.safetensors")
            for k in order
        ]
        for f in futures:
            f.result()
    return time.perf_counter() - t0

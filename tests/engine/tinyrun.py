"""Tiny-run configs for the end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import yaml


def tiny_config(
    synth_root: Path, work_dir: Path, method: str = "daformer", overrides: dict | None = None
) -> dict:
    """A config dict for a few CPU steps on 32×32 crops with tiny models."""
    tiny = {"embed_dims": [8, 16, 16, 32], "head_channels": 16}
    cfg = {
        "work_dir": str(work_dir),
        "model": {"name": "daformer_mit_tiny", "arch": dict(tiny)},
        "data": {
            "source": {"type": "gta", "root": str(synth_root / "source"), "resize": [128, 64]},
            "target": {
                "type": "cityscapes",
                "root": str(synth_root / "real"),
                "split": "train",
                "resize": [128, 64],
            },
            "val": {
                "type": "cityscapes",
                "root": str(synth_root / "real"),
                "split": "val",
                "resize": [128, 64],
            },
            "crop_size": [32, 32],
            "batch_size": 2,
            "workers": 0,
            "rcs": {"min_pixels": 20},
        },
        "method": {
            "name": method,
            "uda": {"ignore_top": 2, "ignore_bottom": 4, "pseudo_threshold": 0.05, "mask_block_size": 8},
        },
        "optim": {"warmup_iters": 2, "lr": 1e-3},
        "train": {
            "iters": 4,
            "eval_every": 0,
            "ckpt_every": 1,
            "keep_last": 10,
            "log_every": 1,
            "device": "cpu",
        },
    }
    if method == "duda":
        cfg["method"]["duda"] = {
            "large": {
                "name": "daformer_mit_tiny",
                "arch": {"embed_dims": [8, 16, 32, 32], "head_channels": 16},
            },
            "stage1_iters": 2,
        }
    deep_update(cfg, overrides or {})
    return cfg


def write_config(cfg: dict, path: Path) -> Path:
    path.write_text(yaml.safe_dump(cfg))
    return path


def deep_update(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            deep_update(base[k], v)
        else:
            base[k] = v
    return base


#: HRDA at tiny size: 64×64 training crops, seen at 32×32 (context) and through a 32×32 detail crop
HRDA_TINY = {"data": {"crop_size": [64, 64]}, "method": {"hrda": {"hr_crop_size": [32, 32]}}}

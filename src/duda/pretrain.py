"""A stand-in for ImageNet pretraining: dense shape recognition on generic procedural images.

The built-in benchmark cannot download ImageNet weights, yet the recipe it miniaturises starts
every encoder from them (and the feature distance pulls features back towards them). This module
makes such weights: it trains an encoder (with a throw-away SegFormer-style head) to segment
``PRETRAIN_CLASSES`` — generic shapes on cluttered, textured backgrounds in random palettes,
i.e. neither the "game" source nor the "real"/"night"/"fog" targets — and writes the encoder
weights in the layout of the Hugging Face ``nvidia/mit-b*`` checkpoints
(``segformer.encoder.*``; ``resnet.*``-free torchvision keys for ResNets), so that
``build_model(name, pretrained=FILE)`` loads them exactly as it loads published weights.

Everything is deterministic in ``(seed, index)``: ``duda pretrain`` with the same arguments
writes the same file.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from duda.data.transforms import normalize
from duda.engine.optim import build_optimizer, lr_factor, set_lr
from duda.errors import ConfigError
from duda.files import atomic_path, write_text
from duda.log import info
from duda.models import build_model

PRETRAIN_VERSION = 1  # bump when the images or the recipe change: cached weights are then redone
#: Region textures (every pixel of the image belongs to one) and shapes drawn on top.
TEXTURES = ("flat", "stripes", "checker", "dots", "blobs")
SHAPES = ("disk", "rectangle", "triangle", "cross", "bar")
PRETRAIN_CLASSES = tuple(f"texture: {n}" for n in TEXTURES) + tuple(f"shape: {n}" for n in SHAPES)
_DOMAIN_CODE = 97  # keeps these images' random streams apart from the benchmark's


# ----------------------------------------------------------------------------- images


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A colour from a random palette: uniform hue, wide saturation and value ranges."""
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(0, 255), rng.uniform(40, 255)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)


def _texture(kind: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """A size×size float pattern in [0, 1] of texture class ``kind`` (index into TEXTURES), at a
    random orientation, scale and phase."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    a = rng.uniform(0, math.pi)
    u = xx * math.cos(a) + yy * math.sin(a)
    v = -xx * math.sin(a) + yy * math.cos(a)
    period = size * rng.uniform(0.12, 0.3)
    name = TEXTURES[kind]
    if name == "flat":
        return np.zeros((size, size), np.float32)
    if name == "stripes":
        return (np.sin(u * 2 * math.pi / period) > 0).astype(np.float32)
    if name == "checker":
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if name == "dots":
        du, dv = (u % period) - period / 2, (v % period) - period / 2
        return (du**2 + dv**2 < (period * rng.uniform(0.2, 0.35)) ** 2).astype(np.float32)
    if name == "fine noise":
        return rng.random((size, size)).astype(np.float32)
    if name == "blobs":
        cells = max(2, int(rng.uniform(3, 6)))
        small = rng.random((cells, cells)).astype(np.float32)
        return (cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC) > 0.5).astype(np.float32)
    if name == "grid":
        w = max(1.0, period * 0.2)
        return (((u % period) < w) | ((v % period) < w)).astype(np.float32)
    cx, cy = rng.uniform(0, size, 2)  # rings
    return (np.sin(np.hypot(xx - cx, yy - cy) * 2 * math.pi / period) > 0).astype(np.float32)


def _region_map(rng: np.random.Generator, size: int) -> np.ndarray:
    """A partition of the image into 2-6 irregular regions (warped Voronoi cells), as ids."""
    n = int(rng.integers(2, 7))
    seeds = rng.uniform(0, size, (n, 2))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    warp = cv2.resize(rng.normal(0, size * 0.08, (4, 4, 2)).astype(np.float32), (size, size))
    px, py = xx + warp[..., 0], yy + warp[..., 1]
    dist = (px[None] - seeds[:, 0, None, None]) ** 2 + (py[None] - seeds[:, 1, None, None]) ** 2
    return dist.argmin(0)


def _shape_polygon(cls: int, rng: np.random.Generator, cx: float, cy: float, r: float) -> list[np.ndarray]:
    """Outline(s) of shape class ``cls`` (1-based index of PRETRAIN_CLASSES) as int32 point arrays.

    Returns [outer] or [outer, hole] (the hole is cut out of the mask by the caller).
    """
    rot = rng.uniform(0, 2 * math.pi)

    def poly(radii: np.ndarray, angles: np.ndarray, sx: float = 1.0, sy: float = 1.0) -> np.ndarray:
        x, y = radii * np.cos(angles) * sx, radii * np.sin(angles) * sy
        xr = cx + x * math.cos(rot) - y * math.sin(rot)
        yr = cy + x * math.sin(rot) + y * math.cos(rot)
        return np.stack([xr, yr], axis=1).round().astype(np.int32)

    t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    name = SHAPES[cls]
    if name == "disk":
        return [poly(np.full_like(t, r), t)]
    if name == "ring":
        return [poly(np.full_like(t, r), t), poly(np.full_like(t, r * rng.uniform(0.45, 0.7)), t)]
    if name == "rectangle":
        a = np.array([0.25, 0.75, 1.25, 1.75]) * math.pi
        return [poly(np.full(4, r), a, 1.0, rng.uniform(0.35, 1.0))]
    if name == "triangle":
        return [poly(np.full(3, r), np.array([0, 2, 4]) * math.pi / 3)]
    if name == "star":
        k = 5
        a = np.arange(2 * k) * math.pi / k
        return [poly(np.where(np.arange(2 * k) % 2 == 0, r, r * 0.45), a)]
    if name == "cross":
        w = r * 0.33
        pts = [(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r), (-w, w), (-r, w)]
        pts += [(-r, -w), (-w, -w)]
        xy = np.array(pts, np.float32)
        return [poly(np.hypot(xy[:, 0], xy[:, 1]), np.arctan2(xy[:, 1], xy[:, 0]))]
    # bar
    a = np.array([0.25, 0.75, 1.25, 1.75]) * math.pi
    return [poly(np.full(4, r * 1.3), a, 1.0, rng.uniform(0.08, 0.18))]


def generate_pretrain_sample(index: int, seed: int = 0, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """``(RGB uint8 size×size×3, label uint8 size×size)`` of pretraining image ``index``.

    Pure and deterministic in ``(seed, index, size)``.
    """
    rng = np.random.default_rng([seed, _DOMAIN_CODE, index])
    # every pixel belongs to a region of some texture in two random colours
    regions = _region_map(rng, size)
    img = np.zeros((size, size, 3), np.float32)
    label = np.zeros((size, size), np.uint8)
    for rid in range(int(regions.max()) + 1):
        inside = regions == rid
        kind = int(rng.integers(len(TEXTURES)))
        c0, c1 = _random_colour(rng), _random_colour(rng)
        p = _texture(kind, rng, size)[..., None]
        img[inside] = (c0 * (1 - p) + c1 * p)[inside]
        label[inside] = kind
    # clutter lines (they keep the label of what they cross) and shapes on top
    for _ in range(int(rng.integers(0, 6))):
        a, b = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
        cv2.line(img, tuple(int(v) for v in a), tuple(int(v) for v in b), _random_colour(rng).tolist(), 1)
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(len(SHAPES)))
        r = size * rng.uniform(0.1, 0.3)
        cx, cy = rng.uniform(0, size, 2)
        polys = _shape_polygon(cls, rng, cx, cy, r)
        mask = np.zeros((size, size), np.uint8)
        cv2.fillPoly(mask, [polys[0]], 1)
        if len(polys) > 1:
            cv2.fillPoly(mask, [polys[1]], 0)
        inside = mask.astype(bool)
        c0, c1 = _random_colour(rng), _random_colour(rng)
        p = _texture(int(rng.integers(len(TEXTURES))), rng, size)[..., None] * rng.uniform(0, 0.5)
        img[inside] = (c0 * (1 - p) + c1 * p)[inside]
        label[inside] = len(TEXTURES) + cls
    # camera-like effects, random per image
    if rng.random() < 0.5:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 1.2))
    img = img * rng.uniform(0.7, 1.3) + rng.uniform(-30, 30)
    img = img + rng.normal(0, rng.uniform(0, 8), img.shape)
    return img.clip(0, 255).astype(np.uint8), label


# ----------------------------------------------------------------------------- training


@dataclass
class PretrainConfig:
    """One pretraining run; the defaults are the built-in benchmark's."""

    model: str  # a name from `duda models`
    arch: dict[str, Any] = field(default_factory=dict)  # architecture overrides, as in configs
    iters: int = 1500
    batch_size: int = 16
    size: int = 96  # image side
    lr: float = 1e-3  # AdamW, head x10, warm-up then poly decay (as the UDA schedule)
    weight_decay: float = 0.01
    warmup_iters: int = 100
    seed: int = 0
    threads: int = 0  # torch CPU threads; 0 = torch's default
    workers: int = 1  # loader processes drawing the images
    val_images: int = 256  # held-out images for the reported mIoU

    def identity(self) -> dict[str, Any]:
        """What the weights depend on: the cache key of the demo."""
        return {**asdict(self), "threads": None, "workers": None, "version": PRETRAIN_VERSION}


class PretrainImages(torch.utils.data.Dataset):
    """Image ``i`` of the endless pretraining stream (normalised, randomly flipped from its own
    seed), so the stream is the same whatever the number of loader processes."""

    def __init__(self, cfg: PretrainConfig, start: int = 0, length: int = 10**9, flip: bool = True):
        self.cfg, self.start, self.length, self.flip = cfg, start, length, flip

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:

        index = self.start + i
        rgb, lbl = generate_pretrain_sample(index, self.cfg.seed, self.cfg.size)
        if self.flip and np.random.default_rng([self.cfg.seed, _DOMAIN_CODE, index, 1]).random() < 0.5:
            rgb, lbl = rgb[:, ::-1], lbl[:, ::-1]
        return normalize(np.ascontiguousarray(rgb)), torch.from_numpy(np.ascontiguousarray(lbl)).long()


def _loader(cfg: PretrainConfig, dataset: PretrainImages, batch: int, workers: int):
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch, shuffle=False, num_workers=workers, persistent_workers=False
    )


def _miou(model: torch.nn.Module, cfg: PretrainConfig) -> float:
    """mIoU (%) over PRETRAIN_CLASSES on ``val_images`` held-out images (indices from 10^7 on)."""
    k = len(PRETRAIN_CLASSES)
    hist = torch.zeros(k, k, dtype=torch.long)
    model.eval()
    with torch.no_grad():
        for x, y in _loader(cfg, PretrainImages(cfg, 10_000_000, cfg.val_images, flip=False), 32, 0):
            pred = F.interpolate(model(x), size=y.shape[-2:], mode="bilinear", align_corners=False).argmax(1)
            hist += torch.bincount(y.flatten() * k + pred.flatten(), minlength=k * k).view(k, k)
    model.train()
    iou = hist.diag() / (hist.sum(0) + hist.sum(1) - hist.diag()).clamp_min(1)
    return float(iou.mean() * 100)


def backbone_file_state(model: torch.nn.Module, half: bool = False) -> dict[str, torch.Tensor]:
    """The encoder's weights in the published checkpoints' layout (``segformer.encoder.*`` for
    MiT as in ``nvidia/mit-b*``; torchvision keys for ResNets); ``half`` stores float16."""
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.backbone.state_dict().items()
    }
    if model.spec["name"].startswith(("daformer_mit", "segformer_mit")):
        return {f"segformer.{k}": v for k, v in state.items()}
    return state


def pretrain_encoder(
    cfg: PretrainConfig, out: str | Path, log: Callable[[str], None] = info, half: bool = False
) -> dict[str, Any]:
    """Train ``cfg.model``'s encoder on the procedural task; write ``out`` (.safetensors; float16
    with ``half``) and ``out`` + ``.json`` (how it was made, with the held-out mIoU). Returns that
    record."""

    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"pretrain --out {out}: expected a .safetensors file name")
    if cfg.iters < 1 or cfg.batch_size < 1 or cfg.size < 32:
        raise ConfigError(f"pretrain: iters, batch_size >= 1 and size >= 32 expected, got {cfg}")
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, num_classes=len(PRETRAIN_CLASSES), **cfg.arch)
    model.train()
    opt = build_optimizer(model, cfg.lr, cfg.weight_decay, head_lr_mult=10.0)
    images = PretrainImages(cfg, 0, cfg.iters * cfg.batch_size)
    t0, shown = time.perf_counter(), 0.0
    for step, (x, y) in enumerate(_loader(cfg, images, cfg.batch_size, cfg.workers)):
        set_lr(opt, cfg.lr, lr_factor(step, cfg.iters, cfg.warmup_iters, 1e-6, 1.0))
        logits = F.interpolate(model(x), size=y.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if not math.isfinite(loss.item()):
            raise ConfigError(f"pretrain {cfg.model}: loss became {loss.item()} at step {step}; lower --lr")
        now = time.perf_counter() - t0
        if now - shown > 30 or step == cfg.iters - 1:
            shown = now
            log(f"pretrain {cfg.model}: step {step + 1}/{cfg.iters} loss {loss.item():.3f} ({now:.0f} s)")
    miou = _miou(model, cfg)
    record = {
        "format": "duda-pretrained-encoder-1",
        "task": "procedural shape segmentation (duda.pretrain)",
        "classes": list(PRETRAIN_CLASSES),
        "val_miou": round(miou, 2),
        "seconds": round(time.perf_counter() - t0, 1),
        "dtype": "float16" if half else "float32",
        **cfg.identity(),
    }
    with atomic_path(out, what="pretrained encoder") as tmp:  # the umask's mode, as for any file
        save_file(backbone_file_state(model, half), str(tmp), metadata={"duda": json.dumps(record)})
    write_text(Path(f"{out}.json"), json.dumps(record, indent=2))
    log(f"pretrain {cfg.model}: held-out mIoU {miou:.1f}% -> {out}")
    return record


def cached_pretrained(
    cfg: PretrainConfig, out: str | Path, log: Callable[[str], None] = info
) -> tuple[Path, bool]:
    """``out`` if it was made from exactly ``cfg`` (its ``.json`` record matches), else make it.

    Returns the path and whether it was reused.
    """
    out = Path(out)
    meta = Path(f"{out}.json")
    if out.is_file() and meta.is_file():
        try:
            record = json.loads(meta.read_text())
        except ValueError:
            record = {}
        if all(record.get(k) == v for k, v in cfg.identity().items() if v is not None):
            return out, True
    pretrain_encoder(cfg, out, log)
    return out, False

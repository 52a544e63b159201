"""Procedural street-scene benchmark: a GTA-like source and Cityscapes-, Dark Zurich- and ACDC-like targets.

``generate_sample(domain, index, seed)`` renders one image/label pair, pure and deterministic in
its arguments. ``write_split`` writes a domain in the GTA layout (source) or the Cityscapes layout
(targets), so the normal dataset readers and ``duda prepare`` serve it; ``generate_benchmark``
writes all of them. The design (palettes, cameras, layout statistics) lives in
``duda.data.synth_style`` and the scene model in ``duda.data.synth_scene``; both are frozen and
documented in ``docs/benchmark.md``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from duda.data.synth_scene import (
    Canvas,
    draw_camera,
    draw_hood,
    draw_roadside,
    draw_sky_and_ground,
    draw_skyline,
    draw_street,
    place_objects,
)
from duda.data.synth_style import STYLES, add_sensor_noise, apply_fog, apply_night, finish_real
from duda.errors import DatasetError

# 2: REAL_SHIFT 1.5x further from identity (calibration round 2 of the premise benchmark)
GENERATOR_VERSION = 2
DOMAINS = ("game", "real", "night", "fog")
DOMAIN_CODES = {name: code for code, name in enumerate(DOMAINS)}
VAL_INDEX_OFFSET = 1_000_000  # val samples use their own index range, independent of the train count
DEFAULT_SIZE = (256, 512)
CITY = "synth"
# Fast PNG settings: noisy camera images cost most of their write time in zlib; Huffman-only
# coding with the SUB filter is ~2x faster than the default at ~10% larger files. The filter
# flag is newer than OpenCV 4.8 (the lowest supported); PNG is lossless, so without it only the
# write time and file size change, never the pixels.
PNG_PARAMS = [
    cv2.IMWRITE_PNG_COMPRESSION,
    1,
    cv2.IMWRITE_PNG_STRATEGY,
    cv2.IMWRITE_PNG_STRATEGY_HUFFMAN_ONLY,
]
if hasattr(cv2, "IMWRITE_PNG_FILTER"):
    PNG_PARAMS += [cv2.IMWRITE_PNG_FILTER, cv2.IMWRITE_PNG_FILTER_SUB]

_TRAIN_TO_LABEL_ID: np.ndarray | None = None


def train_to_label_id() -> np.ndarray:
    """Lookup table trainId -> Cityscapes labelId (official table); 255 (ego hood) -> 1 'ego vehicle'."""
    global _TRAIN_TO_LABEL_ID
    if _TRAIN_TO_LABEL_ID is None:
        from cityscapesscripts.helpers.labels import labels

        lut = np.zeros(256, np.uint8)
        for lab in labels:
            if 0 <= lab.trainId < 19 and not lab.ignoreInEval:
                lut[lab.trainId] = lab.id
        lut[255] = 1
        _TRAIN_TO_LABEL_ID = lut
    return _TRAIN_TO_LABEL_ID


def _check_domain(domain: str) -> None:
    if domain not in DOMAIN_CODES:
        raise DatasetError(f"unknown synthetic domain {domain!r}; expected one of {', '.join(DOMAINS)}")


def _check_size(size: Sequence[int]) -> tuple[int, int]:
    if len(size) != 2 or any(not isinstance(s, (int, np.integer)) or s < 32 for s in size):
        raise DatasetError(f"synthetic image size {tuple(size)!r}: expected (height, width), each >= 32")
    return int(size[0]), int(size[1])


def generate_sample(
    domain: str, index: int, seed: int, size: Sequence[int] = DEFAULT_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Render sample ``index`` of ``domain``: (RGB uint8 H×W×3, trainId uint8 H×W, 255 = ego hood).

    Pure and deterministic in (domain, index, seed, size): all randomness comes from
    ``np.random.default_rng([seed, domain_code, index])``.
    """
    _check_domain(domain)
    h, w = _check_size(size)
    if index < 0 or seed < 0:
        raise DatasetError(f"synthetic sample index {index} / seed {seed}: expected non-negative integers")
    style = STYLES[domain]
    rng = np.random.default_rng([seed, DOMAIN_CODES[domain], index])
    img = np.empty((h, w, 3), np.uint8)
    label = np.empty((h, w), np.uint8)
    depth = np.empty((h, w), np.float32) if style.fog else None
    cv = Canvas(img=img, label=label, depth=depth, style=style)
    cam = draw_camera(style, rng, h, w)
    street = draw_street(style, rng, cam, w)
    draw_sky_and_ground(cv, street, rng)
    draw_skyline(cv, street, rng)
    draw_roadside(cv, street, rng)
    for _z, draw in sorted(place_objects(cv, street, rng), key=lambda t: -t[0]):
        draw()
    if style.hood:
        draw_hood(cv, rng)
    if style.base == "game":
        return img, label
    out = finish_real(img, label, style, rng)
    if style.fog:
        apply_fog(out, depth, rng)
    if style.night:
        apply_night(out, cv.lights, rng)
    add_sensor_noise(out, style, rng)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8), label


def colorize(label: np.ndarray) -> np.ndarray:
    """Cityscapes colours of a trainId map (ignore in black), RGB uint8."""
    from cityscapesscripts.helpers.labels import trainId2label

    lut = np.zeros((256, 3), np.uint8)
    for tid in range(19):
        lut[tid] = trainId2label[tid].color
    return lut[label]


# --- writing ----------------------------------------------------------------------------------


def sample_paths(root: Path, layout: str, split: str, number: int) -> tuple[Path, Path]:
    """Image and label path of file ``number`` in the GTA or Cityscapes layout."""
    if layout == "gta":
        name = f"{number:05d}.png"
        return root / "images" / name, root / "labels" / name
    if layout == "cityscapes":
        stem = f"{CITY}_000000_{number:06d}"
        return (
            root / "leftImg8bit" / split / CITY / f"{stem}_leftImg8bit.png",
            root / "gtFine" / split / CITY / f"{stem}_gtFine_labelIds.png",
        )
    raise DatasetError(f"synthetic layout {layout!r}: expected 'gta' or 'cityscapes'")


def _write_png(path: Path, array: np.ndarray) -> None:
    """Write a PNG atomically (temporary file + rename), so a partial file is never seen."""
    ok, buf = cv2.imencode(".png", array, PNG_PARAMS)
    if not ok:
        raise DatasetError(f"could not encode PNG for {path}")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buf.tobytes())
    os.replace(tmp, path)


def _write_range(
    root: str, domain: str, layout: str, split: str, seed: int, size: tuple[int, int], numbers: list[int]
) -> int:
    """Generate and write the given file numbers; returns how many were written."""
    lut = train_to_label_id()
    written = 0
    offset = VAL_INDEX_OFFSET if split == "val" else 0
    for number in numbers:
        img_path, lbl_path = sample_paths(Path(root), layout, split, number)
        if img_path.exists() and lbl_path.exists():
            continue
        img, label = generate_sample(domain, offset + number, seed, size)
        _write_png(lbl_path, lut[label])
        _write_png(img_path, img[..., ::-1])  # OpenCV writes BGR
        written += 1
    return written


def _meta_path(root: Path) -> Path:
    return root / "meta.json"


def read_meta(root: str | os.PathLike) -> dict | None:
    """The ``meta.json`` of a generated domain folder, or None if absent or unreadable."""
    try:
        return json.loads(_meta_path(Path(root)).read_text())
    except (OSError, ValueError):
        return None


def _identity(domain: str, seed: int, size: tuple[int, int], layout: str) -> dict:
    return {
        "generator_version": GENERATOR_VERSION,
        "domain": domain,
        "seed": seed,
        "size": list(size),
        "layout": layout,
    }


def meta_matches(
    root: str | os.PathLike, domain: str, seed: int, size: Sequence[int], counts: dict[str, int]
) -> bool:
    """Whether ``root`` already holds this domain with this generator version, seed, size and counts."""
    meta = read_meta(root)
    if meta is None:
        return False
    layout = "gta" if domain == "game" else "cityscapes"
    ident = _identity(domain, seed, _check_size(size), layout)
    have = meta.get("counts", {})
    return all(meta.get(k) == v for k, v in ident.items()) and all(
        have.get(s, -1) >= n for s, n in counts.items()
    )


def write_split(
    root: str | os.PathLike,
    domain: str,
    n: int,
    seed: int,
    size: Sequence[int] = DEFAULT_SIZE,
    layout: str = "gta",
    split: str = "train",
    workers: int = 1,
) -> int:
    """Write ``n`` samples of ``domain`` under ``root``; returns the number of files pairs written.

    Idempotent: if ``root/meta.json`` shows the same generator version, seed, size and layout,
    existing image/label pairs are kept (writes are atomic, so an existing file is complete);
    otherwise the old generated files are deleted and all are rewritten. ``meta.json`` records the
    counts per split.
    """
    _check_domain(domain)
    hw = _check_size(size)
    if n < 0:
        raise DatasetError(f"number of synthetic samples {n}: expected >= 0")
    if split not in ("train", "val"):
        raise DatasetError(f"synthetic split {split!r}: expected 'train' or 'val'")
    root = Path(root)
    img_dir, lbl_dir = (p.parent for p in sample_paths(root, layout, split, 0))
    try:
        img_dir.mkdir(parents=True, exist_ok=True)
        lbl_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create synthetic dataset folder under {root}: {exc}") from None
    ident = _identity(domain, seed, hw, layout)
    meta = read_meta(root)
    if meta is None or any(meta.get(k) != v for k, v in ident.items()):
        # Another version, seed or size: its files must not be mixed with ours. Remove them first and
        # record the new identity, so that an interrupted run resumes instead of starting over.
        _remove_generated(root)
        meta = {**ident, "counts": {}}
        _write_meta(root, meta)
    numbers = list(range(n))
    if workers <= 1 or n < 16:
        written = _write_range(str(root), domain, layout, split, seed, hw, numbers)
    else:
        chunks = [numbers[i::workers] for i in range(workers)]
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [
                pool.submit(_write_range, str(root), domain, layout, split, seed, hw, c) for c in chunks
            ]
            written = sum(f.result() for f in futures)
    counts = meta.get("counts", {})
    meta["counts"] = {**counts, split: max(n, counts.get(split, 0))}
    _write_meta(root, meta)
    return written


def _write_meta(root: Path, meta: dict) -> None:
    tmp = root / ".meta.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp, _meta_path(root))


def _remove_generated(root: Path) -> None:
    """Delete the PNGs this generator writes under ``root`` (and only those) and the old meta."""
    patterns = ["images/[0-9]*.png", "labels/[0-9]*.png", f"leftImg8bit/*/{CITY}/{CITY}_*_leftImg8bit.png"]
    patterns.append(f"gtFine/*/{CITY}/{CITY}_*_gtFine_labelIds.png")
    _meta_path(root).unlink(missing_ok=True)
    for pattern in patterns:
        for path in root.glob(pattern):
            path.unlink()


def generate_benchmark(
    root: str | os.PathLike,
    seed: int = 0,
    size: Sequence[int] = DEFAULT_SIZE,
    n_source: int = 2000,
    n_target_train: int = 2000,
    n_target_val: int = 500,
    domains: Sequence[str] = ("real", "night", "fog"),
    workers: int = 1,
) -> dict[str, Path]:
    """Write ``root/source`` (GTA layout, domain "game") and ``root/<domain>`` (Cityscapes layout).

    Returns the folder of each written domain, keyed "source" and by target domain name.
    """
    root = Path(root)
    for d in domains:
        _check_domain(d)
        if d == "game":
            raise DatasetError("target domains: 'game' is the source; choose from real, night, fog")
    out = {"source": root / "source"}
    write_split(out["source"], "game", n_source, seed, size, layout="gta", workers=workers)
    for d in domains:
        out[d] = root / d
        write_split(
            out[d], d, n_target_train, seed, size, layout="cityscapes", split="train", workers=workers
        )
        write_split(out[d], d, n_target_val, seed, size, layout="cityscapes", split="val", workers=workers)
    return out


def render_sheet(
    path: str | os.PathLike,
    seed: int = 0,
    size: Sequence[int] = DEFAULT_SIZE,
    per_domain: int = 3,
    domains: Sequence[str] = DOMAINS,
) -> Path:
    """Save a picture sheet: per domain one row of images and one row of coloured labels."""
    hw = _check_size(size)
    rows = []
    gap = np.full((4, hw[1] * per_domain + 4 * (per_domain - 1), 3), 255, np.uint8)
    for d in domains:
        _check_domain(d)
        pairs = [generate_sample(d, i, seed, hw) for i in range(per_domain)]
        vgap = np.full((hw[0], 4, 3), 255, np.uint8)

        def row(arrs: list[np.ndarray], g: np.ndarray = vgap) -> np.ndarray:
            out = [arrs[0]]
            for a in arrs[1:]:
                out += [g, a]
            return np.concatenate(out, axis=1)

        rows += [row([p[0] for p in pairs]), gap, row([colorize(p[1]) for p in pairs]), gap, gap]
    sheet = np.concatenate(rows[:-2], axis=0)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_png(path, sheet[..., ::-1])
    return path

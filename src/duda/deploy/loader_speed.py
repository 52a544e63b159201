"""Training-loader throughput on full-size frames: is data loading what limits training?

Builds a temporary GTA5-like source (1914×1052 PNGs, palette labels) and Cityscapes-like
target (2048×1024), runs ``duda prepare`` on the source, then times, per image:
decoding with OpenCV and PIL, the keep-ratio resize, one full training sample (source +
target: read, resize, crop 512, flip, normalise), and the ``build_train_loader`` stream with
0/1/2 workers. Prints a table. Usage: ``python benchmarks/loader_speed.py [--workers 0 1 2]``
(``duda bench`` uses ``build_trees`` and ``loader_rate``).
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image

from duda.data.datasets import CityscapesDataset, GTA5Dataset
from duda.data.io import read_image
from duda.data.loader import UDATrainSet, build_train_loader
from duda.data.prepare import prepare_dataset
from duda.data.transforms import resize_keep_ratio


def natural_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth blobs plus mild noise: compresses like a photo, unlike pure noise."""
    coarse = rng.integers(0, 256, (height // 32 + 1, width // 32 + 1, 3), dtype=np.uint8)
    img = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.integers(-8, 9, img.shape, dtype=np.int16)
    return np.clip(img.astype(np.int16) + noise, 0, 255).astype(np.uint8)


def blob_labels(rng: np.random.Generator, width: int, height: int, ids: list[int]) -> np.ndarray:
    coarse = rng.choice(np.array(ids, dtype=np.uint8), size=(height // 64 + 1, width // 64 + 1))
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_NEAREST)


def build_trees(root: Path, n: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    ids = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33, 0]
    gta, cs = root / "gta", root / "cityscapes"
    for i in range(1, n + 1):
        (gta / "images").mkdir(parents=True, exist_ok=True)
        (gta / "labels").mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(gta / "images" / f"{i:05d}.png"), natural_image(rng, 1914, 1052))
        label = Image.fromarray(blob_labels(rng, 1914, 1052, ids), mode="P")
        label.putpalette([v for c in range(256) for v in (c, c, c)])
        label.save(gta / "labels" / f"{i:05d}.png")
        stem = f"aachen_000000_{i:06d}"
        img_dir, gt_dir = cs / "leftImg8bit" / "train" / "aachen", cs / "gtFine" / "train" / "aachen"
        img_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(img_dir / f"{stem}_leftImg8bit.png"), natural_image(rng, 2048, 1024))
        cv2.imwrite(str(gt_dir / f"{stem}_gtFine_labelIds.png"), blob_labels(rng, 2048, 1024, ids))
    return gta, cs


def per_second(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return repeats / (time.perf_counter() - start)


def loader_rate(dataset, workers: int, batches: int, batch_size: int) -> float:

    it = iter(build_train_loader(dataset, batch_size=batch_size, workers=workers))
    next(it)  # start-up and first batch are not the steady state
    start = time.perf_counter()
    for _ in itertools.islice(it, batches):
        pass
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8, help="frames per synthetic dataset")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0, 1, 2], help="loader worker counts to time"
    )
    parser.add_argument("--batches", type=int, default=12, help="timed batches per worker count")
    parser.add_argument("--batch-size", type=int, default=2, help="samples per batch (DAFormer: 2)")
    args = parser.parse_args()

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        gta_root, cs_root = build_trees(Path(tmp), args.images)
        prepare_dataset("gta", gta_root, progress=False)
        prepare_dataset("cityscapes", cs_root, progress=False)
        gta, cs = GTA5Dataset(gta_root), CityscapesDataset(cs_root, "train")
        path = str(gta.image_path(0))
        img, label = gta.load_pair(0)
        rows = [
            ("decode 1914x1052 PNG, OpenCV", per_second(lambda: read_image(path), 5)),
            ("decode 1914x1052 PNG, PIL", per_second(lambda: np.asarray(Image.open(path).convert("RGB")), 5)),
            ("read trainId label (OpenCV)", per_second(lambda: gta.load_label(0), 5)),
            (
                "resize to 1280x704 (image+label)",
                per_second(lambda: resize_keep_ratio(img, label, (1280, 720)), 5),
            ),
        ]
        train = UDATrainSet(gta, cs, 512, seed=0)
        counter = itertools.count()
        rows.append(
            ("UDATrainSet sample (src+tgt), main process", per_second(lambda: train[next(counter)], 5))
        )
        for workers in args.workers:
            rate = loader_rate(train, workers, args.batches, args.batch_size)
            rows.append((f"train loader, {workers} worker(s), batch {args.batch_size}", rate))
    print(f"{'step':<48} {'per second':>10}")
    print("-" * 59)
    for name, rate in rows:
        print(f"{name:<48} {rate:>10.1f}")
    print("(a 'sample' is one source + one target crop; a DAFormer iteration needs batch-size samples)")


if __name__ == "__main__":
    main()

"""Training and evaluation loaders.

The training set is indexed by *global sample number* ``k``: sample ``k`` draws everything
random (source image via rare-class sampling, target image, crops, flips) from
``np.random.default_rng([seed, k])``. The sampler hands out ``k`` for iteration ``t``, rank
``r`` and batch slot ``j`` as ``(t·world_size + r)·batch_size + j``, so resuming at ``t`` and
changing the number of data-loader workers never changes the stream.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

from duda.data.datasets import SegDataset
from duda.data.labels import IGNORE_INDEX
from duda.data.rcs import RareClassSampler, RCSConfig
from duda.data.transforms import (
    choose_crop_box,
    crop_array,
    hflip,
    normalize,
    pad_to,
    random_crop_box,
    resize_keep_ratio,
    valid_margin_mask,
)
from duda.errors import DatasetError

CITYSCAPES_VALID_MARGINS = (30, 240, 30, 30)  # MIC/HRDA: top, bottom, left, right of 2048×1024


def _crop_size(crop_size: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(crop_size, int):
        return crop_size, crop_size
    return int(crop_size[0]), int(crop_size[1])


class UDATrainSet(Dataset):
    """Paired source/target training crops, deterministic in ``(seed, k)``.

    ``target=None`` gives a source-only set (target keys absent). ``rcs``: an ``RCSConfig`` (the
    sampler is built from ``source.class_stats()``), a ready ``RareClassSampler``, or None for
    uniform sampling. ``target_valid_margins`` (top, bottom, left, right) in pixels of
    ``margin_reference_size`` zero ``tgt_valid`` at the image borders (None = all ones).
    ``target_cat_max_ratio`` is 1 (off) by default, as in the reference: its target pipeline
    crops without the 0.75 rule (which would consult target labels UDA must not see).
    """

    def __init__(
        self,
        source: SegDataset,
        target: SegDataset | None,
        crop_size: int | tuple[int, int],
        seed: int,
        source_resize: tuple[int, int] | None = None,
        target_resize: tuple[int, int] | None = None,
        rcs: RCSConfig | RareClassSampler | None = None,
        min_crop_ratio: float | None = None,
        target_valid_margins: tuple[int, int, int, int] | None = None,
        margin_reference_size: tuple[int, int] = (2048, 1024),
        cat_max_ratio: float = 0.75,
        target_cat_max_ratio: float = 1.0,
        flip_prob: float = 0.5,
        rcs_crop_tries: int | None = None,
    ) -> None:
        if not source.has_labels:
            raise DatasetError(f"source dataset {source!r} has no labels; a source set must be labelled")
        if target is not None and target.labels.num_classes != source.labels.num_classes:
            raise DatasetError(
                f"source {source.name} has {source.labels.num_classes} classes but target {target.name} "
                f"has {target.labels.num_classes}; expected the same label space"
            )
        self.source, self.target = source, target
        self.crop = _crop_size(crop_size)
        self.seed = int(seed)
        self.source_resize = source_resize if source_resize is not None else source.default_resize
        self.target_resize = (
            target_resize if target_resize is not None or target is None else target.default_resize
        )
        self.sampler, self.min_crop_ratio, self.rcs_crop_tries = self._rcs(
            rcs, min_crop_ratio, rcs_crop_tries
        )
        self.target_valid_margins = target_valid_margins
        self.margin_reference_size = margin_reference_size
        self.cat_max_ratio = cat_max_ratio
        self.target_cat_max_ratio = target_cat_max_ratio
        self.flip_prob = flip_prob

    def _rcs(
        self, rcs: RCSConfig | RareClassSampler | None, ratio: float | None, tries: int | None
    ) -> tuple[RareClassSampler | None, float, int]:
        if isinstance(rcs, RCSConfig):
            sampler = RareClassSampler(
                self.source.class_stats(), self.source.labels.num_classes, rcs.temperature, rcs.min_pixels
            )
            return (
                sampler,
                rcs.min_crop_ratio if ratio is None else ratio,
                rcs.crop_tries if tries is None else tries,
            )
        return rcs, 0.5 if ratio is None else ratio, 10 if tries is None else tries

    def rng(self, k: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, int(k)])

    def _source_crop(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if self.sampler is not None:
            index, cls = self.sampler.sample(rng)
        else:
            index, cls = int(rng.integers(len(self.source))), None
        img, gt = self.source.load_pair(index)
        img, gt = resize_keep_ratio(img, gt, self.source_resize)
        assert gt is not None
        # RCS: re-crop until the crop shows the drawn class well (> min_pixels · min_crop_ratio).
        need = (
            self.sampler.min_pixels * self.min_crop_ratio
            if cls is not None and self.min_crop_ratio > 0
            else None
        )
        for _ in range(self.rcs_crop_tries if need is not None else 1):
            box = choose_crop_box(gt, self.crop, rng, self.cat_max_ratio)
            if need is None or np.count_nonzero(crop_array(gt, box) == cls) > need:
                break
        return crop_array(img, box), crop_array(gt, box)

    def _target_crop(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        assert self.target is not None
        index = int(rng.integers(len(self.target)))
        img, gt = self.target.load_pair(index)
        img, gt = resize_keep_ratio(img, gt, self.target_resize)
        valid = valid_margin_mask(img.shape[:2], self.target_valid_margins, self.margin_reference_size)
        if gt is not None and self.target_cat_max_ratio < 1.0:
            box = choose_crop_box(gt, self.crop, rng, self.target_cat_max_ratio)
        else:
            box = random_crop_box(img.shape[0], img.shape[1], self.crop, rng)
        gt = None if gt is None else crop_array(gt, box)
        return crop_array(img, box), gt, crop_array(valid, box)

    def _flip(self, rng: np.random.Generator, *arrays: np.ndarray | None) -> tuple[np.ndarray | None, ...]:
        return hflip(*arrays) if rng.random() < self.flip_prob else arrays

    def _to_tensors(self, img: np.ndarray, gt: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
        x = normalize(img)
        pad_h, pad_w = self.crop[0] - x.shape[1], self.crop[1] - x.shape[2]
        if pad_h > 0 or pad_w > 0:  # mmseg pads after Normalize, so padding is 0 in normalised space
            x = torch.nn.functional.pad(x, (0, max(pad_w, 0), 0, max(pad_h, 0)))
        if gt is None:
            y = np.full(self.crop, IGNORE_INDEX, dtype=np.int64)
        else:
            y = pad_to(gt, self.crop, IGNORE_INDEX).astype(np.int64)
        return x, torch.from_numpy(y)

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        rng = self.rng(k)
        src_img, src_gt = self._source_crop(rng)
        src_img, src_gt = self._flip(rng, src_img, src_gt)
        out: dict[str, torch.Tensor] = {}
        out["src_img"], out["src_gt"] = self._to_tensors(src_img, src_gt)
        if self.target is not None:
            tgt_img, tgt_gt, valid = self._target_crop(rng)
            tgt_img, tgt_gt, valid = self._flip(rng, tgt_img, tgt_gt, valid)
            out["tgt_img"], out["tgt_gt"] = self._to_tensors(tgt_img, tgt_gt)
            out["tgt_valid"] = torch.from_numpy(pad_to(valid, self.crop, 0.0))
        return out


class GlobalIndexSampler(Sampler[int]):
    """Infinite sampler: iteration ``t ≥ start_iter`` yields ``(t·world_size + rank)·batch_size + j``."""

    def __init__(self, batch_size: int, start_iter: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size or start_iter < 0:
            raise DatasetError(
                f"sampler: expected batch_size ≥ 1, world_size ≥ 1, 0 ≤ rank < world_size, start_iter ≥ 0; "
                f"got {batch_size}, {world_size}, {rank}, {start_iter}"
            )
        self.batch_size, self.start_iter, self.rank, self.world_size = (
            batch_size,
            start_iter,
            rank,
            world_size,
        )

    def __iter__(self) -> Iterator[int]:
        t = self.start_iter
        while True:
            base = (t * self.world_size + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)
            t += 1


def _init_loader_worker(worker_id: int) -> None:
    import cv2

    cv2.setNumThreads(0)  # OpenCV's own threads would fight the other loader workers
    torch.set_num_threads(1)


def build_train_loader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    start_iter: int = 0,
    rank: int = 0,
    world_size: int = 1,
    seed: int = 0,
    pin_memory: bool | None = None,
) -> DataLoader:
    """An infinite loader over ``dataset`` (a :class:`UDATrainSet`) starting at iteration ``start_iter``.

    ``pin_memory``: page-locked batches, for non-blocking copies to a CUDA device (pass whether
    the batches go to one); None: whenever CUDA is available."""
    sampler = GlobalIndexSampler(batch_size, start_iter, rank, world_size)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        worker_init_fn=_init_loader_worker if workers > 0 else None,
        generator=torch.Generator().manual_seed(seed),  # only torch's worker seeds; samples use (seed, k)
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
        persistent_workers=workers > 0,
        drop_last=True,
    )


class EvalSet(Dataset):
    """Evaluation samples: resized normalised image, full-resolution label, name and path."""

    def __init__(self, dataset: SegDataset, resize: tuple[int, int] | None = None) -> None:
        self.dataset = dataset
        self.resize = resize if resize is not None else dataset.default_resize

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        img, gt = self.dataset.load_pair(i)
        small, _ = resize_keep_ratio(img, None, self.resize)
        path = self.dataset.image_path(i)
        out: dict[str, Any] = {"img": normalize(small), "name": path.stem, "path": str(path)}
        if gt is not None:
            out["gt"] = torch.from_numpy(gt.astype(np.int64))
        return out


def build_eval_loader(
    dataset: SegDataset | EvalSet | Subset,
    workers: int = 2,
    resize: tuple[int, int] | None = None,
    pin_memory: bool | None = None,
) -> DataLoader:
    """Batch-1 loader over an :class:`EvalSet` (or a ``Subset`` of one; built from a reader when
    one is given). ``pin_memory`` as :func:`build_train_loader`."""
    eval_set = dataset if isinstance(dataset, (EvalSet, Subset)) else EvalSet(dataset, resize)
    return DataLoader(
        eval_set,
        batch_size=1,
        shuffle=False,
        num_workers=workers,
        worker_init_fn=_init_loader_worker if workers > 0 else None,
        pin_memory=torch.cuda.is_available() if pin_memory is None else pin_memory,
    )

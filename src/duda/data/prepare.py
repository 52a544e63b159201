"""`duda prepare`: convert label maps to trainIds and count class pixels per image.

For each labelled image the trainId map is written beside the original with the names DAFormer
users know (``labels/00001_labelTrainIds.png``, ``..._gtFine_labelTrainIds.png``, ...), and its
per-class pixel counts go to ``ROOT/sample_class_stats.json`` (used by rare-class sampling).
Every file is written atomically and the statistics are flushed regularly, so a second run —
or a run after an interrupted one — only does what is missing and ends with a complete result.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from duda.data.datasets import (
    STATS_FILE,
    STATS_FORMAT,
    ACDCDataset,
    CityscapesDataset,
    SegDataset,
    build_dataset,
    read_stats_file,
)
from duda.data.io import image_size, read_label_ids, write_png_atomic, write_text_atomic
from duda.data.labels import IGNORE_INDEX, class_pixel_counts, count_unknown_ids, map_ids
from duda.errors import DatasetError, DudaError
from duda.files import WriteError, check_writable_dir
from duda.log import info
from duda.progress import progress_bar

FLUSH_EVERY = 500  # statistics entries between writes of the JSON file


@dataclass
class PrepareSummary:
    """What a prepare run found and did."""

    images: int = 0
    converted: int = 0  # trainId files written by this run
    reused: int = 0  # images already complete from an earlier run
    class_pixels: np.ndarray | None = None  # (K,) labelled pixels per class over all images
    class_names: tuple[str, ...] = ()
    total_pixels: int = 0
    ignored_pixels: int = 0  # pixels mapped to 255 (void classes and unknown ids)
    unknown_pixels: int = 0  # pixels whose id is not in the dataset's table
    unknown_ids: set[int] = field(default_factory=set)
    splits: list[str] = field(default_factory=list)
    skipped_splits: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        seen = (
            []
            if self.class_pixels is None
            else [n for n, p in zip(self.class_names, self.class_pixels, strict=True) if p > 0]
        )
        missing = [n for n in self.class_names if n not in seen]
        share = 100.0 * self.ignored_pixels / self.total_pixels if self.total_pixels else 0.0
        out = [
            f"splits: {', '.join(self.splits)}",
            f"images: {self.images} ({self.converted} converted, {self.reused} already done)",
            f"classes seen: {len(seen)}/{len(self.class_names)}"
            + (f" (absent: {', '.join(missing)})" if missing else ""),
            f"pixels mapped to ignore (255): {self.ignored_pixels} of {self.total_pixels} ({share:.2f}%)",
        ]
        if self.unknown_pixels:
            ids = sorted(self.unknown_ids)
            out.append(
                f"warning: {self.unknown_pixels} pixels had ids outside the label table {ids[:20]} → 255"
            )
        if self.skipped_splits:
            out.append(f"not present, skipped: {', '.join(self.skipped_splits)}")
        return out


def default_splits(dataset_type: str) -> list[dict[str, object]]:
    """The labelled parts of a dataset that ``prepare`` converts when no split is given."""
    if dataset_type == "cityscapes":
        return [{"split": s} for s in CityscapesDataset.SPLITS]
    if dataset_type == "acdc":
        return [{"split": s, "conditions": (c,)} for c in ACDCDataset.CONDITIONS for s in ("train", "val")]
    if dataset_type == "darkzurich":
        return [{"split": "val", "time": "night"}]  # the only labelled part
    return [{"split": "train"}]


def _describe(part: dict[str, object]) -> str:
    extra = [str(v[0] if isinstance(v, tuple) else v) for k, v in part.items() if k != "split"]
    return "/".join([*extra, str(part["split"])])


def open_parts(
    dataset_type: str, root: str | Path, splits: Sequence[str] | None, **kw: object
) -> tuple[list[tuple[str, SegDataset]], list[str]]:
    """Readers for the requested splits (or every labelled split that exists) and the skipped ones."""
    if splits:
        return [(s, build_dataset(dataset_type, root, s, **kw)) for s in splits], []
    if not Path(root).is_dir():
        build_dataset(dataset_type, root, "train", **kw)  # raises with the expected layout
    parts, skipped, first_error = [], [], None
    wanted = kw.pop("conditions", None)  # acdc: restrict the default parts to these conditions
    bad = [c for c in wanted or () if c not in ACDCDataset.CONDITIONS]
    if bad:
        raise DatasetError(f"acdc condition(s) {bad} not one of {', '.join(ACDCDataset.CONDITIONS)}")
    for part in default_splits(dataset_type):
        if wanted is not None and "conditions" in part and part["conditions"][0] not in wanted:  # type: ignore[index]
            continue
        args = {k: v for k, v in part.items() if k != "split"} | kw
        try:
            parts.append((_describe(part), build_dataset(dataset_type, root, str(part["split"]), **args)))
        except DatasetError as exc:
            if "folder not found" not in str(exc):
                raise
            skipped.append(_describe(part))
            first_error = first_error or exc
    if not parts:
        raise first_error or DatasetError(f"{root}: no labelled split found")
    return parts, skipped


# Set in each worker process by _init_worker: the dataset whose samples are prepared.
_WORKER_DATASET: SegDataset | None = None


def _init_worker(dataset: SegDataset) -> None:
    import cv2

    global _WORKER_DATASET
    cv2.setNumThreads(1)  # one process per core already
    _WORKER_DATASET = dataset


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def prepare_sample(dataset: SegDataset, i: int) -> tuple[int, dict[str, object], bool]:
    """Convert sample ``i`` (if its trainId file is missing) and count its classes.

    Returns (i, statistics entry, whether a file was written).
    """
    sample = dataset.samples[i]
    assert sample.trainid_label is not None
    written = False
    if sample.raw_label is not None:
        raw = read_label_ids(sample.raw_label, dataset.label_kind)
        train_ids = map_ids(raw, dataset.id_table)
        unknown, unknown_ids = count_unknown_ids(raw, dataset.known_ids)
        label_file = sample.raw_label
        if dataset.writes_trainids and not sample.trainid_label.exists():
            write_png_atomic(sample.trainid_label, train_ids)
            written = True
    else:  # only the prepared map is left
        train_ids = read_label_ids(sample.trainid_label, "auto")
        unknown, unknown_ids = 0, []
        label_file = sample.trainid_label
    width, height = image_size(sample.image)
    if (height, width) != train_ids.shape:
        raise DatasetError(
            f"image {sample.image} is {width}x{height} but its label {label_file} is "
            f"{train_ids.shape[1]}x{train_ids.shape[0]} (W x H); expected the same size"
        )
    entry = {
        "label": _relative(sample.trainid_label, dataset.root),
        "counts": class_pixel_counts(train_ids, dataset.labels.num_classes).tolist(),
        "pixels": int(train_ids.size),
        "ignored": int(np.count_nonzero(train_ids == IGNORE_INDEX)),
        "unknown": unknown,
        "unknown_ids": unknown_ids,
    }
    return i, entry, written


def _prepare_in_worker(i: int) -> tuple[int, dict[str, object], bool]:
    assert _WORKER_DATASET is not None
    return prepare_sample(_WORKER_DATASET, i)


def _run(dataset: SegDataset, todo: list[int], workers: int) -> Iterator[tuple[int, dict[str, object], bool]]:
    if workers <= 1 or len(todo) < 2:
        for i in todo:
            yield prepare_sample(dataset, i)
        return
    # spawn, not fork: a forked child inherits OpenCV's/OpenMP's thread-pool locks and can hang.
    with mp.get_context("spawn").Pool(workers, initializer=_init_worker, initargs=(dataset,)) as pool:
        yield from pool.imap_unordered(_prepare_in_worker, todo, chunksize=8)


def _is_complete(dataset: SegDataset, i: int, entry: dict | None) -> bool:
    sample = dataset.samples[i]
    if entry is None or len(entry.get("counts", ())) != dataset.labels.num_classes:
        return False
    return not dataset.writes_trainids or (sample.trainid_label is not None and sample.trainid_label.exists())


def _write_stats(path: Path, entries: dict[str, dict], names: tuple[str, ...]) -> None:
    data = {"format": STATS_FORMAT, "classes": list(names), "images": dict(sorted(entries.items()))}
    write_text_atomic(path, json.dumps(data, separators=(",", ":")))


def _check_writable(root: Path, stats_path: Path, plans: list[tuple[SegDataset, list[int]]]) -> None:
    """Before converting anything: every folder that will receive a file must take one."""
    folders = {stats_path.parent} if any(todo for _, todo in plans) else set()
    for dataset, todo in plans:
        if dataset.writes_trainids:
            folders |= {
                dataset.samples[i].trainid_label.parent  # type: ignore[union-attr]
                for i in todo
                if not dataset.samples[i].trainid_label.exists()  # type: ignore[union-attr]
            }
    for folder in sorted(folders):
        try:
            check_writable_dir(folder)
        except WriteError as exc:
            raise WriteError(
                f"{exc}; `duda prepare` writes the trainId label maps and {STATS_FILE} into the dataset "
                f"folder {root}: make it writable, or prepare a writable copy"
            ) from None


def prepare_dataset(
    dataset_type: str,
    root: str | Path,
    splits: Sequence[str] | None = None,
    workers: int = 1,
    progress: bool = True,
    log: Callable[[str], None] = info,
    **kw: object,
) -> PrepareSummary:
    """Convert every label map of the dataset at ``root`` to trainIds and write class statistics.

    ``splits`` None → every labelled split present (e.g. Cityscapes train and val, ACDC
    train/val of each condition, Dark Zurich val). ``kw`` goes to the reader (e.g. folder
    ``images=``/``labels=``/``classes_file=``).
    """
    parts, skipped = open_parts(dataset_type, root, splits, **kw)
    root = Path(root).absolute()
    stats_path = root / STATS_FILE
    entries = read_stats_file(stats_path)
    names = parts[0][1].labels.names
    summary = PrepareSummary(class_names=names, splits=[p for p, _ in parts], skipped_splits=skipped)
    summary.class_pixels = np.zeros(len(names), dtype=np.int64)
    plans = []
    for part_name, dataset in parts:
        keys = [dataset.stats_key(i) for i in range(len(dataset))] if dataset.has_labels else []
        todo = [i for i in range(len(keys)) if not _is_complete(dataset, i, entries.get(keys[i]))]
        plans.append((part_name, dataset, keys, todo))
    _check_writable(root, stats_path, [(d, todo) for _, d, _, todo in plans])
    for part_name, dataset, keys, todo in plans:
        if not dataset.has_labels:
            log(f"{part_name}: no labels in this split, nothing to convert")
            continue
        summary.reused += len(dataset) - len(todo)
        bar = progress_bar(
            total=len(todo), enabled=progress and bool(todo), desc=f"prepare {part_name}", unit="img"
        )
        try:
            for n, (i, entry, written) in enumerate(_run(dataset, todo, workers), 1):
                entries[keys[i]] = entry
                summary.converted += written
                bar.update(1)
                if n % FLUSH_EVERY == 0:
                    _write_stats(stats_path, entries, names)
        except BaseException:
            if todo:  # keep what was done for the next run, without hiding why this one stopped
                with contextlib.suppress(DudaError, OSError):
                    _write_stats(stats_path, entries, names)
            raise
        finally:
            bar.close()
        if todo:
            _write_stats(stats_path, entries, names)
        _add_to_summary(summary, [entries[key] for key in keys])
    return summary


def _add_to_summary(summary: PrepareSummary, entries: list[dict]) -> None:
    """Add the images' statistics entries to the totals of ``summary``."""
    for entry in entries:
        summary.images += 1
        summary.class_pixels += np.asarray(entry["counts"], dtype=np.int64)
        summary.total_pixels += int(entry["pixels"])
        summary.ignored_pixels += int(entry["ignored"])
        summary.unknown_pixels += int(entry["unknown"])
        summary.unknown_ids.update(int(u) for u in entry["unknown_ids"])

"""Dataset readers: list the files of one published layout and load raw arrays.

Each reader finds (image, label) pairs at construction, so a wrong ROOT or a missing file fails
at once with a message that shows the expected layout. Labels are read from the prepared
``*_labelTrainIds.png`` beside the original when ``duda prepare`` has written it, else converted
on the fly from the raw id map. Transforms (resize, crop, normalise) live in ``transforms``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from duda.config import DATASET_TYPES, DatasetConfig, DatasetType  # noqa: F401  (re-exported)
from duda.data.io import LabelKind, read_image, read_label_ids
from duda.data.labels import (
    CITYSCAPES,
    CITYSCAPES_ID_TO_TRAINID,
    CITYSCAPES_KNOWN_IDS,
    GTA_ID_TO_TRAINID,
    GTA_KNOWN_IDS,
    IGNORE_INDEX,
    SYNTHIA_ID_TO_TRAINID,
    SYNTHIA_KNOWN_IDS,
    LabelSpace,
    label_space_from_file,
    lookup_table,
    map_ids,
)
from duda.errors import DatasetError

STATS_FILE = "sample_class_stats.json"
STATS_FORMAT = "duda-class-stats/1"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_SHOW = 5  # how many offending files an error lists


@dataclass(frozen=True)
class Sample:
    """One image and its label files (both None for an unlabelled split)."""

    image: Path
    raw_label: Path | None  # the published id map (may be absent once only trainIds remain)
    trainid_label: Path | None  # where the prepared trainId map is (or will be) written


class SegDataset:
    """Base reader. Subclasses fill ``samples`` and the label-conversion attributes."""

    name: str = "dataset"
    default_resize: tuple[int, int] | None = None  # (W, H) keep-ratio target, like mmseg img_scale
    label_kind: LabelKind = "auto"
    known_ids: frozenset[int] | None = None

    def __init__(
        self,
        root: str | Path,
        split: str,
        samples: list[Sample],
        labels: LabelSpace,
        id_table: np.ndarray,
        writes_trainids: bool = True,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.samples = samples
        self.labels = labels
        self.id_table = id_table
        self.writes_trainids = writes_trainids  # False: raw labels already hold trainIds

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, n={len(self)})"

    @property
    def has_labels(self) -> bool:
        return bool(self.samples) and self.samples[0].trainid_label is not None

    def image_path(self, i: int) -> Path:
        return self.samples[i].image

    def load_image(self, i: int) -> np.ndarray:
        """uint8 H×W×3 RGB."""
        return read_image(self.samples[i].image)

    def convert_raw_label(self, path: Path) -> np.ndarray:
        """Read a published id map and map it to trainIds (uint8, 255 = ignore)."""
        return map_ids(read_label_ids(path, self.label_kind), self.id_table)

    def load_label(self, i: int) -> np.ndarray | None:
        """uint8 H×W trainIds, or None for an unlabelled split."""
        sample = self.samples[i]
        if sample.trainid_label is None:
            return None
        if self.writes_trainids and sample.trainid_label.exists():
            return read_label_ids(sample.trainid_label, "auto").astype(np.uint8, copy=False)
        if sample.raw_label is None:
            raise DatasetError(f"{sample.trainid_label}: label file not found for image {sample.image}")
        return self.convert_raw_label(sample.raw_label)

    def load_pair(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Image and label, checked to be the same size."""
        img = self.load_image(i)
        label = self.load_label(i)
        if label is not None and label.shape != img.shape[:2]:
            s = self.samples[i]
            lbl = s.trainid_label if s.trainid_label and s.trainid_label.exists() else s.raw_label
            raise DatasetError(
                f"image {s.image} is {img.shape[1]}x{img.shape[0]} but its label {lbl} is "
                f"{label.shape[1]}x{label.shape[0]} (W x H); expected the same size"
            )
        return img, label

    @property
    def stats_path(self) -> Path:
        return self.root / STATS_FILE

    def stats_key(self, i: int) -> str:
        """The key of image ``i`` in the statistics file: its path relative to ROOT."""
        path = self.samples[i].image
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return path.as_posix()

    def class_stats(self) -> np.ndarray:
        """Per-image pixel counts of each class at original resolution, int64 (N, K)."""
        entries = read_stats_file(self.stats_path)
        out = np.zeros((len(self), self.labels.num_classes), dtype=np.int64)
        missing = []
        for i in range(len(self)):
            entry = entries.get(self.stats_key(i))
            if entry is None:
                missing.append(self.stats_key(i))
                continue
            counts = entry["counts"]
            if len(counts) != self.labels.num_classes:
                raise DatasetError(
                    f"{self.stats_path}: entry {self.stats_key(i)} has {len(counts)} class counts, "
                    f"expected {self.labels.num_classes}; run `duda prepare` again"
                )
            out[i] = counts
        if missing:
            raise DatasetError(
                f"{self.stats_path}: no class statistics for {len(missing)} of {len(self)} images "
                f"(first: {missing[:_SHOW]}); run `duda prepare {self.name} {self.root}`"
            )
        return out


def read_stats_file(path: Path) -> dict[str, dict]:
    """The per-image entries of a ``sample_class_stats.json`` ({} when the file does not exist)."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(
            f"{path}: not a readable class statistics file ({exc}); delete it and re-run"
        ) from None
    if (
        not isinstance(data, dict)
        or data.get("format") != STATS_FORMAT
        or not isinstance(data.get("images"), dict)
    ):
        raise DatasetError(f"{path}: expected a '{STATS_FORMAT}' statistics file written by `duda prepare`")
    return data["images"]


# ----------------------------------------------------------------------------------------- layout


def _require_dir(path: Path, layout: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"folder not found: {path}\nexpected layout:\n{layout}")


def _strip(name: str, suffix: str) -> str | None:
    return name[: -len(suffix)] if name.endswith(suffix) and len(name) > len(suffix) else None


def _collect(
    folder: Path, suffixes: Sequence[str], exclude: Sequence[str] = (), recursive: bool = False
) -> dict[str, Path]:
    """Files under ``folder`` ending in one of ``suffixes`` keyed by relative path minus suffix."""
    found: dict[str, Path] = {}
    files = folder.rglob("*") if recursive else folder.iterdir()
    for path in files:
        if not path.is_file() or path.name.startswith(".") or any(path.name.endswith(e) for e in exclude):
            continue
        for suffix in suffixes:
            stem = _strip(path.name, suffix)
            if stem is not None:
                key = (path.parent.relative_to(folder) / stem).as_posix()
                found[key] = path
                break
    return found


def _pair_up(
    images: dict[str, Path],
    raw: dict[str, Path],
    prepared: dict[str, Path],
    prepared_path: Callable[[str], Path],
    image_dir: Path,
    label_dir: Path,
) -> list[Sample]:
    """Match images and labels by key; list the first few unmatched files on either side."""
    lonely_images = sorted(k for k in images if k not in raw and k not in prepared)
    lonely_labels = sorted(k for k in set(raw) | set(prepared) if k not in images)
    if lonely_images or lonely_labels:
        parts = []
        if lonely_images:
            first = [str(images[k]) for k in lonely_images[:_SHOW]]
            parts.append(f"{len(lonely_images)} image(s) in {image_dir} without a label: {first}")
        if lonely_labels:
            first = [str(raw.get(k) or prepared[k]) for k in lonely_labels[:_SHOW]]
            parts.append(f"{len(lonely_labels)} label(s) in {label_dir} without an image: {first}")
        raise DatasetError("; ".join(parts) + "; expected one label per image, matched by name")
    return [Sample(images[k], raw.get(k), prepared.get(k, prepared_path(k))) for k in sorted(images)]


def _unlabelled(images: dict[str, Path]) -> list[Sample]:
    return [Sample(images[k], None, None) for k in sorted(images)]


def _nonempty(samples: list[Sample], folder: Path, layout: str) -> list[Sample]:
    if not samples:
        raise DatasetError(f"no images found under {folder}\nexpected layout:\n{layout}")
    return samples


def _check_choice(kind: str, value: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        raise DatasetError(f"{kind} {value!r} is not one of {', '.join(allowed)}")


# ---------------------------------------------------------------------------------------- readers

GTA_LAYOUT = """ROOT/
  images/00001.png ...          (1914x1052 RGB)
  labels/00001.png ...          (palette PNG of Cityscapes labelIds)
  labels/00001_labelTrainIds.png  (written by `duda prepare gta ROOT`)"""


class GTA5Dataset(SegDataset):
    """GTA5 (source): ``images/NNNNN.png`` and ``labels/NNNNN.png`` (Cityscapes labelIds)."""

    name = "gta"
    default_resize = (1280, 720)
    label_kind: LabelKind = "palette"
    known_ids = GTA_KNOWN_IDS

    def __init__(self, root: str | Path, split: str = "train") -> None:
        root = Path(root)
        _require_dir(root, GTA_LAYOUT)
        image_dir, label_dir = root / "images", root / "labels"
        _require_dir(image_dir, GTA_LAYOUT)
        _require_dir(label_dir, GTA_LAYOUT)
        images = _collect(image_dir, IMAGE_EXTENSIONS)
        raw = _collect(label_dir, (".png",), exclude=("_labelTrainIds.png",))
        prepared = _collect(label_dir, ("_labelTrainIds.png",))
        samples = _pair_up(
            images, raw, prepared, lambda k: label_dir / f"{k}_labelTrainIds.png", image_dir, label_dir
        )
        super().__init__(
            root, split, _nonempty(samples, image_dir, GTA_LAYOUT), CITYSCAPES, GTA_ID_TO_TRAINID
        )


SYNTHIA_LAYOUT = """ROOT/                           (SYNTHIA-RAND-CITYSCAPES)
  RGB/0000001.png ...            (1280x760 RGB)
  GT/LABELS/0000001.png ...      (16-bit PNG; class id in the last channel)
  GT/LABELS/0000001_labelTrainIds.png  (written by `duda prepare synthia ROOT`)"""


class SynthiaDataset(SegDataset):
    """SYNTHIA-RAND-CITYSCAPES (source): ``RGB/N.png``, ``GT/LABELS/N.png`` (16-bit)."""

    name = "synthia"
    default_resize = (1280, 760)
    label_kind: LabelKind = "last_channel"
    known_ids = SYNTHIA_KNOWN_IDS

    def __init__(self, root: str | Path, split: str = "train") -> None:
        root = Path(root)
        _require_dir(root, SYNTHIA_LAYOUT)
        image_dir, label_dir = root / "RGB", root / "GT" / "LABELS"
        _require_dir(image_dir, SYNTHIA_LAYOUT)
        _require_dir(label_dir, SYNTHIA_LAYOUT)
        images = _collect(image_dir, IMAGE_EXTENSIONS)
        raw = _collect(label_dir, (".png",), exclude=("_labelTrainIds.png",))
        prepared = _collect(label_dir, ("_labelTrainIds.png",))
        samples = _pair_up(
            images, raw, prepared, lambda k: label_dir / f"{k}_labelTrainIds.png", image_dir, label_dir
        )
        samples = _nonempty(samples, image_dir, SYNTHIA_LAYOUT)
        super().__init__(root, split, samples, CITYSCAPES, SYNTHIA_ID_TO_TRAINID)


CITYSCAPES_LAYOUT = """ROOT/
  leftImg8bit/{train,val}/CITY/CITY_SEQ_FRAME_leftImg8bit.png
  gtFine/{train,val}/CITY/CITY_SEQ_FRAME_gtFine_labelIds.png
  gtFine/{train,val}/CITY/CITY_SEQ_FRAME_gtFine_labelTrainIds.png  (written by `duda prepare`)"""


class CityscapesDataset(SegDataset):
    """Cityscapes (source or target), split ``train`` or ``val``."""

    name = "cityscapes"
    default_resize = (1024, 512)
    known_ids = CITYSCAPES_KNOWN_IDS
    SPLITS = ("train", "val")

    def __init__(self, root: str | Path, split: str = "train") -> None:
        _check_choice("cityscapes split", split, self.SPLITS)
        root = Path(root)
        _require_dir(root, CITYSCAPES_LAYOUT)
        image_dir, label_dir = root / "leftImg8bit" / split, root / "gtFine" / split
        _require_dir(image_dir, CITYSCAPES_LAYOUT)
        _require_dir(label_dir, CITYSCAPES_LAYOUT)
        images = _collect(image_dir, ("_leftImg8bit.png",), recursive=True)
        raw = _collect(label_dir, ("_gtFine_labelIds.png",), recursive=True)
        prepared = _collect(label_dir, ("_gtFine_labelTrainIds.png",), recursive=True)
        samples = _pair_up(
            images, raw, prepared, lambda k: label_dir / f"{k}_gtFine_labelTrainIds.png", image_dir, label_dir
        )
        samples = _nonempty(samples, image_dir, CITYSCAPES_LAYOUT)
        super().__init__(root, split, samples, CITYSCAPES, CITYSCAPES_ID_TO_TRAINID)


ACDC_LAYOUT = """ROOT/
  rgb_anon/{fog,night,rain,snow}/{train,val,test}/SEQ/SEQ_frame_..._rgb_anon.png
  gt/{fog,night,rain,snow}/{train,val}/SEQ/SEQ_frame_..._gt_labelIds.png
  gt/.../..._gt_labelTrainIds.png   (shipped with ACDC, or written by `duda prepare acdc ROOT`)"""


class ACDCDataset(SegDataset):
    """ACDC (target): adverse conditions; test labels are hidden (unlabelled split)."""

    name = "acdc"
    default_resize = (960, 540)
    known_ids = CITYSCAPES_KNOWN_IDS
    SPLITS = ("train", "val", "test")
    CONDITIONS = ("fog", "night", "rain", "snow")

    def __init__(
        self, root: str | Path, split: str = "train", conditions: Sequence[str] = CONDITIONS
    ) -> None:
        _check_choice("acdc split", split, self.SPLITS)
        if isinstance(conditions, str):
            conditions = (conditions,)
        if not conditions:
            raise DatasetError(f"acdc: expected at least one condition of {', '.join(self.CONDITIONS)}")
        for cond in conditions:
            _check_choice("acdc condition", cond, self.CONDITIONS)
        root = Path(root)
        _require_dir(root, ACDC_LAYOUT)
        samples: list[Sample] = []
        for cond in conditions:
            image_dir = root / "rgb_anon" / cond / split
            _require_dir(image_dir, ACDC_LAYOUT)
            images = _collect(image_dir, ("_rgb_anon.png",), recursive=True)
            if split == "test":
                samples += _unlabelled(images)
                continue
            label_dir = root / "gt" / cond / split
            _require_dir(label_dir, ACDC_LAYOUT)
            raw = _collect(label_dir, ("_gt_labelIds.png",), recursive=True)
            prepared = _collect(label_dir, ("_gt_labelTrainIds.png",), recursive=True)
            samples += _pair_up(
                images,
                raw,
                prepared,
                lambda k, d=label_dir: d / f"{k}_gt_labelTrainIds.png",
                image_dir,
                label_dir,
            )
        samples = _nonempty(samples, root / "rgb_anon", ACDC_LAYOUT)
        super().__init__(root, split, samples, CITYSCAPES, CITYSCAPES_ID_TO_TRAINID)
        self.conditions = tuple(conditions)


DARK_ZURICH_LAYOUT = """ROOT/
  rgb_anon/train/{day,night,twilight}/GOPRxxxx/..._rgb_anon.png
  rgb_anon/val/night/GOPR0356/..._rgb_anon.png
  gt/val/night/GOPR0356/..._gt_labelIds.png     (labels only for val)
  gt/val/night/GOPR0356/..._gt_labelTrainIds.png  (written by `duda prepare darkzurich ROOT`)"""


class DarkZurichDataset(SegDataset):
    """Dark Zurich (target): train on ``night`` (unlabelled); ``val`` has labels; test is hidden."""

    name = "darkzurich"
    default_resize = (960, 540)
    known_ids = CITYSCAPES_KNOWN_IDS
    SPLITS = ("train", "val", "test")
    TIMES = ("day", "night", "twilight")

    def __init__(self, root: str | Path, split: str = "train", time: str = "night") -> None:
        _check_choice("darkzurich split", split, self.SPLITS)
        _check_choice("darkzurich time", time, self.TIMES)
        root = Path(root)
        _require_dir(root, DARK_ZURICH_LAYOUT)
        image_dir = root / "rgb_anon" / split / time
        _require_dir(image_dir, DARK_ZURICH_LAYOUT)
        images = _collect(image_dir, ("_rgb_anon.png",), recursive=True)
        if split == "val":
            label_dir = root / "gt" / split / time
            _require_dir(label_dir, DARK_ZURICH_LAYOUT)
            raw = _collect(label_dir, ("_gt_labelIds.png",), recursive=True)
            prepared = _collect(label_dir, ("_gt_labelTrainIds.png",), recursive=True)
            samples = _pair_up(
                images, raw, prepared, lambda k: label_dir / f"{k}_gt_labelTrainIds.png", image_dir, label_dir
            )
        else:
            samples = _unlabelled(images)
        samples = _nonempty(samples, image_dir, DARK_ZURICH_LAYOUT)
        super().__init__(root, split, samples, CITYSCAPES, CITYSCAPES_ID_TO_TRAINID)
        self.time = time


FOLDER_LAYOUT = """ROOT/
  images/NAME.{png,jpg,...}
  labels/NAME.png              (optional; matched to images by file stem)
  classes.yaml                 (optional: classes: [...], palette: [[r,g,b],...],
                                id_to_trainid: {id: trainId})"""


class FolderDataset(SegDataset):
    """A generic folder dataset: images and label maps matched by file stem.

    Without a class file the labels are taken to be Cityscapes trainIds. With ``id_to_trainid`` in
    the class file, label maps hold raw ids and ``duda prepare folder`` writes
    ``labels/NAME_labelTrainIds.png`` beside them; otherwise they already hold trainIds (values
    ≥ K become 255).
    """

    name = "folder"

    def __init__(
        self,
        images: str | Path,
        labels: str | Path | None = None,
        classes_file: str | Path | None = None,
        root: str | Path | None = None,
        split: str = "train",
        default_resize: tuple[int, int] | None = None,
    ) -> None:
        image_dir = Path(images)
        _require_dir(image_dir, FOLDER_LAYOUT)
        space, id_map = label_space_from_file(classes_file) if classes_file else (CITYSCAPES, None)
        if id_map is not None:
            table = lookup_table(id_map, size=max(256, max(id_map, default=0) + 1))
            known = frozenset(id_map)
        else:
            table = lookup_table({c: c for c in range(space.num_classes)})
            known = frozenset(range(space.num_classes)) | {IGNORE_INDEX}
        image_files = _collect(image_dir, IMAGE_EXTENSIONS)
        if labels is None:
            samples = _unlabelled(image_files)
        else:
            label_dir = Path(labels)
            _require_dir(label_dir, FOLDER_LAYOUT)
            raw = _collect(label_dir, (".png",), exclude=("_labelTrainIds.png",))
            if id_map is not None:
                prepared = _collect(label_dir, ("_labelTrainIds.png",))
                path_of = lambda k: label_dir / f"{k}_labelTrainIds.png"  # noqa: E731
            else:
                prepared, path_of = dict(raw), raw.__getitem__
            samples = _pair_up(image_files, raw, prepared, path_of, image_dir, label_dir)
        samples = _nonempty(samples, image_dir, FOLDER_LAYOUT)
        super().__init__(
            Path(root) if root is not None else image_dir.parent,
            split,
            samples,
            space,
            table,
            writes_trainids=id_map is not None,
        )
        self.known_ids = known
        self.default_resize = default_resize


# ---------------------------------------------------------------------------------------- factory


def build_dataset(type: str, root: str | Path, split: str = "train", **kw: object) -> SegDataset:
    """A reader by name: gta, synthia, cityscapes, acdc, darkzurich or folder.

    ``root`` is made absolute (not resolved), so every message names the folder unambiguously."""
    root = Path(root).absolute()
    if type == "gta":
        return GTA5Dataset(root, split, **kw)  # type: ignore[arg-type]
    if type == "synthia":
        return SynthiaDataset(root, split, **kw)  # type: ignore[arg-type]
    if type == "cityscapes":
        return CityscapesDataset(root, split, **kw)  # type: ignore[arg-type]
    if type == "acdc":
        if kw.get("conditions") is None:
            kw.pop("conditions", None)
        return ACDCDataset(root, split, **kw)  # type: ignore[arg-type]
    if type == "darkzurich":
        return DarkZurichDataset(root, split, **kw)  # type: ignore[arg-type]
    if type == "folder":
        images = Path(kw.pop("images", None) or root / "images").absolute()  # type: ignore[arg-type]
        labels = kw.pop("labels", None)
        labels = Path(labels).absolute() if labels is not None else None  # type: ignore[arg-type]
        if labels is None and (root / "labels").is_dir():
            labels = root / "labels"
        classes_file = kw.pop("classes_file", None)
        if classes_file is None:
            found = [
                root / n for n in ("classes.yaml", "classes.yml", "classes.json") if (root / n).is_file()
            ]
            classes_file = found[0] if found else None
        return FolderDataset(images, labels, classes_file, root=root, split=split, **kw)  # type: ignore[arg-type]
    raise DatasetError(f"dataset type {type!r} is not one of {', '.join(DATASET_TYPES)}")


def build_dataset_from_config(cfg: DatasetConfig) -> SegDataset:
    """A reader from its config section; ``resize`` overrides the reader's default."""
    kw: dict[str, object] = {}
    if cfg.type == "acdc" and cfg.conditions is not None:
        kw["conditions"] = tuple(cfg.conditions)
    if cfg.type == "darkzurich":
        kw["time"] = cfg.time
    if cfg.type == "folder":
        kw.update(images=cfg.images, labels=cfg.labels, classes_file=cfg.classes_file)
    dataset = build_dataset(cfg.type, cfg.root, cfg.split, **kw)
    if cfg.resize is not None:
        dataset.default_resize = tuple(cfg.resize)  # type: ignore[assignment]
    return dataset

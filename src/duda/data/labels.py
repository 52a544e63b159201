"""Label spaces and id → trainId lookup tables.

A label map on disk holds dataset-specific ids; training uses *trainIds* (0..K-1, 255 = ignore).
The Cityscapes names, colours and id table come from ``cityscapesscripts`` (the official source);
the GTA5 and SYNTHIA maps are those of method.md Part D. A generic dataset brings its own
``LabelSpace`` (see :func:`label_space_from_file`), so nothing here fixes the number of classes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml
from cityscapesscripts.helpers import labels as cs_labels

from duda.errors import DatasetError

IGNORE_INDEX = 255


@dataclass(frozen=True, eq=False)
class LabelSpace:
    """The classes a model predicts: names in trainId order and one RGB colour each."""

    names: tuple[str, ...]
    palette: np.ndarray  # (K, 3) uint8

    def __post_init__(self) -> None:
        palette = np.asarray(self.palette, dtype=np.uint8)
        if palette.shape != (len(self.names), 3):
            raise DatasetError(
                f"label space: palette has shape {palette.shape}, expected ({len(self.names)}, 3)"
            )
        if len(self.names) == 0 or len(self.names) > IGNORE_INDEX:
            raise DatasetError(f"label space: expected 1..255 classes, got {len(self.names)}")
        object.__setattr__(self, "palette", palette)

    @property
    def num_classes(self) -> int:
        return len(self.names)

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, LabelSpace)
            and self.names == other.names
            and np.array_equal(self.palette, other.palette)
        )

    def __hash__(self) -> int:
        return hash((self.names, self.palette.tobytes()))


def _cityscapes_label_space() -> LabelSpace:
    train = sorted((l for l in cs_labels.labels if 0 <= l.trainId < IGNORE_INDEX), key=lambda l: l.trainId)
    return LabelSpace(tuple(l.name for l in train), np.array([l.color for l in train], dtype=np.uint8))


CITYSCAPES: LabelSpace = _cityscapes_label_space()


def lookup_table(mapping: Mapping[int, int], size: int = 256) -> np.ndarray:
    """A ``size``-entry uint8 table: ``table[id] = trainId`` for ids in ``mapping``, 255 elsewhere."""
    table = np.full(size, IGNORE_INDEX, dtype=np.uint8)
    for src, dst in mapping.items():
        table[src] = dst
    return table


CITYSCAPES_ID_MAP: dict[int, int] = {l.id: l.trainId for l in cs_labels.labels if 0 <= l.trainId < 255}
# GTA5 frames are annotated with Cityscapes labelIds, so the map is the official one.
GTA_ID_MAP: dict[int, int] = dict(CITYSCAPES_ID_MAP)
SYNTHIA_ID_MAP: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8,
    1: 10, 10: 11, 17: 12, 8: 13, 19: 15, 12: 17, 11: 18,
}  # fmt: skip

CITYSCAPES_ID_TO_TRAINID: np.ndarray = lookup_table(CITYSCAPES_ID_MAP)
GTA_ID_TO_TRAINID: np.ndarray = lookup_table(GTA_ID_MAP)
# SYNTHIA labels are 16-bit; ids above 255 are not in the table and map_ids sends them to 255.
SYNTHIA_ID_TO_TRAINID: np.ndarray = lookup_table(SYNTHIA_ID_MAP)

# Ids a label map may legitimately hold (void ones included); anything else is counted as unknown.
CITYSCAPES_KNOWN_IDS: frozenset[int] = frozenset(l.id for l in cs_labels.labels if l.id >= 0)
GTA_KNOWN_IDS: frozenset[int] = CITYSCAPES_KNOWN_IDS
SYNTHIA_KNOWN_IDS: frozenset[int] = frozenset(range(23))  # 0 void .. 22 lanemarking

SYNTHIA16_IDX: list[int] = [c for c in range(19) if c not in (9, 14, 16)]
SYNTHIA13_IDX: list[int] = [c for c in SYNTHIA16_IDX if c not in (3, 4, 5)]


def map_ids(label: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Map an integer id map through ``table``; ids outside the table become 255. Returns uint8."""
    label = np.asarray(label)
    if label.dtype == np.uint8 and len(table) >= 256:
        return table[label]
    out = np.full(label.shape, IGNORE_INDEX, dtype=np.uint8)
    inside = (label >= 0) & (label < len(table))
    out[inside] = table[label[inside]]
    return out


def count_unknown_ids(label: np.ndarray, known_ids: Iterable[int] | None) -> tuple[int, list[int]]:
    """Pixels whose id is not in ``known_ids`` (the dataset's id table), and those ids (sorted)."""
    if known_ids is None:
        return 0, []
    ids, counts = np.unique(np.asarray(label), return_counts=True)
    known = np.isin(ids, np.fromiter(known_ids, dtype=np.int64))
    return int(counts[~known].sum()), [int(i) for i in ids[~known]]


def class_pixel_counts(train_ids: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels per trainId 0..K-1 (ignore and out-of-range values are not counted), int64 (K,)."""
    flat = np.asarray(train_ids).ravel()
    counts = np.bincount(flat, minlength=256)[:num_classes]
    return counts.astype(np.int64)


def default_palette(num_classes: int) -> np.ndarray:
    """Distinct, deterministic colours for a dataset that brings none (Cityscapes' first)."""
    base = CITYSCAPES.palette
    if num_classes <= len(base):
        return base[:num_classes].copy()
    rng = np.random.default_rng(num_classes)
    extra = rng.integers(0, 256, size=(num_classes - len(base), 3), dtype=np.uint8)
    return np.concatenate([base, extra])


def label_space_from_file(path: str | Path) -> tuple[LabelSpace, dict[int, int] | None]:
    """Read a class file (YAML or JSON) of a generic dataset.

    Format::

        classes: [background, road, car]          # names in trainId order (required)
        palette: [[0,0,0], [128,64,128], [0,0,142]]  # optional RGB per class
        id_to_trainid: {0: 255, 7: 1, 26: 2}       # optional; label files then hold raw ids

    Returns the label space and the id map (None when label files already hold trainIds).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DatasetError(f"class file {path}: cannot be read ({exc.strerror})") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise DatasetError(f"class file {path}: not valid YAML/JSON ({exc})") from None
    expected = "expected a mapping with 'classes: [name, ...]' and optional 'palette', 'id_to_trainid'"
    unknown = sorted(set(data) - {"classes", "palette", "id_to_trainid"}) if isinstance(data, dict) else []
    if unknown:
        raise DatasetError(f"class file {path}: unknown key(s) {unknown}; {expected}")
    if not isinstance(data, dict) or not isinstance(data.get("classes"), list) or not data["classes"]:
        raise DatasetError(f"class file {path}: {expected}")
    names = tuple(str(n) for n in data["classes"])
    palette = data.get("palette")
    if palette is None:
        palette_arr = default_palette(len(names))
    else:
        palette_arr = np.asarray(palette)
        if palette_arr.shape != (len(names), 3) or palette_arr.min() < 0 or palette_arr.max() > 255:
            raise DatasetError(
                f"class file {path}: 'palette' must be {len(names)} RGB triples of 0..255, got {palette!r}"
            )
    id_map = data.get("id_to_trainid")
    if id_map is not None:
        id_map = _parse_id_map(id_map, len(names), path)
    return LabelSpace(names, palette_arr.astype(np.uint8)), id_map


def _parse_id_map(raw: object, num_classes: int, path: Path) -> dict[int, int]:
    if not isinstance(raw, dict):
        raise DatasetError(f"class file {path}: 'id_to_trainid' must be a mapping id: trainId, got {raw!r}")
    out: dict[int, int] = {}
    for key, value in raw.items():
        try:
            src, dst = int(key), int(value)
        except (TypeError, ValueError):
            raise DatasetError(
                f"class file {path}: id_to_trainid entry {key!r}: {value!r} is not int: int"
            ) from None
        if not 0 <= src < 65536 or not (0 <= dst < num_classes or dst == IGNORE_INDEX):
            raise DatasetError(
                f"class file {path}: id_to_trainid entry {src}: {dst}: expected id 0..65535 and trainId "
                f"0..{num_classes - 1} or 255"
            )
        out[src] = dst
    return out

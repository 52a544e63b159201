"""Scoring a model over an evaluation loader, and scoring folders of trainId PNGs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from duda.errors import DatasetError
from duda.evaluation.metrics import EvalResult, IoUMetric
from duda.inference.modes import infer
from duda.inference.options import DEFAULT_CROP, DEFAULT_STRIDE
from duda.progress import progress_bar

PredictionHook = Callable[[str, np.ndarray], None]


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Put an ``nn.Module`` in eval mode and restore its former mode afterwards (so evaluation in
    the middle of training does not leave Dropout/BN switched off)."""
    if not isinstance(model, nn.Module):
        yield
        return
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _sample_names(sample: dict[str, Any], batch: int) -> list[str]:
    name = sample.get("name", "")
    names = [name] if isinstance(name, str) else [str(n) for n in name]
    return names if len(names) == batch else [f"{names[0] if names else 'sample'}[{i}]" for i in range(batch)]


def accumulate(
    model: nn.Module | Callable,
    loader: Iterable[dict[str, Any]],
    metric: IoUMetric,
    *,
    mode: str = "whole",
    crop: tuple[int, int] = DEFAULT_CROP,
    stride: tuple[int, int] = DEFAULT_STRIDE,
    flip: bool = False,
    bf16: bool = False,
    device: torch.device | str = "cpu",
    progress: bool = True,
    on_prediction: PredictionHook | None = None,
) -> IoUMetric:
    """Predict every sample of ``loader`` and add it to ``metric`` (returned).

    Samples are dicts with ``img`` (``1×3×h×w`` resized, normalised), ``gt`` (``1×H×W`` or
    ``H×W`` full-resolution trainIds) and ``name``. Logits are upsampled to the label size before
    the argmax. ``on_prediction(name, pred)`` receives each uint8 ``H×W`` prediction (e.g. to
    write PNGs). Use this rather than :func:`evaluate` when counts must be all-reduced across
    processes before scoring.
    """
    device = torch.device(device)
    items: Iterable[dict[str, Any]] = progress_bar(loader, progress, desc=f"eval ({mode})", unit="img")
    with eval_mode(model):
        for sample in items:
            img = torch.as_tensor(sample["img"]).to(device, non_blocking=True).float()
            if img.ndim == 3:
                img = img.unsqueeze(0)
            gt = torch.as_tensor(sample["gt"]).to(device, non_blocking=True)
            if gt.ndim == 2:
                gt = gt.unsqueeze(0)
            names = _sample_names(sample, img.shape[0])
            if gt.shape[0] != img.shape[0]:
                raise DatasetError(f"{names[0]}: {img.shape[0]} images but {gt.shape[0]} labels in a batch")
            logits = infer(
                model, img, tuple(gt.shape[-2:]), mode=mode, crop=crop, stride=stride,
                num_classes=metric.num_classes, flip=flip, bf16=bf16,
            )  # fmt: skip
            pred = logits.argmax(dim=1)
            for i, name in enumerate(names):
                metric.update(pred[i], gt[i], name=name)
                if on_prediction is not None:
                    on_prediction(name, pred[i].to(torch.uint8).cpu().numpy())
    return metric


def evaluate(
    model: nn.Module | Callable,
    loader: Iterable[dict[str, Any]],
    num_classes: int,
    mode: str = "whole",
    crop: tuple[int, int] = DEFAULT_CROP,
    stride: tuple[int, int] = DEFAULT_STRIDE,
    *,
    flip: bool = False,
    bf16: bool = False,
    device: torch.device | str = "cpu",
    progress: bool = True,
    ignore_index: int = 255,
    on_prediction: PredictionHook | None = None,
) -> EvalResult:
    """mIoU etc. of ``model`` over ``loader`` (see :func:`accumulate` for the sample format)."""
    metric = IoUMetric(num_classes, ignore_index=ignore_index, device=device)
    accumulate(
        model, loader, metric, mode=mode, crop=crop, stride=stride, flip=flip, bf16=bf16,
        device=device, progress=progress, on_prediction=on_prediction,
    )  # fmt: skip
    return metric.compute()


# ---------------------------------------------------------------------------------------------
# Folder scoring (the form in which ACDC / Dark Zurich results are submitted)


def read_label_png(path: str | os.PathLike[str]) -> np.ndarray:
    """A single-channel label PNG (grey or palette) as an ``H×W`` integer array."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise DatasetError(
                    f"{path}: expected a single-channel trainId PNG (mode L or P), got mode {im.mode}; "
                    "is this a colour visualisation rather than a label map?"
                )
            return np.asarray(im)
    except DatasetError:
        raise
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read as a PNG label map ({exc})") from None


def _png_index(folder: Path, suffix: str, what: str) -> dict[str, Path]:
    """Map from key (file stem without ``suffix``) to path, over PNGs under ``folder`` (recursive).

    With a suffix only the files whose stem ends with it count, so e.g. ``_gt_labelTrainIds``
    picks the trainId maps from a folder that also holds labelIds and colour maps.
    """
    if not folder.is_dir():
        raise DatasetError(f"{what} folder not found: {folder}")
    index: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.png")):
        stem = path.stem
        if suffix:
            if not stem.endswith(suffix):
                continue
            stem = stem[: -len(suffix)]
        if stem in index:
            raise DatasetError(
                f"{what} folder {folder}: two files with the key {stem!r}: {index[stem]} and {path}"
            )
        index[stem] = path
    if not index:
        hint = f" ending in '{suffix}.png'" if suffix else ""
        raise DatasetError(f"{what} folder {folder}: no PNG files{hint} found")
    return index


def _first_few(keys: Sequence[str], n: int = 5) -> str:
    shown = ", ".join(keys[:n])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def match_folders(
    pred_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    pred_suffix: str = "",
    gt_suffix: str = "",
    allow_extra_preds: bool = False,
) -> list[tuple[str, Path, Path]]:
    """(key, prediction, label) triples matched by file stem (minus the suffixes), sorted by key.

    Every label needs a prediction; a prediction without a label is an error too unless
    ``allow_extra_preds`` (mismatches usually mean a wrong suffix, so they are never silent).
    """
    preds = _png_index(Path(pred_dir), pred_suffix, "prediction")
    gts = _png_index(Path(gt_dir), gt_suffix, "label")
    missing = sorted(set(gts) - set(preds))
    extra = sorted(set(preds) - set(gts))
    hint = (
        f" (keys are file stems without the prediction suffix {pred_suffix!r} / label suffix {gt_suffix!r}; "
        f"e.g. prediction key {next(iter(preds))!r}, label key {next(iter(gts))!r})"
    )
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(gts)} labels in {gt_dir} have no prediction in {pred_dir}: "
            f"{_first_few(missing)}{hint}"
        )
    if extra and not allow_extra_preds:
        raise DatasetError(
            f"{len(extra)} predictions in {pred_dir} have no label in {gt_dir}: {_first_few(extra)}{hint}"
        )
    return [(key, preds[key], gts[key]) for key in sorted(gts)]


def score_folders(
    pred_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str],
    num_classes: int = 19,
    class_names: Sequence[str] | None = None,
    pred_suffix: str = "",
    gt_suffix: str = "",
    *,
    ignore_index: int = 255,
    allow_extra_preds: bool = False,
    allow_invalid: bool = False,
    progress: bool = False,
) -> EvalResult:
    """Score a folder of predicted trainId PNGs against a folder of trainId labels.

    Files are matched by stem (recursively, without ``pred_suffix`` / ``gt_suffix``); sizes must
    agree exactly. Predicted values outside ``0..num_classes-1`` (e.g. labelIds instead of
    trainIds, or 255) are an error naming the files, after all files were read, unless
    ``allow_invalid``, which counts them as wrong. ``class_names`` is only checked for length here
    (the names are used by ``EvalResult.table``/``to_dict``).
    """
    if class_names is not None and len(class_names) != num_classes:
        raise DatasetError(f"{len(class_names)} class names given for {num_classes} classes")
    pairs = match_folders(pred_dir, gt_dir, pred_suffix, gt_suffix, allow_extra_preds)
    metric = IoUMetric(num_classes, ignore_index=ignore_index)
    invalid: list[tuple[Path, int, list[int]]] = []  # (prediction, pixels, values)
    for _key, pred_path, gt_path in progress_bar(pairs, progress, desc="score", unit="img"):
        pred, gt = read_label_png(pred_path), read_label_png(gt_path)
        if pred.shape != gt.shape:
            raise DatasetError(
                f"size mismatch: prediction {pred_path} is {pred.shape[1]}×{pred.shape[0]} but label "
                f"{gt_path} is {gt.shape[1]}×{gt.shape[0]} (W×H); predictions must have the label's full size"
            )
        bad = pred >= num_classes
        if bad.any():
            invalid.append((pred_path, int(bad.sum()), sorted(int(v) for v in np.unique(pred[bad]))))
        metric.update(pred, gt, name=str(gt_path))
    if invalid and not allow_invalid:
        pixels = sum(n for _, n, _ in invalid)
        values = sorted({v for _, _, vs in invalid for v in vs})
        shown = "; ".join(f"{p} ({n} px: {vs[:5]})" for p, n, vs in invalid[:3])
        more = f"; ... ({len(invalid)} files in all)" if len(invalid) > 3 else ""
        raise DatasetError(
            f"{len(invalid)} of {len(pairs)} predictions hold values outside the {num_classes} classes "
            f"0..{num_classes - 1} ({pixels} pixels, values {values[:10]}): {shown}{more}; predictions must "
            "be trainIds (check --num-classes, or whether these are labelIds or colour maps)"
        )
    return metric.compute()

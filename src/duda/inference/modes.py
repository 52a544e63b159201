"""Whole-image and sliding-window inference returning full-resolution logits.

(Multi-resolution HRDA networks are run the same way: their fusion of scales is part of the
network, :class:`duda.models.hrda.HRDAModel`.)

A model here is anything that maps a normalised float32 ``B×3×h×w`` batch to logits
``B×K×h/s×w/s`` at some output stride ``s``: an ``nn.Module`` (a ``(logits, features)`` tuple is
accepted too), or a numpy callable such as an ONNX Runtime session wrapper (float32 numpy in,
logits out). Logits are always upsampled bilinearly (``align_corners=False``) — each window's to
the window size, the assembled map to the requested output size — as the reference code does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from duda.inference.options import DEFAULT_CROP, DEFAULT_STRIDE, InferenceOptions
from duda.windows import iter_windows, window_starts

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def as_logits_fn(model: nn.Module | Callable) -> LogitsFn:
    """A tensor→logits function for an ``nn.Module`` or a numpy callable (e.g. ONNX Runtime)."""
    if isinstance(model, nn.Module):

        def run_module(x: torch.Tensor) -> torch.Tensor:
            out = model(x)
            # Models may return (logits, features); only the logits matter here.
            return out[0] if isinstance(out, (tuple, list)) else out

        return run_module

    def run_numpy(x: torch.Tensor) -> torch.Tensor:
        out = model(x.detach().float().cpu().numpy())
        if isinstance(out, (tuple, list)):
            out = out[0]
        return torch.as_tensor(np.asarray(out, dtype=np.float32), device=x.device)

    return run_numpy


def _autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize (align_corners=False) of ``B×K×h×w`` logits to ``size`` = (H, W)."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def min_input_side(model: nn.Module | Callable) -> int:
    """The shortest image side the model can take (duda models: 32); 0 when it does not say."""
    return int(getattr(model, "min_input_side", 0) or 0)


def _forward(fn: LogitsFn, img: torch.Tensor, bf16: bool, flip: bool, min_side: int = 0) -> torch.Tensor:
    """Float32 logits at the model's stride; with ``flip`` the mean with the mirrored image's.

    An image with a side shorter than ``min_side`` (a thin strip) is zero-padded at the bottom /
    right to that size — zero is the mean colour after normalisation — and the logits are
    returned upsampled to the padded size and cut back to the image (at input resolution)."""
    h, w = img.shape[-2:]
    if h < min_side or w < min_side:
        padded = F.pad(img, (0, max(min_side - w, 0), 0, max(min_side - h, 0)))
        logits = _forward(fn, padded, bf16, flip)
        return upsample_logits(logits, tuple(padded.shape[-2:]))[:, :, :h, :w]
    with _autocast(img.device, bf16):
        logits = fn(img).float()
        if flip:
            mirrored = fn(torch.flip(img, dims=[-1])).float()
            logits = (logits + torch.flip(mirrored, dims=[-1])) / 2
    return logits


def _check_image(img: torch.Tensor) -> None:
    if img.ndim != 4 or img.shape[1] != 3:
        raise ValueError(f"expected a B×3×H×W image batch, got shape {tuple(img.shape)}")


@torch.no_grad()
def infer_whole(
    model: nn.Module | Callable,
    img: torch.Tensor,
    out_hw: tuple[int, int] | None = None,
    *,
    flip: bool = False,
    bf16: bool = False,
) -> torch.Tensor:
    """Logits ``B×K×H×W`` of the whole image, upsampled to ``out_hw`` (default: the input size).

    Two bilinear steps, as the reference: model stride → input size → ``out_hw``.

    ``flip`` averages with the horizontally mirrored prediction; ``bf16`` runs the model under
    bfloat16 autocast (the result is float32 either way).
    """
    _check_image(img)
    out_hw = tuple(out_hw) if out_hw is not None else tuple(img.shape[-2:])
    logits = _forward(as_logits_fn(model), img, bf16, flip, min_input_side(model))
    # As mmseg: the segmentor upsamples to its (resized) input, the test loop then to the label size.
    return upsample_logits(upsample_logits(logits, tuple(img.shape[-2:])), out_hw)


@torch.no_grad()
def infer_slide(
    model: nn.Module | Callable,
    img: torch.Tensor,
    crop: tuple[int, int] = DEFAULT_CROP,
    stride: tuple[int, int] = DEFAULT_STRIDE,
    num_classes: int | None = None,
    out_hw: tuple[int, int] | None = None,
    *,
    flip: bool = False,
    bf16: bool = False,
) -> torch.Tensor:
    """Sliding-window logits ``B×K×H×W`` upsampled to ``out_hw`` (default: the input size).

    ``crop`` and ``stride`` are (height, width). Each window's logits are upsampled to the window
    size and summed; every pixel is divided by the number of windows covering it. A window smaller
    than the crop (an image smaller than the crop) is zero-padded — zero is the mean colour after
    normalisation — to the crop size, so the model always sees the size it was trained on, and
    the padding's logits are cut away. ``num_classes`` is taken from the model when not given.
    """
    _check_image(img)
    fn = as_logits_fn(model)
    min_side = min_input_side(model)
    b, _, h, w = img.shape
    crop_hw = (int(crop[0]), int(crop[1]))
    out_hw = tuple(out_hw) if out_hw is not None else (h, w)
    total: torch.Tensor | None = None
    count = torch.zeros(1, 1, h, w, device=img.device)
    for y0, y1, x0, x1 in iter_windows((h, w), crop_hw, (int(stride[0]), int(stride[1]))):
        window = img[:, :, y0:y1, x0:x1]
        pad_h, pad_w = crop_hw[0] - (y1 - y0), crop_hw[1] - (x1 - x0)
        if pad_h > 0 or pad_w > 0:
            window = F.pad(window, (0, max(pad_w, 0), 0, max(pad_h, 0)))
        logits = _forward(fn, window, bf16, flip, min_side)
        logits = upsample_logits(logits, tuple(window.shape[-2:]))[:, :, : y1 - y0, : x1 - x0]
        if total is None:
            k = num_classes if num_classes is not None else logits.shape[1]
            if logits.shape[1] != k:
                raise ValueError(f"model returned {logits.shape[1]} classes, expected {k}")
            total = torch.zeros(b, k, h, w, device=img.device, dtype=torch.float32)
        total[:, :, y0:y1, x0:x1] += logits
        count[:, :, y0:y1, x0:x1] += 1
    assert total is not None  # at least one window always exists
    return upsample_logits(total / count, out_hw)


@torch.no_grad()
def infer(
    model: nn.Module | Callable,
    img: torch.Tensor,
    out_hw: tuple[int, int] | None = None,
    *,
    mode: str = "whole",
    crop: tuple[int, int] = DEFAULT_CROP,
    stride: tuple[int, int] = DEFAULT_STRIDE,
    num_classes: int | None = None,
    flip: bool = False,
    bf16: bool = False,
) -> torch.Tensor:
    """Dispatch to :func:`infer_whole` (``mode="whole"``) or :func:`infer_slide` (``"slide"``)."""
    if mode == "whole":
        return infer_whole(model, img, out_hw, flip=flip, bf16=bf16)
    if mode == "slide":
        return infer_slide(model, img, crop, stride, num_classes, out_hw, flip=flip, bf16=bf16)
    raise ValueError(f"inference mode must be 'whole' or 'slide', got {mode!r}")


def infer_with(
    model: nn.Module | Callable,
    img: torch.Tensor,
    options: InferenceOptions,
    out_hw: tuple[int, int] | None = None,
    num_classes: int | None = None,
) -> torch.Tensor:
    """:func:`infer` with the settings of ``options`` (``img`` already on its device)."""
    return infer(model, img, out_hw, num_classes=num_classes, **options.infer_kwargs())


# ---------------------------------------------------------------------------------------------
# Label maps of large images in bounded memory (duda predict)

#: Bytes of upsampled float32 logits above which a label map is built one class at a time.
FULL_LOGITS_BYTES = 256 << 20


def argmax_upsampled(
    logits: torch.Tensor, out_hw: tuple[int, int], max_bytes: int = FULL_LOGITS_BYTES
) -> torch.Tensor:
    """uint8 ``B×H×W`` argmax of ``logits`` (``B×K×h×w``) bilinearly upsampled to ``out_hw``.

    While the upsampled logits fit in ``max_bytes`` this is ``upsample_logits(...).argmax(1)``.
    Beyond, the classes are upsampled one at a time (the same ``F.interpolate`` per channel, so
    bit-identical) into a running maximum: about 10 bytes per output pixel instead of ``4·K`` (an
    8000×6000 photo with 19 classes: 0.4 GB instead of 3.6 GB). Ties go to the lower class, as
    ``argmax`` does."""
    b, k, h, w = logits.shape
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    if b * k * out_h * out_w * 4 <= max_bytes or k > 255:
        return upsample_logits(logits, (out_h, out_w)).argmax(dim=1).to(torch.uint8)
    best = upsample_logits(logits[:, :1], (out_h, out_w))[:, 0]
    labels = torch.zeros(b, out_h, out_w, dtype=torch.uint8, device=logits.device)
    for c in range(1, k):
        score = upsample_logits(logits[:, c : c + 1], (out_h, out_w))[:, 0]
        better = score > best
        torch.maximum(best, score, out=best)
        labels.masked_fill_(better, c)
        del score, better
    return labels


@torch.no_grad()
def slide_labels(
    model: nn.Module | Callable,
    img: torch.Tensor,
    crop: tuple[int, int] = DEFAULT_CROP,
    stride: tuple[int, int] = DEFAULT_STRIDE,
    *,
    flip: bool = False,
    bf16: bool = False,
) -> torch.Tensor:
    """uint8 ``B×H×W`` labels of a sliding-window pass, as ``infer_slide(...).argmax(1)`` (the
    same windows summed in the same order), but holding logits only for the band of rows that
    windows still cover: memory grows with the image width, not its area."""
    _check_image(img)
    fn = as_logits_fn(model)
    min_side = min_input_side(model)
    b, _, h, w = img.shape
    ch, cw = int(crop[0]), int(crop[1])
    ys = window_starts(h, ch, int(stride[0]))
    xs = window_starts(w, cw, int(stride[1]))
    labels = torch.empty(b, h, w, dtype=torch.uint8, device=img.device)
    band_top = 0  # total/count hold the rows band_top.. that windows still add to
    total: torch.Tensor | None = None
    count = torch.zeros(1, 1, 0, w, device=img.device)
    for i, y0 in enumerate(ys):
        y1 = min(y0 + ch, h)
        for x0 in xs:
            x1 = min(x0 + cw, w)
            window = img[:, :, y0:y1, x0:x1]
            pad_h, pad_w = ch - (y1 - y0), cw - (x1 - x0)
            if pad_h > 0 or pad_w > 0:
                window = F.pad(window, (0, max(pad_w, 0), 0, max(pad_h, 0)))
            logits = _forward(fn, window, bf16, flip, min_side)
            logits = upsample_logits(logits, tuple(window.shape[-2:]))[:, :, : y1 - y0, : x1 - x0]
            if total is None:
                total = torch.zeros(b, logits.shape[1], 0, w, device=img.device)
            grow = (y1 - band_top) - total.shape[2]
            if grow > 0:  # extend the band downwards with zero rows
                total = torch.cat([total, total.new_zeros(b, total.shape[1], grow, w)], dim=2)
                count = torch.cat([count, count.new_zeros(1, 1, grow, w)], dim=2)
            total[:, :, y0 - band_top : y1 - band_top, x0:x1] += logits
            count[:, :, y0 - band_top : y1 - band_top, x0:x1] += 1
        done = ys[i + 1] if i + 1 < len(ys) else h  # no later window reaches above this row
        n = done - band_top
        assert total is not None
        labels[:, band_top:done] = (total[:, :, :n] / count[:, :, :n]).argmax(dim=1).to(torch.uint8)
        total, count = total[:, :, n:].clone(), count[:, :, n:].clone()
        band_top = done
    return labels

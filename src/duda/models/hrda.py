"""HRDA: multi-resolution segmentation with a learned scale attention (Hoyer et al., ECCV 2022).

The network, independent of the training method. One backbone and one decode head see the image
at two resolutions:

- the **context** (low-resolution, LR) branch: the whole input bilinearly resized by ``scales[0]``
  (0.5 in the published configs);
- the **detail** (high-resolution, HR) branch: the input at ``scales[1]`` (= 1, full resolution).
  During training only a random ``hr_crop_size`` crop of it is run (:func:`get_crop_box`); at
  inference the whole image is covered by a sliding window of that size (:func:`slide_assemble`).

A second head of the same kind (the *scale attention*, fed by the LR features) gives per pixel
(and per class when ``attention_classwise``) a weight ``a = sigmoid(attention logits)``. With
``r = scales[1] / scales[0]`` and ``up`` a bilinear upsampling by ``r`` (``align_corners=False``)
the fused logits at the HR logit grid are

    fused = up(a) · HR  +  up((1 − a) · LR)

Note the order, which is the reference's: ``(1 − a)`` multiplies the LR logits *before* the
upsampling, and ``a`` is upsampled on its own. During training ``a`` is set to 0 outside the
detail crop (at the LR logit grid, before the upsampling) and HR is the crop's logits pasted into
a zero map, so outside the crop the prediction is the LR one alone.

Reference: ``mmseg/models/segmentors/hrda_encoder_decoder.py`` and
``mmseg/models/decode_heads/hrda_head.py`` in lhoyer/HRDA (identical in lhoyer/MIC ``seg/``).

The training method around the network (HRDA's loss composition, feature distance and the
teacher's pseudo-labels from the inference form) is :mod:`duda.methods.hrda`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from duda.errors import ConfigError
from duda.models import heads as H
from duda.models.factory import build_from_spec, build_head, recipe, resolve_arch
from duda.models.segmentor import SegmentationModel
from duda.windows import iter_windows

Box = tuple[int, int, int, int]  # (y1, y2, x1, x2), end exclusive

# ---------------------------------------------------------------------------------------------
# Crop geometry


def get_crop_box(
    img_h: int, img_w: int, crop_h: int, crop_w: int, divisible: int, generator: torch.Generator
) -> Box:
    """A random ``crop_h``×``crop_w`` box ``(y1, y2, x1, x2)`` inside an ``img_h``×``img_w`` image.

    The reference's geometry (``get_crop_bbox`` of ``hrda_encoder_decoder.py``): with the margin
    ``m = img − crop`` along an axis, the offset is ``k · divisible`` for ``k`` uniform in
    ``{0, …, (m + 1) // divisible − 1}``. So offsets are multiples of ``divisible`` and, when
    ``m + 1`` is not a multiple of ``divisible``, the largest ones are never drawn (1024 image,
    512 crop, divisible 8: offsets 0, 8, …, 504, never 512). A crop equal to the image gives the
    whole image without a draw. Where the reference fails (``numpy.random.randint(0, 0)``: a margin
    smaller than ``divisible − 1`` along one axis) the offset is 0, the only valid multiple.

    The draws (first the row, then the column offset) come from ``generator``, so a seeded
    generator gives the same boxes on any device.
    """
    for name, value in (("img_h", img_h), ("img_w", img_w), ("crop_h", crop_h), ("crop_w", crop_w)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"get_crop_box: {name} must be a positive integer, got {value!r}")
    if isinstance(divisible, bool) or not isinstance(divisible, int) or divisible < 1:
        raise ValueError(f"get_crop_box: divisible must be a positive integer, got {divisible!r}")
    if crop_h > img_h or crop_w > img_w:
        raise ValueError(f"get_crop_box: crop {crop_h}x{crop_w} is larger than the image {img_h}x{img_w}")
    if (crop_h, crop_w) == (img_h, img_w):
        return 0, img_h, 0, img_w
    offsets = []
    for margin in (img_h - crop_h, img_w - crop_w):
        choices = (margin + 1) // divisible
        k = int(torch.randint(0, choices, (1,), generator=generator).item()) if choices > 0 else 0
        offsets.append(k * divisible)
    y1, x1 = offsets
    return y1, y1 + crop_h, x1, x1 + crop_w


def crop(tensor: torch.Tensor, box: Sequence[int]) -> torch.Tensor:
    """The ``box = (y1, y2, x1, x2)`` region of the last two axes of a 2-, 3- or 4-dim tensor."""
    if tensor.dim() not in (2, 3, 4):
        raise ValueError(f"crop: expected a 2-, 3- or 4-dim tensor, got shape {tuple(tensor.shape)}")
    y1, y2, x1, x2 = _check_box(box)
    return tensor[..., y1:y2, x1:x2]


def _check_box(box: Sequence[int]) -> Box:
    if len(box) != 4:
        raise ValueError(f"crop box: expected (y1, y2, x1, x2), got {box!r}")
    y1, y2, x1, x2 = (int(v) for v in box)
    if not (0 <= y1 < y2 and 0 <= x1 < x2):
        raise ValueError(f"crop box: expected 0 <= y1 < y2 and 0 <= x1 < x2, got {tuple(box)!r}")
    return y1, y2, x1, x2


def scale_box(box: Sequence[int], factor: float) -> Box:
    """``box`` divided by ``factor`` and truncated (the reference's ``scale_box``): pixel box →
    logit-grid box, e.g. factor = output stride (4) for the HR grid, 4 / 0.5 = 8 for the LR grid."""
    y1, y2, x1, x2 = box
    return int(y1 / factor), int(y2 / factor), int(x1 / factor), int(x2 / factor)


# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class MultiResSpec:
    """What HRDA's segmentor and head take; defaults = the public GTA→Cityscapes HRDA config
    (``configs/hrda/gtaHR2csHR_hrda.py``; the same in MIC's ``gtaHR2csHR_mic_hrda.py``)."""

    #: (context/LR scale, detail/HR scale); the reference sorts ``scales=[1, 0.5]`` to this.
    scales: tuple[float, float] = (0.5, 1.0)
    #: (h, w) of the detail crop in training and of the HR sliding window at inference.
    hr_crop_size: tuple[int, int] = (512, 512)
    #: Training crop offsets are multiples of this (8 = output stride 4 × scale ratio 2).
    crop_coord_divisible: int = 8
    #: Inference: HR branch by a sliding window (True) or on the whole image at once.
    hr_slide_inference: bool = True
    #: Sliding window stride = half the crop (True) or the crop (False).
    hr_slide_overlapping: bool = True
    #: One attention map per class (True) or one for all classes.
    attention_classwise: bool = True
    #: Weight of the HR-crop loss (λ_d); the fused loss gets 1 − hr − lr weight.
    hr_loss_weight: float = 0.1
    #: Weight of the LR loss (0 in the published configs).
    lr_loss_weight: float = 0.0
    #: A constant attention instead of a learned one (ablation "fixedatt": 0.5); None = learned.
    fixed_attention: float | None = None
    #: Features for the ImageNet feature distance: a scale (the LR one, 0.5) or "all" (both).
    feature_scale: float | str = 0.5
    #: Feed the HR branch the image down- and up-sampled by 2 (ablation "blurhr").
    blur_hr_crop: bool = False
    #: Channels of the scale-attention head; None = the seg head's (the reference: 256, which is
    #: the DAFormer head's width too).
    attention_channels: int | None = None

    def __post_init__(self) -> None:
        scales = tuple(float(s) for s in self.scales)
        if len(scales) != 2:
            raise ValueError(f"MultiResSpec.scales: expected (lr, hr), got {self.scales!r}")
        lr, hr = scales
        if hr != 1.0:
            raise ValueError(
                f"MultiResSpec.scales: the detail scale must be 1 (crop boxes and labels are in "
                f"input pixels), got {self.scales!r}"
            )
        if not 0.0 < lr <= hr:
            raise ValueError(f"MultiResSpec.scales: expected 0 < lr <= hr, got {self.scales!r}")
        object.__setattr__(self, "scales", scales)
        size = tuple(self.hr_crop_size)
        if len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
            raise ValueError(f"MultiResSpec.hr_crop_size: expected (h, w) > 0, got {self.hr_crop_size!r}")
        object.__setattr__(self, "hr_crop_size", size)
        d = self.crop_coord_divisible
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"MultiResSpec.crop_coord_divisible: expected an integer >= 1, got {d!r}")
        for name in ("hr_slide_inference", "hr_slide_overlapping", "attention_classwise", "blur_hr_crop"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"MultiResSpec.{name}: expected a bool, got {getattr(self, name)!r}")
        for name in ("hr_loss_weight", "lr_loss_weight"):
            w = getattr(self, name)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not 0.0 <= w <= 1.0:
                raise ValueError(f"MultiResSpec.{name}: expected a number in [0, 1], got {w!r}")
        if self.hr_loss_weight + self.lr_loss_weight > 1.0:
            raise ValueError(
                f"MultiResSpec.hr_loss_weight + lr_loss_weight: expected <= 1 (the fused loss gets "
                f"1 − their sum), got {self.hr_loss_weight} + {self.lr_loss_weight}"
            )
        fa = self.fixed_attention
        if fa is not None and (isinstance(fa, bool) or not isinstance(fa, (int, float)) or not 0 <= fa <= 1):
            raise ValueError(f"MultiResSpec.fixed_attention: expected None or a number in [0, 1], got {fa!r}")
        fs = self.feature_scale
        if isinstance(fs, str):
            if fs != "all":
                raise ValueError(f"MultiResSpec.feature_scale: expected 'all' or a scale, got {fs!r}")
        elif isinstance(fs, bool) or not isinstance(fs, (int, float)) or float(fs) != lr:
            # The reference compares the student's features of that scale (the whole image) with
            # the ImageNet model's features of the whole image resized by it: only the LR scale
            # (or "all") gives matching shapes.
            raise ValueError(
                f"MultiResSpec.feature_scale: expected 'all' or the context scale {lr}, got {fs!r}"
            )
        ac = self.attention_channels
        if ac is not None and (isinstance(ac, bool) or not isinstance(ac, int) or ac < 1):
            raise ValueError(f"MultiResSpec.attention_channels: expected None or an integer >= 1, got {ac!r}")

    @property
    def lr_scale(self) -> float:
        return self.scales[0]

    @property
    def hr_scale(self) -> float:
        return self.scales[1]

    @property
    def slide_stride(self) -> tuple[int, int]:
        """Stride of the HR sliding window: half the crop when overlapping, else the crop."""
        h, w = self.hr_crop_size
        return (h // 2, w // 2) if self.hr_slide_overlapping else (h, w)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready fields (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MultiResSpec:
        """Inverse of :meth:`to_dict`; unknown keys raise a ValueError naming them."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"MultiResSpec: unknown field(s) {unknown}; expected some of {sorted(known)}")
        kw = dict(data)
        for key in ("scales", "hr_crop_size"):
            if key in kw:
                kw[key] = tuple(kw[key])
        return cls(**kw)


# ---------------------------------------------------------------------------------------------
# Pure pieces: resizing, sliding-window assembly, fusion


def resize_by(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Bilinear resize by ``factor`` (``align_corners=False``, the factor itself used for the
    sampling grid, as mmseg's ``resize(scale_factor=…)``); identity for factor 1."""
    if factor == 1:
        return x
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def blur_down_up(img: torch.Tensor, factor: float = 0.5) -> torch.Tensor:
    """Bilinear down by ``factor`` then up by ``1/factor``: the "blurred HR" ablation input."""
    return resize_by(resize_by(img, factor), 1 / factor)


def slide_assemble(
    fn: Callable[[torch.Tensor], torch.Tensor],
    img: torch.Tensor,
    crop: tuple[int, int],
    stride: tuple[int, int],
    output_stride: int = 1,
) -> torch.Tensor:
    """Logits of ``img`` (B×C×H×W) assembled from windows: the average over the windows covering
    each logit cell.

    Windows of ``crop`` every ``stride`` (``duda.windows.iter_windows``: the last
    window is moved back to end at the border; one window of the whole side when the image is
    smaller than the crop). All windows go through ``fn`` as ONE batch (window-major: window 0
    of every image, then window 1, …), as the reference's ``extract_slide_feat`` does — this
    matters for BatchNorm in train mode. ``fn`` maps a window batch to logits at 1/``output_stride``
    of its size; a window ``(y1, y2, x1, x2)`` lands at ``int(v / output_stride)`` of each
    coordinate of a ``int(H / s)``×``int(W / s)`` map, and each cell is divided by the number of
    windows that cover it.
    """
    if img.dim() != 4:
        raise ValueError(f"slide_assemble: expected a B×C×H×W image, got shape {tuple(img.shape)}")
    if output_stride < 1:
        raise ValueError(f"slide_assemble: output_stride must be >= 1, got {output_stride!r}")
    b, _, h, w = img.shape
    boxes = list(iter_windows((h, w), tuple(crop), tuple(stride)))
    out = fn(torch.cat([img[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes], dim=0))
    cells = [scale_box(box, output_stride) for box in boxes]
    out_h = max(c[1] for c in cells)
    out_w = max(c[3] for c in cells)
    total = out.new_zeros((b, out.shape[1], out_h, out_w))
    count = out.new_zeros((1, 1, out_h, out_w))
    for i, (y1, y2, x1, x2) in enumerate(cells):
        part = out[i * b : (i + 1) * b]
        if tuple(part.shape[-2:]) != (y2 - y1, x2 - x1):
            raise ValueError(
                f"slide_assemble: window {boxes[i]} gave logits {tuple(part.shape[-2:])}, expected "
                f"{(y2 - y1, x2 - x1)} at output stride {output_stride}; use windows divisible by it"
            )
        total[:, :, y1:y2, x1:x2] += part
        count[:, :, y1:y2, x1:x2] += 1
    return total / count


def fuse_scales(
    lr_logits: torch.Tensor,
    hr_logits: torch.Tensor,
    attention: torch.Tensor | float,
    scale_ratio: float,
    output_stride: int,
    lr_scale: float,
    crop_box: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]:
    """HRDA's fusion, in the reference's order: ``(fused, (1 − a)·LR, up(a))``.

    ``a`` (``attention``: sigmoid outputs B×{1,K}×h×w at the LR logit grid, or a constant) is,
    with a ``crop_box`` (input pixels), first multiplied by a mask that is 1 on the box divided by
    ``output_stride / lr_scale`` (truncated) and 0 elsewhere; then ``LR ← (1 − a)·LR``; both are
    upsampled by ``scale_ratio`` (HR scale / LR scale, bilinear, ``align_corners=False``); with a
    box, the HR logits are pasted at the box divided by ``output_stride`` into zeros of the
    upsampled size. ``fused = up(a)·HR + up((1 − a)·LR)``.
    """
    masked = attention
    if crop_box is not None:
        box = _check_box(crop_box)
        mask = lr_logits.new_zeros((lr_logits.shape[0], 1, *lr_logits.shape[2:]))
        y1, y2, x1, x2 = scale_box(box, output_stride / lr_scale)
        mask[:, :, y1:y2, x1:x2] = 1
        masked = attention * mask
    lr_weighted = (1 - masked) * lr_logits
    up_lr = resize_by(lr_weighted, scale_ratio)
    up_att = resize_by(masked, scale_ratio) if torch.is_tensor(masked) else masked
    if crop_box is not None:
        y1, y2, x1, x2 = scale_box(box, output_stride)
        if tuple(hr_logits.shape[-2:]) != (y2 - y1, x2 - x1) or y2 > up_lr.shape[2] or x2 > up_lr.shape[3]:
            raise ValueError(
                f"HRDA fusion: crop box {box} covers logit cells {(y1, y2, x1, x2)} of a "
                f"{tuple(up_lr.shape[-2:])} map but the detail logits are {tuple(hr_logits.shape[-2:])}; "
                f"box offsets and sizes must be multiples of {output_stride / lr_scale:g}"
            )
        inserted = torch.zeros_like(up_lr)
        inserted[:, :, y1:y2, x1:x2] = hr_logits
    else:
        if hr_logits.shape[-2:] != up_lr.shape[-2:]:
            raise ValueError(
                f"HRDA fusion: detail logits {tuple(hr_logits.shape[-2:])} and upsampled context "
                f"logits {tuple(up_lr.shape[-2:])} differ; the input sides must be multiples of "
                f"{output_stride / lr_scale:g}"
            )
        inserted = hr_logits
    return up_att * inserted + up_lr, lr_weighted, up_att


# ---------------------------------------------------------------------------------------------
# The model


class HRDAOutput(NamedTuple):
    """Training-form output of :class:`HRDAModel`.

    - ``fused``: B×K×h×w at the HR logit grid of the whole input (stride ``output_stride``);
    - ``lr``: the context logits *after* the reference's ``(1 − a)`` weighting, at the LR logit
      grid (this is what the reference's LR loss sees);
    - ``hr``: the detail crop's logits (crop size / ``output_stride``);
    - ``box``: the crop box in input pixels;
    - ``features``: with ``return_features``, the last-stage features of (LR context over the
      whole image, HR detail crop); else None;
    - ``attention``: the masked, upsampled attention used in ``fused`` (debugging/tests).
    """

    fused: torch.Tensor
    lr: torch.Tensor
    hr: torch.Tensor
    box: Box
    features: tuple[torch.Tensor, torch.Tensor] | None
    attention: torch.Tensor | float


class HRDAHeads(nn.Module):
    """The segmentation head (``seg``) and the scale-attention head (``attention``, None with a
    fixed attention). Calling it runs ``seg``, so ``model.head(feats)`` gives logits as for a
    :class:`SegmentationModel`, and ``model.head.parameters()`` covers both heads (the optimiser's
    head learning rate reaches the attention head, as the reference's ``head`` key does)."""

    def __init__(self, seg: nn.Module, attention: nn.Module | None) -> None:
        super().__init__()
        self.seg = seg
        self.attention = attention

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        return self.seg(feats)


def build_attention_head(
    base: SegmentationModel, out_channels: int, channels: int | None = None
) -> nn.Module:
    """A second decode head like ``base.head`` with ``out_channels`` outputs (reference HRDAHead).

    DAFormer head: the same embeddings but a 1×1 conv-BN-ReLU fusion instead of the separable ASPP
    (the reference replaces an ``aspp`` fusion by ``conv``, kernel 1) and ``channels`` wide
    (reference ``attention_embed_dim=256``; None = the seg head's width). DeepLabV2: a second ASPP
    classifier. SegFormer / DeepLabV3+ (not in the reference): a copy of the head.
    """
    name = base.spec["name"]
    kind = recipe(name).head
    fields = dict(resolve_arch(name, dict(base.spec.get("arch") or {})))
    in_channels = tuple(base.backbone.out_channels)
    if channels is not None and "head_channels" in fields:
        fields["head_channels"] = channels
    if kind == "daformer":
        width = fields["head_channels"]
        head = H.DAFormerHead(in_channels, out_channels, width, (1,), fields["dropout"])
        head.fuse = H.conv_bn_relu(width * len(in_channels), width, 1)
        return head
    return build_head(kind, fields, in_channels, out_channels)


class HRDAModel(nn.Module):
    """HRDA multi-resolution segmentor around a :class:`SegmentationModel`'s backbone and head.

    ``model(x, crop_box=box)`` → :class:`HRDAOutput` (training form, detail crop ``box``);
    ``model(x)`` → fused logits B×K×H/s×W/s (inference form, HR branch by sliding window), and
    ``model(x, return_features=True)`` → ``(logits, LR last-stage features)``.
    Input sides must be multiples of ``output_stride / scales[0]`` (8) for the two grids to align.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: HRDAHeads,
        output_stride: int,
        mr: MultiResSpec,
        spec: dict[str, Any],
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.output_stride = output_stride
        self.mr = mr
        self.spec = spec
        #: Shortest side: the LR branch must still give the backbone its minimum (32) after resizing.
        self.min_input_side = math.ceil(SegmentationModel.min_input_side / mr.lr_scale)

    @property
    def num_classes(self) -> int:
        return int(self.spec["num_classes"])

    def single_scale_model(self) -> SegmentationModel:
        """A :class:`SegmentationModel` view sharing this model's backbone and seg head."""
        base_spec = {k: v for k, v in self.spec.items() if k != "hrda"}
        return SegmentationModel(self.backbone, self.head.seg, self.output_stride, base_spec)

    def random_crop_box(self, img_h: int, img_w: int, generator: torch.Generator) -> Box:
        """A training detail-crop box for an ``img_h``×``img_w`` input (:func:`get_crop_box`)."""
        return get_crop_box(img_h, img_w, *self.mr.hr_crop_size, self.mr.crop_coord_divisible, generator)

    def _scaled(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        if scale == 1 and self.mr.blur_hr_crop:
            return blur_down_up(x)
        return resize_by(x, scale)

    def _attention(self, feats: list[torch.Tensor]) -> torch.Tensor | float:
        if self.head.attention is None:
            return float(self.mr.fixed_attention)
        return torch.sigmoid(self.head.attention(feats))

    def _hr_logits(self, hr: torch.Tensor) -> torch.Tensor:
        if not self.mr.hr_slide_inference:
            return self.head.seg(self.backbone(hr))
        return slide_assemble(
            lambda t: self.head.seg(self.backbone(t)),
            hr,
            self.mr.hr_crop_size,
            self.mr.slide_stride,
            self.output_stride,
        )

    def forward(
        self, x: torch.Tensor, crop_box: Sequence[int] | None = None, return_features: bool = False
    ) -> HRDAOutput | torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Training form with ``crop_box`` (an :class:`HRDAOutput`), inference form without."""
        if x.dim() != 4:
            raise ValueError(f"HRDAModel: expected a B×C×H×W batch, got shape {tuple(x.shape)}")
        lr_scale, hr_scale = self.mr.scales
        lr_feats = self.backbone(self._scaled(x, lr_scale))
        hr_img = self._scaled(x, hr_scale)
        if crop_box is None:
            lr_logits = self.head.seg(lr_feats)
            hr_logits = self._hr_logits(hr_img)
            att = self._attention(lr_feats)
            fused, _, _ = fuse_scales(
                lr_logits, hr_logits, att, hr_scale / lr_scale, self.output_stride, lr_scale
            )
            return (fused, lr_feats[-1]) if return_features else fused
        box = _check_box(crop_box)
        if box[1] > hr_img.shape[2] or box[3] > hr_img.shape[3]:
            raise ValueError(f"HRDAModel: crop box {box} exceeds the input {tuple(hr_img.shape[-2:])}")
        hr_feats = self.backbone(crop(hr_img, box))
        lr_logits = self.head.seg(lr_feats)
        hr_logits = self.head.seg(hr_feats)
        att = self._attention(lr_feats)
        fused, lr_weighted, up_att = fuse_scales(
            lr_logits, hr_logits, att, hr_scale / lr_scale, self.output_stride, lr_scale, box
        )
        features = (lr_feats[-1], hr_feats[-1]) if return_features else None
        return HRDAOutput(fused, lr_weighted, hr_logits, box, features, up_att)


def build_hrda_model(
    base: SegmentationModel,
    spec: MultiResSpec,
    num_classes: int | None = None,
    attention_head: nn.Module | None = None,
) -> HRDAModel:
    """HRDA around ``base`` (its backbone and head are reused, not copied).

    ``num_classes`` defaults to (and must equal) ``base.num_classes``. ``attention_head``
    overrides the scale-attention head built by :func:`build_attention_head` (K outputs when
    ``spec.attention_classwise``, else 1; none with ``spec.fixed_attention``).
    """
    if not isinstance(spec, MultiResSpec):
        raise ValueError(f"build_hrda_model: spec must be a MultiResSpec, got {type(spec).__name__}")
    k = base.num_classes if num_classes is None else num_classes
    if k != base.num_classes:
        raise ValueError(
            f"build_hrda_model: num_classes {k!r} differs from the base model's {base.num_classes}"
        )
    if spec.fixed_attention is not None:
        attention = None
    elif attention_head is not None:
        attention = attention_head
    else:
        attention = build_attention_head(base, k if spec.attention_classwise else 1, spec.attention_channels)
    full_spec = {**base.spec, "hrda": spec.to_dict()}
    return HRDAModel(base.backbone, HRDAHeads(base.head, attention), base.output_stride, spec, full_spec)


def wrap_multires(base: SegmentationModel, settings: dict[str, Any]) -> HRDAModel:
    """HRDA around ``base`` from JSON-ready settings (a ``method.hrda`` config section or a
    model spec's ``"hrda"`` entry); bad settings are a ``ConfigError`` naming the field."""
    try:
        spec = MultiResSpec.from_dict(settings)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"multi-resolution (HRDA) settings: {exc}") from None
    return build_hrda_model(base, spec)


def is_hrda_spec(spec: dict[str, Any]) -> bool:
    """True for the spec of an :class:`HRDAModel` (it has an ``"hrda"`` key)."""
    return isinstance(spec, dict) and "hrda" in spec


def hrda_from_spec(spec: dict[str, Any], pretrained: str | os.PathLike | None = None) -> HRDAModel:
    """Rebuild an :class:`HRDAModel` from its ``spec`` (base model spec + ``"hrda"``); the
    factory's ``build_from_spec`` does the wrapping (:func:`wrap_multires`), this only insists on it."""
    if not is_hrda_spec(spec):
        raise ValueError(f"hrda_from_spec: spec has no 'hrda' key: {spec!r}")
    return build_from_spec(spec, pretrained)

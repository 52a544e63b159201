"""Strong augmentation of the mixed image (DACS/DAFormer; method.md B.6).

Colour jitter and Gaussian blur, each switched on for the whole call (one draw per iteration,
as the reference draws ``color_jitter`` and ``blur`` once per iteration), with per-image random
strengths. Jitter follows the kornia-0.5 ``ColorJitter`` the reference used: per image a
brightness offset ``b−1``, contrast and saturation factors, all ``b ~ U(1−s, 1+s)``, and a hue
shift ``h·2π`` with ``h ~ U(−s, s)``, applied in one random order per kornia call on the image
denormalised to [0, 1], then renormalised. Images are ``B×3×H×W``, normalised in 0–255 units.

How often the random order and the blur σ are drawn follows how the reference calls its
``strong_transform``: DACS calls it once per mixed image (``per_image=True``: each image gets its
own jitter order and σ), MIC once for its whole masked batch (``per_image=False``: one order and
one σ for the batch; the jitter strengths are still per image, as kornia draws them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import kornia
import torch

from ._checks import UdaInputError, channel_stats, check_dim, check_probability, uniform


@dataclass
class StrongAugConfig:
    """Strong augmentation switches (defaults: DAFormer/MIC)."""

    color_jitter_p: float = 0.8  # probability that an iteration gets colour jitter
    color_jitter_strength: float = 0.2  # brightness/contrast/saturation/hue strength
    blur: bool = True
    blur_p: float = 0.5  # probability that an iteration gets Gaussian blur
    blur_sigma_min: float = 0.15
    blur_sigma_max: float = 1.15


def blur_kernel_size(side: int) -> int:
    """Odd kernel close to 10% of ``side``: ``ceil(0.1·side)``, minus 1 if even (512 → 51, 1024 → 103)."""
    if side < 1:
        raise UdaInputError(f"blur_kernel_size: expected a side of at least 1 px, got {side}")
    size = math.ceil(0.1 * side)
    return size if size % 2 == 1 else size - 1


def denormalise(img: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Normalised image → RGB in [0, 1] (``mean``/``std`` in 0–255 units)."""
    return (img * std + mean) / 255.0


def renormalise(img01: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] → normalised image (inverse of ``denormalise``)."""
    return (img01 * 255.0 - mean) / std


def jitter_unit_image(
    img01: torch.Tensor,
    generator: torch.Generator,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
    hue: float = 0.2,
) -> torch.Tensor:
    """Colour-jitter an RGB batch in [0, 1], always; strengths drawn per image, order per call."""
    draws = uniform((4, img01.shape[0]), generator, img01.device) * 2 - 1  # U(-1, 1) per image
    # kornia-0.5 ColorJitter: brightness adds (b - 1); hue in turns, converted to radians.
    ops = [
        lambda x: kornia.enhance.adjust_brightness(x, draws[0] * brightness),
        lambda x: kornia.enhance.adjust_contrast(x, (1 + draws[1] * contrast).clamp_min(0)),
        lambda x: kornia.enhance.adjust_saturation(x, (1 + draws[2] * saturation).clamp_min(0)),
        lambda x: kornia.enhance.adjust_hue(x, draws[3] * hue * 2 * math.pi),
    ]
    order = torch.randperm(len(ops), generator=generator, device=generator.device).tolist()
    out = img01
    for index in order:
        out = ops[index](out)
    return out.clamp(0, 1)


def color_jitter(
    img: torch.Tensor,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    generator: torch.Generator,
    p: float = 0.8,
    brightness: float = 0.2,
    contrast: float = 0.2,
    saturation: float = 0.2,
    hue: float = 0.2,
) -> torch.Tensor:
    """With probability ``p`` (one draw per call), colour-jitter the normalised batch ``img``.

    Returns ``img`` itself when not applied. The four strengths may differ; the reference uses
    0.2 for all. Computed in float32 (bf16/fp16 inputs are cast back).
    """
    check_dim("img", img, 4, "B×3×H×W")
    check_probability("color_jitter p", p)
    apply = uniform((1,), generator, torch.device("cpu")).item() < p
    if not apply:
        return img
    mean_t, std_t = channel_stats(mean, img, "mean"), channel_stats(std, img, "std")
    work = denormalise(img.to(mean_t.dtype), mean_t, std_t).clamp(0, 1)
    work = jitter_unit_image(work, generator, brightness, contrast, saturation, hue)
    return renormalise(work.clamp(0, 1), mean_t, std_t).to(img.dtype)


def gaussian_blur(
    img: torch.Tensor,
    generator: torch.Generator,
    p: float = 0.5,
    sigma_range: tuple[float, float] = (0.15, 1.15),
    sigma_per_image: bool = True,
) -> torch.Tensor:
    """With probability ``p`` (one draw per call), blur each image with its own σ ~ U(sigma_range)
    (``sigma_per_image=False``: one σ for the whole batch).

    The kernel is ``blur_kernel_size`` of the height × of the width (51×51 at 512×512).
    Returns ``img`` itself when not applied.
    """
    check_dim("img", img, 4, "B×C×H×W")
    check_probability("blur p", p)
    low, high = sigma_range
    if not 0 < low <= high:
        raise UdaInputError(f"blur sigma_range: expected 0 < low <= high, got {sigma_range}")
    apply = uniform((1,), generator, torch.device("cpu")).item() < p
    if not apply:
        return img
    # σ stays where it is drawn (the generator's device): kornia checks σ > 0 there and copies it
    # to the image's device without waiting, where a σ on the GPU would be read back (a sync)
    sigma = low + (high - low) * uniform(
        (img.shape[0] if sigma_per_image else 1, 1), generator, generator.device
    )
    sigma = sigma.expand(img.shape[0], 1)
    kernel = (blur_kernel_size(img.shape[2]), blur_kernel_size(img.shape[3]))
    return kornia.filters.gaussian_blur2d(img, kernel, sigma.expand(-1, 2).float())


def strong_transform(
    img: torch.Tensor,
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    generator: torch.Generator,
    config: StrongAugConfig | None = None,
    per_image: bool = True,
) -> torch.Tensor:
    """Colour jitter then (if enabled) Gaussian blur; whether each is applied is drawn once per call.

    ``per_image=True`` (DACS's mixed images): every image gets its own jitter order and blur σ.
    ``per_image=False`` (MIC's masked batch): one jitter order and one σ for the batch.
    """
    config = config or StrongAugConfig()
    check_dim("img", img, 4, "B×3×H×W")
    check_probability("color_jitter p", config.color_jitter_p)
    check_probability("blur p", config.blur_p)
    cpu = torch.device("cpu")
    jitter_on = uniform((1,), generator, cpu).item() < config.color_jitter_p
    blur_on = config.blur and uniform((1,), generator, cpu).item() < config.blur_p
    if not (jitter_on or blur_on):
        return img
    s = config.color_jitter_strength
    sigmas = (config.blur_sigma_min, config.blur_sigma_max)
    out = []
    for part in img.split(1) if per_image else [img]:
        if jitter_on:  # p=1: the decision above was the iteration's one draw
            part = color_jitter(part, mean, std, generator, 1.0, s, s, s, s)
        if blur_on:
            part = gaussian_blur(part, generator, 1.0, sigmas, sigma_per_image=False)
        out.append(part)
    return out[0] if len(out) == 1 else torch.cat(out)

"""How a network is run over an image: :class:`InferenceOptions`, and the defaults, defined once."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

#: Inference modes: the whole image in one pass, or sliding windows.
MODES = ("whole", "slide")
#: Sliding-window size (H, W): the training crop of the published configs.
DEFAULT_CROP: tuple[int, int] = (512, 512)
#: Sliding-window step (H, W): two thirds of the crop, as the reference test configs.
DEFAULT_STRIDE: tuple[int, int] = (341, 341)


@dataclass(frozen=True)
class InferenceOptions:
    """Inference settings passed around together (``Segmenter``, prediction, evaluation).

    ``mode`` "whole" (the image at the test scale in one pass) or "slide" (windows of ``crop``
    every ``stride``, both (H, W)); ``flip`` averages with the mirrored image; ``bf16`` runs the
    network under bfloat16 autocast; ``device`` is where the input tensors go."""

    mode: str = "whole"
    crop: tuple[int, int] = DEFAULT_CROP
    stride: tuple[int, int] = DEFAULT_STRIDE
    flip: bool = False
    bf16: bool = False
    device: str | torch.device = "cpu"

    def __post_init__(self) -> None:
        object.__setattr__(self, "crop", tuple(self.crop))
        object.__setattr__(self, "stride", tuple(self.stride))

    def with_(self, **changes: Any) -> InferenceOptions:
        """A copy with ``changes`` (e.g. ``device=...``)."""
        return replace(self, **changes)

    def infer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of :func:`duda.inference.infer` (all but ``device``)."""
        return {
            "mode": self.mode,
            "crop": self.crop,
            "stride": self.stride,
            "flip": self.flip,
            "bf16": self.bf16,
        }

"""Mix Transformer (MiT) encoder, built from HF ``transformers``' SegFormer encoder.

Using ``SegformerModel`` (encoder only) keeps the published ImageNet checkpoints
``nvidia/mit-b0`` … ``nvidia/mit-b5`` usable; ``pretrained.py`` maps their key layout (and
DAFormer's mmseg ``mit_b5.pth`` layout) onto the installed module names.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

# Stage widths and depths of the published variants (SegFormer paper, Table 6).
MIT_DIMS_B0 = (32, 64, 160, 256)
MIT_DIMS_B1_B5 = (64, 128, 320, 512)
MIT_DEPTHS = {
    "b0": (2, 2, 2, 2),
    "b1": (2, 2, 2, 2),
    "b2": (3, 4, 6, 3),
    "b3": (3, 4, 18, 3),
    "b4": (3, 8, 27, 3),
    "b5": (3, 6, 40, 3),
}


@dataclass(frozen=True)
class MiTArch:
    """Architecture of one MiT encoder; the defaults are MiT-B0."""

    embed_dims: tuple[int, ...] = MIT_DIMS_B0
    depths: tuple[int, ...] = (2, 2, 2, 2)
    num_heads: tuple[int, ...] = (1, 2, 5, 8)
    sr_ratios: tuple[int, ...] = (8, 4, 2, 1)
    mlp_ratios: tuple[int, ...] = (4, 4, 4, 4)
    patch_sizes: tuple[int, ...] = (7, 3, 3, 3)
    strides: tuple[int, ...] = (4, 2, 2, 2)
    drop_path_rate: float = 0.1  # DAFormer's setting


def mit_variant(variant: str) -> MiTArch:
    """The published MiT-B0 … B5 architecture by name (``"b0"`` … ``"b5"``)."""
    dims = MIT_DIMS_B0 if variant == "b0" else MIT_DIMS_B1_B5
    return MiTArch(embed_dims=dims, depths=MIT_DEPTHS[variant])


def _attn_implementation() -> str:
    """PyTorch's fused attention where the installed ``transformers``' SegFormer has it (5.x).

    Same result as the eager path, less memory. The 4.x SegFormer attention is written out (eager
    only), and transformers 4.57 rejects a request for ``"sdpa"`` there.
    """
    from transformers import SegformerModel

    return "sdpa" if getattr(SegformerModel, "_supports_sdpa", False) else "eager"


def _segformer_config(arch: MiTArch):
    from transformers import SegformerConfig

    n = len(arch.embed_dims)
    for field in ("depths", "num_heads", "sr_ratios", "mlp_ratios", "patch_sizes", "strides"):
        if len(getattr(arch, field)) != n:
            raise ValueError(f"MiT {field}={getattr(arch, field)} must have {n} entries like embed_dims")
    for dim, heads in zip(arch.embed_dims, arch.num_heads, strict=True):
        if dim % heads:
            raise ValueError(
                f"MiT embed_dims {arch.embed_dims} must be divisible by num_heads {arch.num_heads}"
            )
    config = SegformerConfig(
        num_channels=3,
        num_encoder_blocks=n,
        depths=list(arch.depths),
        sr_ratios=list(arch.sr_ratios),
        hidden_sizes=list(arch.embed_dims),
        patch_sizes=list(arch.patch_sizes),
        strides=list(arch.strides),
        num_attention_heads=list(arch.num_heads),
        mlp_ratios=list(arch.mlp_ratios),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        drop_path_rate=arch.drop_path_rate,
        reshape_last_stage=True,
        attn_implementation=_attn_implementation(),
    )
    return config


# LayerNorm epsilon of DAFormer's mmseg MiT (``mix_transformer.py``): the ``mit_b*`` classes pass
# ``norm_layer=partial(nn.LayerNorm, eps=1e-6)``, which builds the block norms (norm1, norm2) and
# the stage norms (norm1…norm4); the patch-embedding norm and the attention's spatial-reduction
# norm are plain ``nn.LayerNorm(dim)`` (eps 1e-5). transformers' SegformerConfig.layer_norm_eps
# (1e-6) drives none of these in transformers 5.x (every LayerNorm there is built with the default
# 1e-5), so the values are set on the modules after construction. Names of transformers 5.x
# (``stages.*``) and 4.x (``block.*``, ``layer_norm.*``).
_MIT_LAYER_NORM_EPS = (
    (re.compile(r"stages\.\d+\.patch_embeddings\.layer_norm|patch_embeddings\.\d+\.layer_norm"), 1e-5),
    (
        re.compile(
            r"stages\.\d+\.blocks\.\d+\.attention\.sequence_reduction\.layer_norm"
            r"|block\.\d+\.\d+\.attention\.self\.layer_norm"
        ),
        1e-5,
    ),
    (
        re.compile(r"stages\.\d+\.blocks\.\d+\.layernorm_(before|after)|block\.\d+\.\d+\.layer_norm_[12]"),
        1e-6,
    ),
    (re.compile(r"stages\.\d+\.layer_norm|layer_norm\.\d+"), 1e-6),
)


def set_reference_layer_norm_eps(encoder: nn.Module) -> None:
    """Set every LayerNorm of a SegformerModel encoder to the eps of DAFormer's MiT.

    Raises ValueError naming a LayerNorm whose role cannot be told from its name (an unknown
    ``transformers`` layout), rather than leaving it at a guessed value.
    """
    for name, module in encoder.named_modules():
        if not isinstance(module, nn.LayerNorm):
            continue
        local = name.removeprefix("encoder.")
        for pattern, eps in _MIT_LAYER_NORM_EPS:
            if pattern.fullmatch(local):
                module.eps = eps
                break
        else:
            raise ValueError(f"MiT LayerNorm {name!r}: unknown role, cannot set the reference eps")


class MiTBackbone(nn.Module):
    """MiT encoder returning the four stage outputs (strides 4, 8, 16, 32) as B×C×H×W maps."""

    #: backbone family, read by the optimiser (DAFormer: no weight decay on MiT norms)
    family = "mit"

    def __init__(self, arch: MiTArch | None = None) -> None:
        super().__init__()
        from transformers import SegformerModel

        self.arch = arch or MiTArch()
        self.encoder = SegformerModel(_segformer_config(self.arch))
        set_reference_layer_norm_eps(self.encoder)
        self.out_channels: tuple[int, ...] = tuple(self.arch.embed_dims)
        strides, s = [], 1
        for st in self.arch.strides:
            s *= st
            strides.append(s)
        self.feature_strides: tuple[int, ...] = tuple(strides)
        self._checkpointing = False

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.encoder(x, output_hidden_states=True, return_dict=True)
        return list(out.hidden_states)

    # ------------------------------------------------------------------ activation checkpointing
    @property
    def checkpointing(self) -> bool:
        """Whether the transformer blocks are activation-checkpointed (see :meth:`set_checkpointing`)."""
        return self._checkpointing

    def set_checkpointing(self, enabled: bool) -> None:
        """Activation checkpointing of every transformer block (``model.checkpointing``).

        When training with gradients, each block keeps only its input for the backward pass and
        runs its forward again there (``torch.utils.checkpoint``, non-reentrant, the random state
        restored so drop-path draws repeat): the encoder's saved activations shrink to one tensor
        per block, for about one more encoder forward per step. Without gradients (teachers, the
        ImageNet network, evaluation) the blocks run as usual. Weights and their names are
        unchanged.
        """
        blocks = mit_blocks(self.encoder)
        if not blocks:
            raise ValueError("MiT encoder: no transformer blocks (SegformerLayer) found to checkpoint")
        for block in blocks:
            if enabled:
                # an instance attribute shadows the class's forward; deep copies (EMA teachers)
                # copy it with the block, so the copy checkpoints itself
                block.forward = functools.partial(_checkpointed_block_forward, block)
            else:
                block.__dict__.pop("forward", None)
        self._checkpointing = bool(enabled)


def mit_blocks(encoder: nn.Module) -> list[nn.Module]:
    """The transformer blocks of a SegformerModel encoder (``SegformerLayer``, in transformers
    4.x and 5.x alike)."""
    return [m for m in encoder.modules() if type(m).__name__ == "SegformerLayer"]


def _checkpointed_block_forward(block: nn.Module, *args, **kwargs):
    forward = type(block).forward
    if block.training and torch.is_grad_enabled():
        return checkpoint(forward, block, *args, use_reentrant=False, **kwargs)
    return forward(block, *args, **kwargs)


def set_checkpointing(model: nn.Module, enabled: bool = True) -> int:
    """Switch activation checkpointing of every MiT encoder inside ``model`` (a segmentation or
    multi-resolution model); returns how many encoders were switched (0: no MiT inside)."""
    backbones = [m for m in model.modules() if isinstance(m, MiTBackbone)]
    for backbone in backbones:
        backbone.set_checkpointing(enabled)
    return len(backbones)

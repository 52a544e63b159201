"""Fake published checkpoints built from the key-layout fixtures, and the reference forward pass.

The layouts (``fixtures/*_keys.json``) list the names and shapes of DAFormer / MIC mmseg
checkpoints as written from the reference module structure (see ``fixtures/make_reference_keys.py``).
``reference_forward`` computes what the reference modules compute from those weights, written from
the reference ``forward`` methods (MixVisionTransformer, DAFormerHead / ASPPWrapper, SegFormerHead,
DLV2Head) with functional torch ops: the test oracle for our converted models.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

FIXTURES = Path(__file__).parent / "fixtures"


def layout(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}_keys.json").read_text())


def fake_network(name: str, seed: int = 0, device: str | None = None) -> dict[str, torch.Tensor]:
    """Random weights of the listed shapes (``backbone.*``, ``decode_head.*``)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for row in layout(name)["keys"]:
        shape, key = row["shape"], row["name"]
        if device == "meta":
            dtype = torch.int64 if row.get("dtype") == "int64" else torch.float32
            out[key] = torch.empty(shape, dtype=dtype, device="meta")
        elif row.get("dtype") == "int64":
            out[key] = torch.tensor(1000 + seed)
        elif key.endswith("running_var"):
            out[key] = torch.rand(shape, generator=g) + 0.5
        else:
            out[key] = 0.2 * torch.randn(shape, generator=g)
    return out


def fake_checkpoint(
    name: str, networks: tuple[str, ...] = ("model", "ema_model", "imnet_model"), meta: dict | None = None
) -> dict:
    """An mmcv ``save_checkpoint`` dict of a UDA run: each network with its own random weights."""
    state = {}
    for i, net in enumerate(networks):
        state.update({f"{net}.{k}": v for k, v in fake_network(name, seed=i).items()})
    default_meta = {"iter": 40000, "mmcv_version": "1.3.7", "config": "model = dict(type='EncoderDecoder')"}
    return {"meta": default_meta if meta is None else meta, "state_dict": state, "optimizer": {}}


def save_fake(path: Path, name: str, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(fake_checkpoint(name, **kwargs), path)
    return path


# ----------------------------------------------------------------------------- reference forward


def _ln(x, w, b, eps):
    return F.layer_norm(x, (x.shape[-1],), w, b, eps)


def _bn(x, sd, p):
    return F.batch_norm(
        x,
        sd[f"{p}.running_mean"],
        sd[f"{p}.running_var"],
        sd[f"{p}.weight"],
        sd[f"{p}.bias"],
        False,
        0.0,
        1e-5,
    )


def _conv_module(x, sd, p, **conv):
    """mmcv ConvModule(conv, bn, ReLU) in eval mode."""
    return F.relu(_bn(F.conv2d(x, sd[f"{p}.conv.weight"], None, **conv), sd, f"{p}.bn"))


def mit_forward(sd: dict, x: torch.Tensor, num_heads: tuple[int, ...]) -> list[torch.Tensor]:
    """MixVisionTransformer.forward_features of mit_b* (block/stage norms eps 1e-6, others 1e-5)."""
    outs = []
    for s in range(1, 5):
        w = sd[f"backbone.patch_embed{s}.proj.weight"]
        x = F.conv2d(
            x,
            w,
            sd[f"backbone.patch_embed{s}.proj.bias"],
            stride=4 if s == 1 else 2,
            padding=w.shape[-1] // 2,
        )
        B, C, H, W = x.shape
        t = _ln(
            x.flatten(2).transpose(1, 2),
            sd[f"backbone.patch_embed{s}.norm.weight"],
            sd[f"backbone.patch_embed{s}.norm.bias"],
            1e-5,
        )
        j = 0
        while f"backbone.block{s}.{j}.norm1.weight" in sd:
            p = f"backbone.block{s}.{j}."
            t = t + _attention(
                _ln(t, sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-6), sd, p, H, W, num_heads[s - 1]
            )
            t = t + _mlp(_ln(t, sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-6), sd, p, H, W)
            j += 1
        t = _ln(t, sd[f"backbone.norm{s}.weight"], sd[f"backbone.norm{s}.bias"], 1e-6)
        x = t.reshape(B, H, W, C).permute(0, 3, 1, 2)
        outs.append(x)
    return outs


def _attention(x, sd, p, H, W, heads):
    B, N, C = x.shape
    q = (
        F.linear(x, sd[p + "attn.q.weight"], sd[p + "attn.q.bias"])
        .reshape(B, N, heads, C // heads)
        .permute(0, 2, 1, 3)
    )
    if p + "attn.sr.weight" in sd:
        sr = sd[p + "attn.sr.weight"]
        x_ = F.conv2d(x.permute(0, 2, 1).reshape(B, C, H, W), sr, sd[p + "attn.sr.bias"], stride=sr.shape[-1])
        x_ = _ln(
            x_.reshape(B, C, -1).permute(0, 2, 1), sd[p + "attn.norm.weight"], sd[p + "attn.norm.bias"], 1e-5
        )
    else:
        x_ = x
    kv = F.linear(x_, sd[p + "attn.kv.weight"], sd[p + "attn.kv.bias"])
    kv = kv.reshape(B, -1, 2, heads, C // heads).permute(2, 0, 3, 1, 4)
    k, v = kv[0], kv[1]
    attn = ((q @ k.transpose(-2, -1)) * (C // heads) ** -0.5).softmax(-1)
    out = (attn @ v).transpose(1, 2).reshape(B, N, C)
    return F.linear(out, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])


def _mlp(x, sd, p, H, W):
    h = F.linear(x, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"])
    B, N, C = h.shape
    h = h.transpose(1, 2).reshape(B, C, H, W)
    h = F.conv2d(h, sd[p + "mlp.dwconv.dwconv.weight"], sd[p + "mlp.dwconv.dwconv.bias"], padding=1, groups=C)
    h = F.gelu(h.flatten(2).transpose(1, 2))
    return F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])


def _mlp_embed(x, w, b, size):
    """segformer_head.MLP + the heads' reshape and resize to the finest level."""
    B, _, H, W = x.shape
    e = F.linear(x.flatten(2).transpose(1, 2), w, b).permute(0, 2, 1).reshape(B, -1, H, W)
    return e if e.shape[-2:] == size else F.interpolate(e, size=size, mode="bilinear", align_corners=False)


def daformer_head_forward(sd: dict, feats: list[torch.Tensor], dilations=(1, 6, 12, 18)) -> torch.Tensor:
    """DAFormerHead.forward with the sep-ASPP fusion (ASPPWrapper, pool=False), eval mode."""
    h = "decode_head."
    size = feats[0].shape[-2:]
    x = torch.cat(
        [
            _mlp_embed(f, sd[f"{h}embed_layers.{i}.proj.weight"], sd[f"{h}embed_layers.{i}.proj.bias"], size)
            for i, f in enumerate(feats)
        ],
        dim=1,
    )
    outs = []
    for k, d in enumerate(dilations):
        p = f"{h}fuse_layer.aspp_modules.{k}"
        if d == 1:
            outs.append(_conv_module(x, sd, p))
        else:
            y = _conv_module(x, sd, f"{p}.depthwise_conv", padding=d, dilation=d, groups=x.shape[1])
            outs.append(_conv_module(y, sd, f"{p}.pointwise_conv"))
    y = _conv_module(torch.cat(outs, dim=1), sd, f"{h}fuse_layer.bottleneck", padding=1)
    return F.conv2d(y, sd[f"{h}conv_seg.weight"], sd[f"{h}conv_seg.bias"])


def daformer_conv1_head_forward(sd: dict, feats: list[torch.Tensor]) -> torch.Tensor:
    """DAFormerHead.forward with fusion_cfg type 'conv', kernel 1 (daformer_conv1), eval mode."""
    h = "decode_head."
    size = feats[0].shape[-2:]
    x = torch.cat(
        [
            _mlp_embed(f, sd[f"{h}embed_layers.{i}.proj.weight"], sd[f"{h}embed_layers.{i}.proj.bias"], size)
            for i, f in enumerate(feats)
        ],
        dim=1,
    )
    y = _conv_module(x, sd, f"{h}fuse_layer")
    return F.conv2d(y, sd[f"{h}conv_seg.weight"], sd[f"{h}conv_seg.bias"])


def segformer_head_forward(sd: dict, feats: list[torch.Tensor]) -> torch.Tensor:
    """DAFormer's SegFormerHead.forward (levels concatenated finest first), eval mode."""
    h = "decode_head."
    size = feats[0].shape[-2:]
    x = torch.cat(
        [
            _mlp_embed(f, sd[f"{h}linear_c.{i}.proj.weight"], sd[f"{h}linear_c.{i}.proj.bias"], size)
            for i, f in enumerate(feats)
        ],
        dim=1,
    )
    y = _conv_module(x, sd, f"{h}linear_fuse")
    return F.conv2d(y, sd[f"{h}linear_pred.weight"], sd[f"{h}linear_pred.bias"])


def dlv2_head_forward(sd: dict, feats: list[torch.Tensor], dilations=(6, 12)) -> torch.Tensor:
    """DLV2Head.forward: the ASPP branches (conv with bias, no norm, no act) summed."""
    x = feats[-1]
    out = None
    for k, d in enumerate(dilations):
        p = f"decode_head.aspp_modules.{k}.conv"
        y = F.conv2d(x, sd[f"{p}.weight"], sd[f"{p}.bias"], padding=d, dilation=d)
        out = y if out is None else out + y
    return out

"""Fake published checkpoints built from the key-layout fixtures, and the reference forward pass.

The layouts (``fixtures/*_keys.json``) list the names and shapes of DAFormer / MIC mmseg
checkpoints as written from the reference module structure (see ``fixtures/make_reference_keys.py``).
``reference_forward`` computes what the reference modules compute from those weights, written from
the reference ``forward`` methods (MixVisionTransformer, DAFormerHead / ASPPWrapper, SegFormerHead,
DLV2Head, and HRDA's ``HRDAEncoderDecoder.encode_decode`` + ``HRDAHead.forward`` at test time) with
functional torch ops: the test oracle for our converted models.

HRDA fakes (``fake_hrda_network`` / ``fake_hrda_checkpoint``) use the ``hrda_daformer_mit_tiny``
layout (HRDAHead over the tiny DAFormer head, a 16-wide scale attention) and may carry the mmcv
config text that mmseg's ``train.py`` stores in ``meta['config']`` (``hrda_config_text``).
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


# ----------------------------------------------------------------------------- HRDA fakes

HRDA_LAYOUT = "hrda_daformer_mit_tiny"


def fake_hrda_network(seed: int = 0, classwise: bool = True) -> dict[str, torch.Tensor]:
    """HRDA weights of the tiny layout; ``classwise=False``: one attention map for all classes
    (``attention_classwise=False``: the attention's ``conv_seg`` has one output)."""
    net = fake_network(HRDA_LAYOUT, seed)
    if not classwise:
        g = torch.Generator().manual_seed(100 + seed)
        w = net["decode_head.scale_attention.conv_seg.weight"]
        net["decode_head.scale_attention.conv_seg.weight"] = 0.2 * torch.randn(1, *w.shape[1:], generator=g)
        net["decode_head.scale_attention.conv_seg.bias"] = 0.2 * torch.randn(1, generator=g)
    return net


def hrda_config_text(
    scales=(1, 0.5),
    hr_crop_size=(32, 32),
    attention_classwise: bool = True,
    hr_slide_inference: bool = True,
    extra_model: str = "",
    extra_head: str = "",
) -> str:
    """A config text as mmcv's ``Config.pretty_text`` writes it (the merged HRDA config, abridged):
    other top-level entries hold look-alike keys (``crop_size``, ``scales``) that must not be read."""
    return f"""log_config = dict(interval=50, hooks=[dict(type='TextLoggerHook', by_epoch=False)])
norm_cfg = dict(type='BN', requires_grad=True)
find_unused_parameters = True
model = dict(
    type='HRDAEncoderDecoder',
    pretrained='pretrained/mit_b5.pth',
    backbone=dict(type='mit_b5', style='pytorch'),
    decode_head=dict(
        type='HRDAHead',
        in_channels=[64, 128, 320, 512],
        in_index=[0, 1, 2, 3],
        channels=256,
        dropout_ratio=0.1,
        num_classes=19,
        norm_cfg=dict(type='BN', requires_grad=True),
        align_corners=False,
        decoder_params=dict(
            embed_dims=256,
            embed_cfg=dict(type='mlp', act_cfg=None, norm_cfg=None),
            fusion_cfg=dict(
                type='aspp',
                sep=True,
                dilations=(1, 6, 12, 18),
                pool=False,
                act_cfg=dict(type='ReLU'),
                norm_cfg=dict(type='BN', requires_grad=True))),
        loss_decode=dict(
            type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
        single_scale_head='DAFormerHead',
        attention_classwise={attention_classwise},
        hr_loss_weight=0.1{extra_head}),
    train_cfg=dict(work_dir='work_dirs/local-basic/gtaHR2csHR_hrda'),
    test_cfg=dict(
        mode='slide',
        batched_slide=True,
        stride=[512, 512],
        crop_size=[1024, 1024]),
    scales={list(scales)},
    hr_crop_size={list(hr_crop_size)},
    feature_scale=0.5,
    crop_coord_divisible=8,
    hr_slide_inference={hr_slide_inference}{extra_model})
uda = dict(type='DACS', alpha=0.999, mix='class', imnet_feature_dist_lambda=0.005)
data = dict(
    samples_per_gpu=2,
    train=dict(type='UDADataset', rare_class_sampling=dict(min_pixels=3000, min_crop_ratio=2.0)),
    crop_size=(1024, 1024),
    scales=[9, 9])
seed = 1
"""


def fake_hrda_checkpoint(
    networks: tuple[str, ...] = ("model", "ema_model", "imnet_model"),
    classwise: bool = True,
    config: str | None = None,
) -> dict:
    """An HRDA / MIC(HRDA) ``latest.pth`` dict; ``config``: the text of ``meta['config']``
    (None: no config in the meta)."""
    state = {}
    for i, net in enumerate(networks):
        state.update({f"{net}.{k}": v for k, v in fake_hrda_network(i, classwise).items()})
    meta = {"iter": 40000, "mmcv_version": "1.3.7"}
    if config is not None:
        meta["config"] = config
    return {"meta": meta, "state_dict": state, "optimizer": {}}


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


def _part(sd: dict, prefix: str) -> dict:
    """The ``prefix`` part of an HRDA network as a single head's ``decode_head.*`` weights."""
    return {"decode_head." + k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def _resize(x: torch.Tensor, factor: float) -> torch.Tensor:
    """mmseg ``resize(scale_factor=...)``, bilinear, ``align_corners=False``."""
    return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)


def hrda_forward(
    sd: dict,
    x: torch.Tensor,
    num_heads: tuple[int, ...],
    scales=(1, 0.5),
    crop=(32, 32),
    slide: bool = True,
    overlapping: bool = True,
    output_stride: int = 4,
) -> torch.Tensor:
    """HRDAEncoderDecoder test forward before the final resize (``encode_decode`` without it):
    LR = the DAFormer head on the image resized by the small scale; HR = the head over sliding
    windows of ``crop`` (stride half of it when ``overlapping``; all windows in one batch; the
    logits pasted at window / output stride and averaged) on the image at the large scale;
    ``a = sigmoid(scale attention(LR features))``; fused = up(a)·HR + up((1 − a)·LR)."""
    lr_scale, hr_scale = sorted(scales)
    seg, att = _part(sd, "decode_head.head."), _part(sd, "decode_head.scale_attention.")
    backbone = {k: v for k, v in sd.items() if k.startswith("backbone.")}

    def head(img):
        return daformer_head_forward(seg, mit_forward(backbone, img, num_heads))

    lr_img = x if lr_scale == 1 else _resize(x, lr_scale)
    lr_feats = mit_forward(backbone, lr_img, num_heads)
    lr = daformer_head_forward(seg, lr_feats)
    hr_img = x if hr_scale == 1 else _resize(x, hr_scale)
    if slide:
        ch, cw = crop
        sh, sw = (ch // 2, cw // 2) if overlapping else (ch, cw)
        b, _, h, w = hr_img.shape
        boxes = []
        for i in range(max(h - ch + sh - 1, 0) // sh + 1):
            for j in range(max(w - cw + sw - 1, 0) // sw + 1):
                y2, x2 = min(i * sh + ch, h), min(j * sw + cw, w)
                boxes.append((max(y2 - ch, 0), y2, max(x2 - cw, 0), x2))
        logits = head(torch.cat([hr_img[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in boxes]))
        boxes = [tuple(int(v / output_stride) for v in box) for box in boxes]
        hh, ww = max(bx[1] for bx in boxes), max(bx[3] for bx in boxes)
        hr = torch.zeros(b, logits.shape[1], hh, ww)
        count = torch.zeros(b, 1, hh, ww)
        for k, (y1, y2, x1, x2) in enumerate(boxes):
            hr += F.pad(logits[k * b : (k + 1) * b], (x1, ww - x2, y1, hh - y2))
            count[:, :, y1:y2, x1:x2] += 1
        hr = hr / count
    else:
        hr = head(hr_img)
    a = torch.sigmoid(daformer_conv1_head_forward(att, lr_feats))
    ratio = hr_scale / lr_scale
    return _resize(a, ratio) * hr + _resize((1 - a) * lr, ratio)

"""HRDA and MIC(HRDA) as methods, and DUDA on them (tiny networks, 64×64 crops)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from tinyrun import HRDA_TINY, deep_update, tiny_config

import duda.methods.self_training as st
from duda.checkpoints import list_checkpoints, load_checkpoint
from duda.config import config_from_dict
from duda.engine.trainer import train
from duda.errors import ConfigError
from duda.inference import load_inference_model
from duda.methods import StepContext, build_method
from duda.models.hrda import HRDAModel, crop
from duda.models.segmentor import SegmentationModel


def _cfg(synth_root, work_dir, method, extra=None):
    return tiny_config(synth_root, work_dir, method, deep_update(copy.deepcopy(HRDA_TINY), extra or {}))


def _ce(logits, lbl, weight=None):
    """mmseg 0.x CE: logits upsampled bilinearly, pixel CE × weight, averaged over ALL pixels."""
    logits = F.interpolate(logits, size=lbl.shape[-2:], mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits, lbl, ignore_index=255, reduction="none")
    return (loss if weight is None else loss * weight).sum() / lbl.numel()


@pytest.mark.parametrize("method_name", ["hrda", "mic_hrda"])
def test_step_gradients_equal_the_hand_written_hrda_losses(synth_root, tmp_path, monkeypatch, method_name):
    """Every student loss of the step is 0.9·CE(fused) + 0.1·CE(detail crop, cropped labels)."""
    no_dropout = {"dropout": 0.0, "drop_path_rate": 0.0}  # the reference forward sees no other draws
    cfg = config_from_dict(
        _cfg(
            synth_root,
            tmp_path,
            method_name,
            {"model": {"arch": no_dropout}, "method": {"uda": {"fd_weight": 0.0}}},
        )
    )
    torch.manual_seed(0)
    method = build_method(cfg, 19, torch.device("cpu"))
    student = method.networks["student"]
    assert isinstance(student, HRDAModel) and method.mr.hr_loss_weight == 0.1
    ref = copy.deepcopy(student)
    boxes, captured = [], {}
    draw = HRDAModel.random_crop_box
    monkeypatch.setattr(HRDAModel, "random_crop_box", lambda s, *a: boxes.append(draw(s, *a)) or boxes[-1])
    for name in ("mixed_batch", "masked_batch"):

        def spy(*args, _fn=getattr(st, name), _name=name, **kw):
            captured[_name] = _fn(*args, **kw)
            return captured[_name]

        monkeypatch.setattr(st, name, spy)
    g = torch.Generator().manual_seed(1)
    batch = {
        "src_img": torch.randn(2, 3, 64, 64, generator=g),
        "src_gt": torch.randint(0, 19, (2, 64, 64), generator=g),
        "tgt_img": torch.randn(2, 3, 64, 64, generator=g),
    }
    method.train_step(batch, StepContext(step=0, generator=torch.Generator().manual_seed(3)))
    assert len(boxes) == (3 if method_name == "mic_hrda" else 2)  # one detail crop per forward
    assert all(b[1] - b[0] == 32 and b[3] - b[2] == 32 and b[0] % 8 == 0 and b[2] % 8 == 0 for b in boxes)

    def hrda_loss(img, lbl, box, weight=None):
        out = ref(img, crop_box=box)
        hr_w = None if weight is None else crop(weight, box)
        return 0.9 * _ce(out.fused, lbl, weight) + 0.1 * _ce(out.hr, crop(lbl, box), hr_w)

    mix_img, mix_lbl, mix_w, _ = captured["mixed_batch"]
    total = hrda_loss(batch["src_img"], batch["src_gt"], boxes[0]) + hrda_loss(
        mix_img, mix_lbl, boxes[1], mix_w
    )
    if method_name == "mic_hrda":
        m_img, m_lbl, m_w = captured["masked_batch"]
        total = total + hrda_loss(m_img, m_lbl, boxes[2], m_w)
    total.backward()
    got = torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])
    want = torch.cat([p.grad.flatten() for p in ref.parameters() if p.grad is not None])
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["hrda", "mic_hrda", "duda"])
def test_hrda_family_trains_evaluates_and_ships(synth_root, tmp_path, method):
    extra = {"train": {"iters": 3}}
    if method == "duda":  # DUDA on MIC(HRDA): multi-resolution T and L, S single-resolution at 0.5
        extra["method"] = {"base": "mic_hrda", "duda": {"small_input_scale": 0.5}}
    result = train(config_from_dict(_cfg(synth_root, tmp_path / method, method, extra)), progress=False)
    assert result.step == 3 and all(0 <= r["miou"] <= 1 for r in result.metrics.values())
    records = [json.loads(line) for line in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in records if r["split"] == "train")
    assert {"src", "src_hr", "fd", "mix"} <= set(first)
    shipped = load_inference_model(tmp_path / method / "model")
    ckpt = load_checkpoint(list_checkpoints(tmp_path / method / "checkpoints")[-1][1])["state"]
    if method == "duda":
        assert type(shipped.model) is SegmentationModel  # the small student stays single-resolution
        assert shipped.model.input_scale == 0.5 and shipped.spec["input_scale"] == 0.5
        large = load_inference_model(tmp_path / method, which="large").model
        assert isinstance(large, HRDAModel) and large.mr.hr_crop_size == (32, 32)
        assert set(ckpt) == {"large", "teacher", "imnet", "student"}
    else:
        assert isinstance(shipped.model, HRDAModel) and shipped.model.mr.hr_crop_size == (32, 32)
        assert "head.attention.classifier.weight" in ckpt["student"]
        for k, v in shipped.model.state_dict().items():
            assert torch.equal(v, ckpt["student"][k]), k


@pytest.mark.slow
def test_hrda_resume_is_bit_exact(synth_root, tmp_path):
    full = config_from_dict(_cfg(synth_root, tmp_path / "full", "mic_hrda"))
    train(full, progress=False)
    part = config_from_dict(_cfg(synth_root, tmp_path / "part", "mic_hrda"))
    train(part, progress=False, max_steps=2)
    train(part, resume=True, progress=False)
    a = load_checkpoint(tmp_path / "full" / "checkpoints" / "iter_0000004.pt")["state"]
    b = load_checkpoint(tmp_path / "part" / "checkpoints" / "iter_0000004.pt")["state"]
    for name in a:
        assert all(torch.equal(a[name][k], b[name][k]) for k in a[name]), name


def test_hrda_config_errors_name_the_key(synth_root, tmp_path):
    def error(extra):
        with pytest.raises(ConfigError) as info:
            config_from_dict(_cfg(synth_root, tmp_path, "hrda", extra))
        return info.value

    e = error({"method": {"hrda": {"hr_crop_size": [128, 128]}}})
    assert e.key == "method.hrda.hr_crop_size" and "exceeds data.crop_size [64, 64]" in str(e)
    e = error({"method": {"hrda": {"hr_loss_weight": 1.5}}})
    assert e.key == "method.hrda.hr_loss_weight" and "[0, 1]" in str(e)
    e = error({"data": {"crop_size": [60, 64]}})
    assert e.key == "data.crop_size" and "divisible by 8" in str(e)
    e = error({"method": {"hrda": {"feature_scale": "some"}}})
    assert "method.hrda.feature_scale" in str(e)


def test_resume_compatibility_covers_the_declared_networks(synth_root, tmp_path):
    """A checkpoint fits a run only if every network the method declares is built the same."""
    from duda.engine.checkpoint import incompatibilities

    duda = _cfg(synth_root, tmp_path, "duda", {"method": {"base": "mic_hrda"}})
    other = _cfg(
        synth_root,
        tmp_path,
        "duda",
        {
            "method": {
                "base": "mic_hrda",
                "hrda": {"attention_classwise": False},
                "duda": {"small_input_scale": 0.5},
            }
        },
    )
    bad = incompatibilities(duda, other, 19, 19)
    key = "method.hrda.attention_classwise (multi-resolution method.duda.large)"
    assert f"{key}: True in the checkpoint, False now" in bad
    assert "model input scale: 1.0 in the checkpoint, 0.5 now" in bad
    assert incompatibilities(duda, duda, 19, 19) == []

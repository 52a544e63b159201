"""One DAFormer / MIC step against a reference computation written here from the rules of the
reference code (mmseg 0.x losses), with plain torch only: every loss averaged over ALL pixels of
its batch, ignored pixels counting 0. The project's step must give the same student gradients."""

import copy

import pytest
import torch
import torch.nn.functional as F

import duda.methods.self_training as daf
from duda.config import config_from_dict
from duda.methods.base import StepContext
from duda.methods.daformer import MIC, DAFormer

ARCH = {"embed_dims": [8, 16, 16, 32], "head_channels": 16, "dropout": 0.0, "drop_path_rate": 0.0}


def _method(mic: bool, mask_mode: str = "separatetrgaug") -> DAFormer:
    cfg = config_from_dict(
        {
            "model": {"name": "daformer_mit_tiny", "arch": ARCH},
            "data": {
                "source": {"type": "gta", "root": "unused"},
                "target": {"type": "cityscapes", "root": "x"},
            },
            "method": {
                "name": "mic" if mic else "daformer",
                "uda": {
                    "fd_weight": 0.0,
                    "pseudo_threshold": 0.05,
                    "ignore_top": 2,
                    "ignore_bottom": 3,
                    "mask_mode": mask_mode,
                },
            },
            "train": {"device": "cpu"},
        }
    )
    torch.manual_seed(0)
    return (MIC if mic else DAFormer)(cfg, num_classes=19, device=torch.device("cpu"))


def _batch() -> dict:
    g = torch.Generator().manual_seed(1)
    gt = torch.randint(0, 19, (2, 32, 32), generator=g)
    gt[:, :12] = 255  # 37.5% of the source pixels are ignored
    return {
        "src_img": torch.randn(2, 3, 32, 32, generator=g),
        "src_gt": gt,
        "tgt_img": torch.randn(2, 3, 32, 32, generator=g),
    }


def _ce_all(net, img, lbl, weight=None):
    """mmseg 0.x: logits upsampled bilinearly, pixel CE, times the pixel weight, mean over ALL."""
    logits = F.interpolate(net(img), size=lbl.shape[-2:], mode="bilinear", align_corners=False)
    loss = F.cross_entropy(logits, lbl, ignore_index=255, reduction="none")
    if weight is not None:
        loss = loss * weight
    return loss.sum() / lbl.numel()


def _ce_valid(net, img, lbl):
    logits = F.interpolate(net(img), size=lbl.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, lbl, ignore_index=255)  # mean over labelled pixels only


def _grads(net) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])


@pytest.mark.parametrize("mic", [False, True], ids=["daformer", "mic"])
def test_step_gradients_equal_the_reference_computation(monkeypatch, mic):
    method = _method(mic)
    student = method.networks["student"]
    ref = copy.deepcopy(student)  # same weights before the step
    captured = {}

    def spy(name, fn):
        def wrapped(*args, **kwargs):
            captured[name] = fn(*args, **kwargs)
            return captured[name]

        monkeypatch.setattr(daf, name, wrapped)

    spy("mixed_batch", daf.mixed_batch)
    spy("masked_batch", daf.masked_batch)
    batch = _batch()
    method.train_step(batch, StepContext(step=0, generator=torch.Generator().manual_seed(3)))
    got = _grads(student)

    mix_img, mix_lbl, mix_w, _ = captured["mixed_batch"]
    losses = [_ce_all(ref, batch["src_img"], batch["src_gt"]), _ce_all(ref, mix_img, mix_lbl, mix_w)]
    if mic:
        m_img, m_lbl, m_w = captured["masked_batch"]
        losses.append(_ce_all(ref, m_img, m_lbl, m_w))
    sum(losses).backward(retain_graph=True)
    want = _grads(ref)
    assert got.shape == want.shape
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-7), (got - want).norm() / want.norm()

    # The former source averaging (labelled pixels only) moves the gradients measurably.
    ref.zero_grad()
    (_ce_valid(ref, batch["src_img"], batch["src_gt"]) + sum(losses[1:])).backward()
    before = _grads(ref)
    rel = ((before - want).norm() / want.norm()).item()
    print(f"{'MIC' if mic else 'DAFormer'} step: |g_valid - g_ref| / |g_ref| = {rel:.3f}")
    if not mic:  # (MIC's masked-image gradient dominates at random init: the change is tiny there)
        assert rel > 0.01


def test_mic_separate_masks_the_first_source_and_first_target_image_only():
    cfg = _method(True, "separate").uda
    cfg.mask_ratio = 0.0  # keep every block visible: the images pass through unchanged
    batch = _batch()
    labels = torch.randint(0, 19, (2, 32, 32))
    weight = torch.tensor([0.3, 0.7]).view(2, 1, 1).expand(2, 32, 32)
    img, lbl, wgt = daf.masked_batch(batch, labels, weight, cfg, torch.Generator().manual_seed(0))
    assert img.shape[0] == 2
    assert torch.equal(img[0], batch["src_img"][0]) and torch.equal(img[1], batch["tgt_img"][0])
    assert torch.equal(lbl[0], batch["src_gt"][0]) and torch.equal(lbl[1], labels[0])
    assert (wgt[0] == 1).all() and (wgt[1] == 0.3).all()

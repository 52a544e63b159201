import pytest
import torch
from torch import nn

from duda.engine.optim import build_optimizer, lr_factor, param_groups, set_lr


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.LayerNorm(4))
        self.head = nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))


def test_param_groups_head_mult_and_no_decay_on_backbone_norms_only():
    """mmcv matches ``head`` before ``norm``: head BatchNorm gets lr x10 AND weight decay."""
    model = Toy()
    groups = {
        g["name"]: g for g in param_groups(model, lr=1.0, weight_decay=0.01, head_lr_mult=10.0, family="mit")
    }
    assert set(groups) == {"backbone", "backbone_no_decay", "head"}
    assert groups["head"]["lr"] == 10.0 and groups["backbone"]["lr"] == 1.0
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0 and groups["head"]["weight_decay"] == 0.01
    ln = {id(p) for p in model.backbone[1].parameters()}
    assert {id(p) for p in groups["backbone_no_decay"]["params"]} == ln
    bn = {id(p) for p in model.head[1].parameters()}
    assert bn <= {id(p) for p in groups["head"]["params"]}
    n_total = sum(len(g["params"]) for g in groups.values())
    assert n_total == len(list(model.parameters()))


def test_lr_factor_warmup_then_poly():
    # warm-up from ratio to 1 linearly on top of poly(1): step 0 -> ratio * 1
    assert lr_factor(0, 100, 10, 1e-6, 1.0) == pytest.approx(1e-6)
    assert lr_factor(5, 100, 10, 0.0, 1.0) == pytest.approx(0.5 * 0.95)
    assert lr_factor(10, 100, 10, 1e-6, 1.0) == pytest.approx(0.9)
    assert lr_factor(50, 100, 0, 0.0, 1.0) == pytest.approx(0.5)
    assert lr_factor(100, 100, 10, 0.0, 1.0) == 0.0
    assert lr_factor(50, 100, 0, 0.0, 2.0) == pytest.approx(0.25)


def test_set_lr_respects_group_multiplier():
    opt = build_optimizer(Toy(), lr=2.0, weight_decay=0.0, head_lr_mult=10.0)
    set_lr(opt, 2.0, 0.5)
    lrs = sorted({g["lr"] for g in opt.param_groups})
    assert lrs == [1.0, 10.0]
    assert isinstance(opt, torch.optim.AdamW)


def test_config_changes_lists_dotted_keys():
    from duda.engine.trainer import config_changes

    old = {"train": {"iters": 10, "seed": 0}, "model": {"name": "a"}}
    new = {"train": {"iters": 20, "seed": 0}, "model": {"name": "a"}, "work_dir": "x"}
    assert config_changes(old, new) == ["train.iters: 10 -> 20", "work_dir: None -> 'x'"]


def test_span_lr_factor_restarts_once_without_warmup():
    from types import SimpleNamespace

    from duda.engine.optim import lr_factor, span_lr_factor

    o = SimpleNamespace(warmup_iters=10, warmup_ratio=1e-6, power=1.0)
    plain = SimpleNamespace(start=0, end=100, restart=None)
    restarted = SimpleNamespace(start=0, end=100, restart=(75, 0.5))
    for step in (0, 5, 40, 74):
        assert (
            span_lr_factor(restarted, step, o)
            == span_lr_factor(plain, step, o)
            == lr_factor(step, 100, 10, 1e-6, 1.0)
        )
    assert span_lr_factor(plain, 75, o) == 0.25
    assert span_lr_factor(restarted, 75, o) == 0.5  # the restart's multiple, no warm-up
    assert abs(span_lr_factor(restarted, 90, o) - 0.5 * 10 / 25) < 1e-12  # poly down to 0 at the end

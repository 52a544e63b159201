"""`duda plan`: the predicted peak GPU memory of a training step (duda.engine.memory), on tiny
configs; and activation checkpointing of the MiT encoder (model.checkpointing)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from tinyrun import tiny_config, write_config

from duda.cli import main
from duda.engine.memory import alloc_size, plan_config
from duda.errors import ConfigError
from duda.methods import build_method, config_from_dict
from duda.models import build_model
from duda.models.mit import MiTBackbone, set_checkpointing

NOWHERE = Path("/nonexistent-data")  # a plan reads no dataset: the roots need not exist


@pytest.fixture(scope="module")
def configs(tmp_path_factory) -> dict[str, Path]:
    """Tiny configs: DAFormer (student, EMA teacher, ImageNet copy) and source-only."""
    root = tmp_path_factory.mktemp("plan")
    out = {}
    for method in ("daformer", "source_only"):
        cfg = tiny_config(NOWHERE, root / "run", method)
        out[method] = write_config(cfg, root / f"{method}.yaml")
    return out


@pytest.fixture(scope="module")
def source_only_plans(configs) -> dict[str, object]:
    path = str(configs["source_only"])
    return {
        "base": plan_config(path),
        "batch4": plan_config(path, ["data.batch_size=4"]),
        "crop64": plan_config(path, ["data.crop_size=[64,64]"]),
        "checkpointing": plan_config(path, ["model.checkpointing=true"]),
    }


def test_estimate_is_positive_and_grows_with_batch_and_crop(source_only_plans):
    base = source_only_plans["base"]
    assert base.peak > 0
    assert sum(base.breakdown.values()) == base.peak
    assert base.breakdown["activations"] > 0
    assert source_only_plans["batch4"].peak > base.peak
    assert source_only_plans["batch4"].activations > 1.5 * base.activations
    assert source_only_plans["crop64"].peak > base.peak
    assert source_only_plans["crop64"].activations > 3 * base.activations
    # the weights do not depend on the data
    assert source_only_plans["crop64"].network("student").weights == base.network("student").weights


def test_weights_grads_and_adamw_are_the_exact_counts(configs):
    """Every network's parameter and buffer bytes, and for the trained one its gradients and the
    two fp32 AdamW moments, each tensor rounded to the allocator's 512 bytes, counted here from a
    real build of the same method."""
    plan = plan_config(str(configs["daformer"]))
    cfg = config_from_dict(tiny_config(NOWHERE, Path("/tmp/unused"), "daformer"))
    method = build_method(cfg, 19, torch.device("cpu"))
    assert {n.name for n in plan.networks} == set(method.networks) == {"student", "teacher", "imnet"}
    for name, net in method.networks.items():
        tensors = [*net.parameters(), *net.buffers()]
        expected_weights = sum(alloc_size(t.numel() * t.element_size()) for t in tensors)
        trained = [p for p in net.parameters() if p.requires_grad] if name == "student" else []
        expected_grads = sum(alloc_size(p.numel() * 4) for p in trained)
        got = plan.network(name)
        assert got.params == sum(p.numel() for p in net.parameters())
        assert got.weights == expected_weights, name
        assert got.grads == expected_grads, name
        assert got.adamw == 2 * expected_grads, name
    assert plan.network("student").grads > 0
    assert plan.network("teacher").activations_max > 0  # its pseudo-label forward
    assert plan.network("teacher").activations_at_peak < plan.network("student").activations_at_peak


def test_checkpointing_lowers_the_activations(source_only_plans):
    base, ckpt = source_only_plans["base"], source_only_plans["checkpointing"]
    assert ckpt.network("student").checkpointing and not base.network("student").checkpointing
    assert ckpt.network("student").activations_max < base.network("student").activations_max
    assert ckpt.peak < base.peak
    assert ckpt.network("student").weights == base.network("student").weights


def test_gpu_mem_advice_lists_a_switch_that_lowers_the_estimate(configs, source_only_plans, capsys):
    path = str(configs["source_only"])
    assert main(["plan", path, "--set", "train.bf16=true", "--gpu-mem", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "GPU budget 0.01 GiB: does NOT fit" in out
    line = next(x for x in out.splitlines() if x.startswith("activation checkpointing of the large encoder"))
    assert "model.checkpointing=true" in line
    switched_peak = float(line.split()[6])  # columns: the switch's name (6 words), peak, needs
    base_peak = float(next(x for x in out.splitlines() if x.startswith("predicted peak")).split()[-2])
    assert switched_peak < base_peak  # both in MiB: the tiny plan peaks far below 1 GiB
    assert "no combination of these switches fits 0.01 GiB" in out


def test_bad_config_path_is_a_clear_error(capsys, tmp_path):
    missing = tmp_path / "nope.yaml"
    assert main(["plan", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("duda plan: error: ") and str(missing) in err and "not found" in err
    assert main(["plan", str(missing), "--gpu-mem", "-1"]) == 2
    assert "--gpu-mem: expected a positive number" in capsys.readouterr().err


# --------------------------------------------------------------------------- checkpointing
def test_checkpointing_gives_the_same_gradients():
    """The same weights with and without activation checkpointing, in training mode (drop-path
    active): equal gradients, to the bit."""
    torch.manual_seed(0)
    plain = build_model("daformer_mit_tiny", 5)
    ckpt = copy.deepcopy(plain)
    assert set_checkpointing(ckpt, True) == 1
    x = torch.randn(2, 3, 64, 64)
    grads = []
    for model in (plain, ckpt):
        model.train()
        torch.manual_seed(1)  # the same drop-path draws
        model(x).square().mean().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert torch.equal(grads[0][name], grads[1][name]), name
    # and checkpointing did change the backward: fewer tensors saved by the forward
    assert _saved_tensors(ckpt, x) < _saved_tensors(plain, x)


def _saved_tensors(model, x) -> int:
    """How many tensors a forward of ``model`` saves for the backward pass."""
    count = [0]

    def pack(t):
        count[0] += 1
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x).sum()
    return count[0]


def test_the_key_reaches_the_model_and_the_ema_copy():
    cfg = tiny_config(
        NOWHERE, Path("/tmp/unused"), "duda", {"method": {"duda": {"large": {"checkpointing": True}}}}
    )
    method = build_method(config_from_dict(cfg), 19, torch.device("cpu"))

    def checkpointed(name: str) -> bool:
        backbones = [m for m in method.networks[name].modules() if isinstance(m, MiTBackbone)]
        assert len(backbones) == 1
        return backbones[0].checkpointing

    assert checkpointed("large") and checkpointed("teacher") and checkpointed("imnet")
    assert not checkpointed("student")  # model.checkpointing is off
    cfg["model"]["checkpointing"] = True
    method = build_method(config_from_dict(cfg), 19, torch.device("cpu"))
    assert checkpointed("student")


def test_checkpointing_of_a_resnet_is_an_error_naming_the_key():
    cfg = tiny_config(NOWHERE, Path("/tmp/unused"), "source_only")
    cfg["model"] = {"name": "deeplabv2_r_tiny", "checkpointing": True}
    with pytest.raises(
        ConfigError, match=r"model\.checkpointing: .*'deeplabv2_r_tiny' has a resnet backbone"
    ) as info:
        config_from_dict(cfg)
    assert info.value.key == "model.checkpointing"

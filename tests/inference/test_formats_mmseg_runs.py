"""Published DAFormer / MIC (mmseg) checkpoints end to end: `duda eval`, `duda convert`, DUDA.

A fake ``latest.pth`` in the reference layout (random weights, ``tests/inference/fixtures``) of a tiny
DAFormer is evaluated on the tiny synthetic benchmark, converted to a deploy folder, used as the
starting point of DUDA's large student / EMA teacher and as an extra frozen stage-2 teacher; a tiny
HRDA one is evaluated, converted and used as the starting point of DUDA on HRDA / MIC(HRDA).
"""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest
import torch
from tinyrun import HRDA_TINY, tiny_config, write_config

from duda.checkpoints import list_checkpoints, load_checkpoint
from duda.cli import main
from duda.config import config_from_dict
from duda.engine.trainer import train
from duda.errors import CheckpointError
from duda.inference import load_inference_model
from duda.methods import build_method

pytestmark = pytest.mark.slow

_spec = importlib.util.spec_from_file_location(
    "reference_fakes", Path(__file__).parent / "reference_fakes.py"
)
fakes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakes)

LARGE = {"name": "daformer_mit_tiny", "arch": {}}  # the fixture's architecture (dims 8/16/32/64, head 32)


@pytest.fixture
def published(tmp_path) -> Path:
    return fakes.save_fake(tmp_path / "published" / "latest.pth", "daformer_mit_tiny")


def _eval(cfg_path: Path, checkpoint: Path, out: Path, *extra: str) -> dict:
    assert main(["eval", str(cfg_path), "--checkpoint", str(checkpoint), "--out", str(out), *extra]) == 0
    return json.loads(out.read_text())


def test_eval_and_convert_a_published_checkpoint(synth_root, tmp_path, published, capsys):
    cfg = write_config(tiny_config(synth_root, tmp_path / "work"), tmp_path / "cfg.yaml")
    student = _eval(cfg, published, tmp_path / "model.json")
    teacher = _eval(cfg, published, tmp_path / "ema.json", "--model", "teacher")
    assert 0.0 <= student["miou"] <= 1.0 and len(student["per_class"]) == 19
    assert student["miou"] != teacher["miou"]  # model.* and ema_model.* hold different weights

    assert main(["convert", str(published), "--out", str(tmp_path / "deploy"), "--network", "ema_model"]) == 0
    out = capsys.readouterr().out
    assert "as daformer_mit_tiny" in out and "note: ASPP dilations (1, 6, 12, 18) assumed" in out
    assert "Cityscapes 19 classes are assumed" in out
    converted = _eval(cfg, tmp_path / "deploy", tmp_path / "deploy.json")
    assert converted["miou"] == teacher["miou"]
    print(f"mIoU model.* {student['miou']:.4f}, ema_model.* {teacher['miou']:.4f}, "
          f"converted ema_model.* {converted['miou']:.4f}")  # fmt: skip


def test_eval_and_convert_a_published_hrda_checkpoint(synth_root, tmp_path, capsys):
    hrda = tmp_path / "hrda" / "latest.pth"
    hrda.parent.mkdir()
    torch.save(fakes.fake_hrda_checkpoint(config=fakes.hrda_config_text()), hrda)
    cfg = write_config(tiny_config(synth_root, tmp_path / "work"), tmp_path / "cfg.yaml")
    student = _eval(cfg, hrda, tmp_path / "model.json")  # multi-resolution, 32x32 detail windows
    teacher = _eval(cfg, hrda.parent, tmp_path / "ema.json", "--model", "teacher")
    assert 0.0 <= student["miou"] <= 1.0 and student["miou"] != teacher["miou"]

    assert main(["convert", str(hrda), "--out", str(tmp_path / "deploy"), "--network", "teacher"]) == 0
    out = capsys.readouterr().out
    assert "HRDAHead over DAFormerHead" in out and "as daformer_mit_tiny" in out
    assert "note: HRDA settings read from meta['config']" in out
    info = json.loads((tmp_path / "deploy" / "model.json").read_text())
    assert info["hrda"]["hr_crop_size"] == [32, 32] and info["resize"] == [2048, 1024]
    converted = _eval(cfg, tmp_path / "deploy", tmp_path / "deploy.json")
    assert converted["miou"] == teacher["miou"]


def _hrda_duda_cfg(synth_root, work: Path, base: str, large_init: Path, attention_channels=16) -> dict:
    extra = copy.deepcopy(HRDA_TINY)
    extra["method"].update({"base": base, "duda": {"large_init": str(large_init)}})
    extra["method"]["hrda"]["attention_channels"] = attention_channels
    cfg = tiny_config(synth_root, work, "duda", extra)
    cfg["method"]["duda"]["large"] = dict(LARGE)
    return cfg


@pytest.mark.parametrize("base", ["hrda", "mic_hrda"])
def test_duda_on_hrda_starts_from_a_published_hrda_checkpoint(synth_root, tmp_path, base):
    from duda.models.hrda import HRDAModel

    path = tmp_path / "published" / "latest.pth"
    path.parent.mkdir()
    torch.save(fakes.fake_hrda_checkpoint(), path)  # no config text: the run's HRDA settings apply
    direct = {w: load_inference_model(path, which=w).model.state_dict() for w in ("student", "teacher")}
    method = build_method(config_from_dict(_hrda_duda_cfg(synth_root, tmp_path / "a", base, path)), 19,
                          torch.device("cpu"))  # fmt: skip
    large = method.networks["large"]
    assert isinstance(large, HRDAModel) and large.mr.hr_crop_size == (32, 32)
    for net, which in (("large", "student"), ("teacher", "teacher")):
        state = method.networks[net].state_dict()
        assert state.keys() == direct[which].keys()
        assert all(torch.equal(state[k], direct[which][k]) for k in state), net

    wrong = _hrda_duda_cfg(synth_root, tmp_path / "b", base, path, attention_channels=None)
    shapes = r"head\.attention\.classifier\.weight \(19, 16, 1, 1\) vs \(19, 32, 1, 1\)"
    with pytest.raises(CheckpointError, match=r"large_init=.*\[model\].*HRDA.*shape mismatches.*" + shapes):
        build_method(config_from_dict(wrong), 19, torch.device("cpu"))


def _duda_cfg(synth_root, work: Path, duda: dict) -> dict:
    cfg = tiny_config(synth_root, work, "duda")
    cfg["method"]["duda"].update({"large": dict(LARGE), **duda})
    return cfg


def test_duda_starts_from_a_published_checkpoint_and_uses_it_as_teacher(synth_root, tmp_path, published):
    ckpt = fakes.fake_checkpoint("daformer_mit_tiny")  # same seeds as the saved file
    direct = {
        which: load_inference_model(published, which=which).model.state_dict()
        for which in ("student", "teacher")
    }
    cfg = config_from_dict(
        _duda_cfg(synth_root, tmp_path / "run", {"large_init": str(published.parent),
                                                  "teachers": [{"checkpoint": str(published)}]})
    )  # fmt: skip
    method = build_method(cfg, 19, torch.device("cpu"))
    for net, which in (("large", "student"), ("teacher", "teacher")):
        state = method.networks[net].state_dict()
        assert all(torch.equal(state[k], direct[which][k]) for k in state), net
    assert torch.equal(
        method.networks["teacher"].state_dict()["head.classifier.weight"],
        ckpt["state_dict"]["ema_model.decode_head.conv_seg.weight"],
    )
    (extra, weight), = method.extra_teachers  # fmt: skip
    assert weight == 1.0 and torch.equal(
        extra.state_dict()["head.classifier.weight"], direct["teacher"]["head.classifier.weight"]
    )

    result = train(cfg, progress=False)
    assert result.step == 4 and set(result.metrics) == {"student", "teacher", "large"}
    records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r["split"] == "inconsistency" for r in records)  # stage 2 ran with the fused teachers
    final = load_checkpoint(list_checkpoints(tmp_path / "run" / "checkpoints")[-1][1])
    assert not torch.equal(
        final["state"]["large"]["head.classifier.weight"], direct["student"]["head.classifier.weight"]
    )
    print({k: round(v["miou"], 4) for k, v in result.metrics.items()})


def test_duda_large_init_from_a_deploy_folder_and_mismatches(synth_root, tmp_path, published):
    from duda.inference.formats.mmseg import convert_reference_checkpoint

    convert_reference_checkpoint(published, tmp_path / "deploy")
    cfg = config_from_dict(_duda_cfg(synth_root, tmp_path / "a", {"large_init": str(tmp_path / "deploy")}))
    method = build_method(cfg, 19, torch.device("cpu"))
    large, teacher = method.networks["large"].state_dict(), method.networks["teacher"].state_dict()
    deployed = load_inference_model(tmp_path / "deploy").model.state_dict()
    assert all(torch.equal(large[k], deployed[k]) and torch.equal(teacher[k], deployed[k]) for k in large)

    wrong = _duda_cfg(synth_root, tmp_path / "b", {"large_init": str(published)})
    wrong["method"]["duda"]["large"]["arch"] = {"embed_dims": [8, 16, 32, 32]}
    with pytest.raises(CheckpointError, match=r"large_init=.*latest.pth \[model\].*daformer_mit_tiny.*shape"):
        build_method(config_from_dict(wrong), 19, torch.device("cpu"))
    segformer = _duda_cfg(synth_root, tmp_path / "c", {"large_init": str(published)})
    segformer["method"]["duda"]["large"] = {"name": "segformer_mit_tiny", "arch": {}}
    with pytest.raises(CheckpointError, match="model 'segformer_mit_tiny' is mit \\+ segformer"):
        build_method(config_from_dict(segformer), 19, torch.device("cpu"))

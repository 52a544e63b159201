"""The method layer's extension point: registry, outside methods, declared networks."""

from __future__ import annotations

import json

import pytest
from tinyrun import tiny_config, write_config

from duda.cli import main
from duda.errors import ConfigError
from duda.methods import (
    Method,
    config_from_dict,
    method_class,
    method_names,
    network_specs,
    register_method,
    registry,
)


def test_builtin_methods_are_registered_by_name():
    names = set(method_names())
    assert {"source_only", "daformer", "mic", "hrda", "mic_hrda", "duda"} <= names
    for name in names:
        assert method_class(name).name == name


def test_unknown_method_names_the_known_ones_and_how_to_add_one(synth_root, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown method 'nope'.*daformer.*--import") as info:
        config_from_dict(tiny_config(synth_root, tmp_path, "nope"))
    assert info.value.key == "method.name"


def test_a_name_cannot_be_taken_twice():
    class Other(Method):
        name = "daformer"

    with pytest.raises(ValueError, match="taken by duda.methods.daformer.DAFormer"):
        register_method(Other)
    with pytest.raises(TypeError, match="not a subclass"):
        register_method(int)


def test_network_specs_declare_roles_and_spans(synth_root, tmp_path):
    cfg = config_from_dict(tiny_config(synth_root, tmp_path, "duda", {"method": {"base": "mic"}}))
    specs = network_specs(cfg)
    assert list(specs) == ["large", "teacher", "imnet", "student"]
    assert (specs["large"].role, specs["large"].span) == ("train", (0, 2))
    assert (specs["teacher"].role, specs["teacher"].source) == ("ema", "large")
    assert specs["imnet"].role == "frozen" and specs["student"].span == (0, 4)
    assert specs["large"].config.arch["embed_dims"] == [8, 16, 32, 32]


def test_duda_refuses_a_base_that_is_not_self_training(synth_root, tmp_path):
    with pytest.raises(ConfigError, match="method.base: 'source_only' is not a self-training method"):
        config_from_dict(tiny_config(synth_root, tmp_path, "duda", {"method": {"base": "source_only"}}))


def test_options_belong_to_methods_that_declare_them(synth_root, tmp_path):
    cfg = tiny_config(synth_root, tmp_path, "daformer", {"method": {"options": {"x": 1}}})
    with pytest.raises(ConfigError, match="method 'daformer' takes no options"):
        config_from_dict(cfg)


@pytest.mark.slow
def test_a_method_from_an_outside_module_trains_through_duda_train(synth_root, tmp_path, capsys):
    """One file (tests/methods/outside_method.py) + one config: train, resume, evaluate, ship."""
    cfg = tiny_config(
        synth_root,
        tmp_path / "run",
        "minent",
        {"method": {"options": {"entropy_weight": 0.01}}, "train": {"iters": 3}},
    )
    path = write_config(cfg, tmp_path / "minent.yaml")
    assert main(["--import", "outside_method", "config", "methods"]) == 0  # listed once imported
    assert "minent" in capsys.readouterr().out
    from duda.engine.trainer import train

    assert train(config_from_dict(cfg), progress=False, max_steps=2).step == 2  # "killed" at step 2
    assert main(["--import", "outside_method", "train", str(path), "--resume"]) == 0
    run = tmp_path / "run"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in records if r["split"] == "train"]
    assert [r["step"] for r in train_recs] == [1, 2, 3] and all(r["entropy"] > 0 for r in train_recs)
    assert json.loads((run / "eval.json").read_text())["student"]["miou"] >= 0
    from duda.inference import load_inference_model

    assert load_inference_model(run / "model").model_name == "daformer_mit_tiny"
    assert load_inference_model(run, which="student").num_classes == 19  # from its checkpoint
    # the method's own options are typed and the errors name the key
    bad = write_config(
        {**cfg, "method": {"name": "minent", "options": {"entropy_wieght": 1}}}, tmp_path / "bad.yaml"
    )
    assert main(["--import", "outside_method", "train", str(bad)]) == 2
    assert "method.options.entropy_wieght" in capsys.readouterr().err


def test_import_errors_name_the_module(tmp_path, capsys):
    assert main(["--import", "no_such_module_xyz", "config", "methods"]) == 2
    assert "--import no_such_module_xyz: cannot import it" in capsys.readouterr().err
    assert main(["--import", str(tmp_path / "missing.py"), "config", "methods"]) == 2
    assert "no such file" in capsys.readouterr().err


def test_a_py_file_and_an_entry_point_register_too(tmp_path, monkeypatch, capsys):
    plugin = tmp_path / "file_method.py"
    plugin.write_text(
        "from duda.methods import register_method\n"
        "from duda.methods.daformer import DAFormer\n\n"
        "@register_method\nclass FileMethod(DAFormer):\n    name = 'file_method'\n"
    )
    assert main(["--import", str(plugin), "config", "methods"]) == 0
    assert "file_method" in capsys.readouterr().out

    class FakeEntryPoint:
        name, value = "ep_method", "ep_pkg:EPMethod"

        def load(self):
            class EPMethod(method_class("daformer")):
                name = "ep_method"

            return register_method(EPMethod)

    monkeypatch.setattr(registry, "_loaded", False)
    monkeypatch.setattr("importlib.metadata.entry_points", lambda group: [FakeEntryPoint()])
    assert "ep_method" in method_names()
    for name in ("ep_method", "file_method"):
        registry._REGISTRY.pop(name, None)


def test_the_engine_and_the_loader_name_no_method():
    """The loop, checkpoints and inference loading learn about methods only from their
    declarations: no method name or method config section is spelled out there."""
    import re
    from pathlib import Path

    import duda

    root = Path(duda.__file__).parent
    names = "|".join(method_names())
    pattern = re.compile(rf"""["'](?:{names})["']|\.method\.(?:uda|duda|hrda|options)\b""")
    for path in [*sorted((root / "engine").glob("*.py")), root / "loading.py"]:
        hits = [line.strip() for line in path.read_text().splitlines() if pattern.search(line)]
        assert not hits, f"{path.name}: {hits}"


def test_a_method_reads_only_registered_sections():
    class Sectioned(Method):
        name = "sectioned"
        sections = ("uda", "nowhere")

    with pytest.raises(ValueError, match=r"Sectioned.sections names \['nowhere'\].*register_section"):
        register_method(Sectioned)


def test_a_method_brings_its_own_config_section(synth_root, tmp_path, monkeypatch):
    from dataclasses import dataclass

    from duda.config import MethodConfig
    from duda.config_base import to_dict
    from duda.methods import register_section

    @dataclass
    class MineConfig:
        weight: float = 0.5  # a loss weight

    monkeypatch.setattr(MethodConfig, "_extensions", dict(MethodConfig._extensions))  # undone after
    register_section("mine", MineConfig)
    cfg = config_from_dict(tiny_config(synth_root, tmp_path, "daformer", {"method": {"mine": {"weight": 2}}}))
    assert cfg.method.mine == MineConfig(2.0) and to_dict(cfg.method)["mine"] == {"weight": 2.0}
    assert list(to_dict(cfg.method))[-2:] == ["mine", "options"]  # registered sections precede options
    assert MethodConfig().mine == MineConfig()
    with pytest.raises(ConfigError, match=r"method.mine.weight: expected a number, got 'x'"):
        config_from_dict(tiny_config(synth_root, tmp_path, "daformer", {"method": {"mine": {"weight": "x"}}}))
    with pytest.raises(ValueError, match="already declared"):
        MethodConfig.extend("mine", MineConfig, MineConfig, owner="someone.else")


def test_builtin_sections_are_declared_beside_the_methods():
    from duda.config import MethodConfig
    from duda.methods.sections import DUDAConfig, HRDAConfig, UDAConfig, section_names

    assert section_names() == ["base", "uda", "duda", "hrda"]
    method = MethodConfig()
    assert (method.name, method.base) == ("daformer", "daformer")
    assert isinstance(method.uda, UDAConfig) and isinstance(method.duda, DUDAConfig)
    assert isinstance(method.hrda, HRDAConfig)
    for name in method_names():
        assert set(method_class(name).sections) <= {*section_names(), "options"}

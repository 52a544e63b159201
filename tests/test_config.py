"""Composed configs (``_base_``) and the paper configs' resolved values.

``tests/data/resolved_configs.json`` holds ``to_dict(load_config(...))`` of each of the 64 paper
configs as they were before they were rewritten into ``configs/_base_`` files plus short leaves;
every leaf must still resolve to exactly that. Regenerate it (only when a config is meant to change)
with ``python tests/test_config.py --write-snapshot``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from duda.cli import main
from duda.config import to_dict
from duda.config_base import compose_yaml, yaml_load
from duda.errors import ConfigError
from duda.methods import config_from_dict, load_config, show_config

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ("gta2cs", "syn2cs", "cs2acdc", "cs2darkzurich")
SNAPSHOT = ROOT / "tests" / "data" / "resolved_configs.json"


def paper_configs() -> dict[str, Path]:
    return {f"{b}/{p.stem}": p for b in BENCHMARKS for p in sorted((ROOT / "configs" / b).glob("*.yaml"))}


def write_snapshot() -> None:
    resolved = {name: to_dict(load_config(str(path))) for name, path in paper_configs().items()}
    lines = [f"  {json.dumps(name)}: {json.dumps(cfg, sort_keys=True)}" for name, cfg in resolved.items()]
    SNAPSHOT.write_text(
        "{\n"
        '  "_about": "to_dict(load_config(path)) of configs/<benchmark>/<name>.yaml; written by '
        'tests/test_config.py --write-snapshot",\n' + ",\n".join(lines) + "\n}\n",
        encoding="utf-8",
    )


def _snapshot() -> dict:
    data = json.loads(SNAPSHOT.read_text(encoding="utf-8"))
    data.pop("_about")
    return data


def test_snapshot_covers_every_paper_config():
    assert sorted(_snapshot()) == sorted(paper_configs())
    assert len(paper_configs()) == 64  # 13 per benchmark before HRDA, + hrda, mic_hrda, duda_mic_hrda


@pytest.mark.parametrize("name", sorted(paper_configs()))
def test_paper_config_resolves_to_snapshot(name):
    assert to_dict(load_config(str(paper_configs()[name]))) == _snapshot()[name]


# --------------------------------------------------------------------------- composition

MINIMAL = (
    "model: {name: daformer_mit_tiny}\ndata: {source: {type: gta, root: src}}\nmethod: {name: source_only}\n"
)


def write(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_bases_merge_in_order_then_the_file_itself(tmp_path):
    write(tmp_path / "a.yaml", MINIMAL + "train: {iters: 1, seed: 1}\noptim: {lr: 0.1}\n")
    write(tmp_path / "b.yaml", "train: {iters: 2}\n")
    leaf = write(tmp_path / "leaf.yaml", "_base_: [a.yaml, b.yaml]\noptim: {lr: 0.3}\n")
    cfg = load_config(leaf)
    assert (cfg.train.iters, cfg.train.seed, cfg.optim.lr) == (2, 1, 0.3)  # b over a, leaf over both
    write(tmp_path / "c.yaml", "_base_: [b.yaml, a.yaml]\n")
    assert load_config(str(tmp_path / "c.yaml")).train.iters == 1  # order matters
    write(tmp_path / "single.yaml", "_base_: a.yaml\n")  # one base as a plain string
    assert load_config(str(tmp_path / "single.yaml")).train.iters == 1


def test_mappings_merge_key_by_key_and_lists_replace(tmp_path):
    write(
        tmp_path / "base.yaml",
        MINIMAL.replace(
            "{name: daformer_mit_tiny}",
            "{name: daformer_mit_tiny, arch: {head_channels: 16, depths: [1, 1, 1, 1]}}",
        )
        + "data:\n  source: {type: acdc, root: acdc, conditions: [fog, night], resize: [960, 540]}\n"
        "  crop_size: [512, 512]\n",
    )
    leaf = write(
        tmp_path / "leaf.yaml",
        "_base_: base.yaml\ndata:\n  source: {root: other, conditions: [rain]}\n  crop_size: [256, 128]\n"
        "model: {arch: {head_channels: 8}}\n",
    )
    cfg = load_config(leaf)
    src = cfg.data.source
    assert (src.type, src.root, src.resize) == ("acdc", "other", (960, 540))  # merged key by key
    assert src.conditions == ["rain"] and cfg.data.crop_size == (256, 128)  # lists replaced, not joined
    assert cfg.model.arch == {"head_channels": 8, "depths": [1, 1, 1, 1]}
    # a non-mapping value (null) replaces a whole mapping, and a mapping replaces a non-mapping
    write(tmp_path / "no_target.yaml", "_base_: leaf.yaml\ndata: {target: null}\nmodel: {arch: {}}\n")
    assert load_config(str(tmp_path / "no_target.yaml")).data.target is None
    assert load_config(str(tmp_path / "no_target.yaml")).model.arch["head_channels"] == 8  # {} merges nothing


def test_base_paths_are_relative_to_the_file_naming_them_and_bases_nest(tmp_path, monkeypatch):
    write(tmp_path / "shared" / "root.yaml", MINIMAL + "train: {iters: 5, seed: 3}\n")
    write(tmp_path / "shared" / "methods" / "mid.yaml", "_base_: ../root.yaml\ntrain: {iters: 6}\n")
    leaf = write(tmp_path / "bench" / "run.yaml", "_base_: [../shared/methods/mid.yaml]\nwork_dir: w\n")
    monkeypatch.chdir(tmp_path / "shared")  # not where any of the files is
    cfg = load_config(os.path.relpath(leaf))
    assert (cfg.train.iters, cfg.train.seed, cfg.work_dir) == (6, 3, "w")


def test_a_cycle_is_an_error_naming_the_files(tmp_path):
    write(tmp_path / "a.yaml", MINIMAL + "_base_: b.yaml\n")
    write(tmp_path / "b.yaml", "_base_: [sub/c.yaml]\n")
    write(tmp_path / "sub" / "c.yaml", "_base_: ../a.yaml\n")
    with pytest.raises(ConfigError, match=r"cycle: .*a\.yaml -> .*b\.yaml -> .*c\.yaml -> .*a\.yaml") as exc:
        load_config(str(tmp_path / "a.yaml"))
    assert str(exc.value).startswith(str(tmp_path / "sub" / "c.yaml"))  # the file closing the loop
    write(tmp_path / "self.yaml", "_base_: self.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(tmp_path / "self.yaml"))


def test_missing_or_malformed_base_names_the_files(tmp_path):
    leaf = write(tmp_path / "leaf.yaml", "_base_: [nowhere/base.yaml]\n")
    with pytest.raises(
        ConfigError, match=r"leaf\.yaml: _base_ file 'nowhere/base\.yaml' not found \(looked for "
    ):
        load_config(leaf)
    write(tmp_path / "bad.yaml", "_base_: [5]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: _base_: expected a file name or a list of file names"):
        load_config(str(tmp_path / "bad.yaml"))
    write(tmp_path / "broken.yaml", "train: [\n")
    write(tmp_path / "uses_broken.yaml", "_base_: broken.yaml\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml: not valid YAML"):
        load_config(str(tmp_path / "uses_broken.yaml"))


def test_a_wrong_value_in_a_base_is_reported_with_that_file(tmp_path):
    base = write(tmp_path / "base" / "b.yaml", MINIMAL + "train: {iters: many}\n")
    leaf = write(tmp_path / "leaf.yaml", "_base_: base/b.yaml\n")
    with pytest.raises(ConfigError, match=r"train\.iters: expected an integer, got 'many'") as exc:
        load_config(leaf)
    assert str(exc.value).startswith(f"{base} (a base of {leaf}): ")
    write(
        tmp_path / "fixed.yaml",
        "_base_: base/b.yaml\ntrain: {iters: 10}\ndata: {source: {resize: [1, 2, 3]}}\n",
    )
    with pytest.raises(ConfigError, match=r"fixed\.yaml: data\.source\.resize: expected 2 values"):
        load_config(str(tmp_path / "fixed.yaml"))
    write(tmp_path / "typo.yaml", "_base_: fixed.yaml\ndata: {source: {resize: null}}\ntrain: {itres: 3}\n")
    with pytest.raises(ConfigError, match=r"^\S*typo\.yaml: unknown key 'train\.itres'"):
        load_config(str(tmp_path / "typo.yaml"))
    # a section that is wrong as a whole: the file that wrote its keys
    write(tmp_path / "base" / "no_root.yaml", "data: {target: {type: cityscapes}}\n")
    write(tmp_path / "no_root.yaml", "_base_: [base/b.yaml, base/no_root.yaml]\ntrain: {iters: 3}\n")
    with pytest.raises(
        ConfigError, match=r"no_root\.yaml \(a base of .*: missing required key 'data\.target\.root'"
    ):
        load_config(str(tmp_path / "no_root.yaml"))
    write(tmp_path / "split.yaml", "_base_: no_root.yaml\ndata: {target: {split: val}}\n")
    with pytest.raises(
        ConfigError, match=r"split\.yaml \(the section's keys come from .*no_root\.yaml, .*split\.yaml\)"
    ):
        load_config(str(tmp_path / "split.yaml"))


def test_overrides_apply_after_the_merge(tmp_path):
    write(tmp_path / "base.yaml", MINIMAL + "train: {iters: 7, seed: 2}\n")
    leaf = write(tmp_path / "leaf.yaml", "_base_: base.yaml\ntrain: {iters: 8}\n")
    cfg = load_config(leaf, ["train.iters=9", "train.seed=4"])
    assert (cfg.train.iters, cfg.train.seed) == (9, 4)
    with pytest.raises(
        ConfigError, match=r"leaf\.yaml \(value from --set\): train\.seed: expected an integer"
    ):
        load_config(leaf, ["train.seed=x"])


def test_model_arch_is_checked_at_load_with_the_dotted_key(tmp_path):
    base = write(tmp_path / "base.yaml", MINIMAL.replace("tiny}", "tiny, arch: {depths: '1111'}}"))
    leaf = write(tmp_path / "leaf.yaml", "_base_: base.yaml\n")
    with pytest.raises(
        ConfigError, match=r"model\.arch\.depths: expected a list of integers, got '1111'"
    ) as exc:
        load_config(leaf)
    assert str(exc.value).startswith(f"{base} (a base of {leaf})") and "daformer_mit_tiny" in str(exc.value)
    with pytest.raises(ConfigError, match=r"unknown key 'model\.arch\.width'; allowed here: .*embed_dims"):
        load_config(leaf, ["model.arch={width: 4}"])
    with pytest.raises(ConfigError, match=r"method\.duda\.large\.arch\.head_channels: expected a positive"):
        load_config(
            leaf, ["model.arch={}", "method.duda.large={name: daformer_mit_tiny, arch: {head_channels: 0}}"]
        )
    assert load_config(leaf, ["model.arch={depths: [1, 2, 1, 1]}"]).model.arch == {"depths": [1, 2, 1, 1]}


def test_compose_records_which_file_set_each_key(tmp_path):
    write(tmp_path / "base.yaml", MINIMAL + "train: {iters: 7, seed: 2}\n")
    leaf = write(tmp_path / "leaf.yaml", "_base_: base.yaml\ntrain: {iters: 8}\n")
    composed = compose_yaml(leaf)
    assert composed.source_of("train.iters") == leaf
    assert composed.source_of("train.seed") == str(tmp_path / "base.yaml")
    assert composed.source_of("data.source.type") == str(tmp_path / "base.yaml")
    assert composed.source_of("data.source.split") is None and "_base_" not in composed.data


def test_config_show_annotates_every_key_with_its_source(tmp_path, capsys):
    base = write(tmp_path / "base.yaml", MINIMAL + "train: {iters: 7, seed: 2}  # base\n")
    leaf = write(tmp_path / "leaf.yaml", "_base_: base.yaml\ntrain: {iters: 8}\n")
    text = show_config(leaf, ["optim.lr=0.5"])
    lines = {line.split(":")[0].strip(): line for line in text.splitlines() if not line.startswith("#")}
    assert lines["iters"].endswith(f"# {leaf} | total iterations (DUDA: both stages)")
    assert lines["seed"].rstrip().endswith(f"# {base}")
    assert lines["lr"].endswith("# --set | AdamW base learning rate (backbone)")
    assert lines["eval_every"].endswith("# default | iterations; 0 = only at the end")
    for line in text.splitlines():  # every key line says where its value came from
        if not line.startswith("#") and not line.split("#")[0].rstrip().endswith(":"):  # not a section
            assert f"# {leaf}" in line or f"# {base}" in line or "# --set" in line or "# default" in line, (
                line
            )
    # the output is a config: it loads back to the same values
    assert to_dict(config_from_dict(yaml_load(text))) == to_dict(load_config(leaf, ["optim.lr=0.5"]))

    assert main(["config", "show", leaf, "--set", "train.seed=5"]) == 0
    out = capsys.readouterr().out
    assert "seed: 5" in out and "# --set" in out
    assert main(["config", "show", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err


def test_paper_config_show_names_the_base_files(monkeypatch):
    path = "configs/cs2acdc/mic_mitb0.yaml"
    monkeypatch.chdir(ROOT)
    text = show_config(path)
    assert "mask_mode: separate" in text and "# configs/_base_/methods/mic_adverse_targets.yaml" in text
    assert "lr: 6.0e-05" in text and "# configs/_base_/schedules/adamw_poly_40k.yaml" in text
    assert "work_dir: runs/cs2acdc/mic_mitb0" in text and f"# {path}" in text


def test_a_five_line_leaf_resolves_to_the_full_paper_config(tmp_path):
    """The issue's example: a benchmark run written as a few lines over the shared base files."""
    bases = os.path.relpath(ROOT / "configs" / "_base_", tmp_path)
    text = (
        "# GTA5 → Cityscapes, DAFormer with MiT-B5\n"
        f"_base_: [{bases}/datasets/gta2cs.yaml, {bases}/methods/daformer.yaml, "
        f"{bases}/models/daformer_mitb5.yaml]\n"
        "work_dir: runs/gta2cs/daformer_mitb5  # checkpoints, logs, final model\n"
        "train:\n"
        "  seed: 0                           # report the mean of seeds 0, 1, 2\n"
    )
    assert len(text.splitlines()) == 5
    leaf = write(tmp_path / "daformer.yaml", text)
    assert to_dict(load_config(leaf)) == _snapshot()["gta2cs/daformer_mitb5"]
    changed = to_dict(load_config(leaf, ["train.seed=1"]))
    assert changed["train"]["seed"] == 1 and changed["optim"] == _snapshot()["gta2cs/daformer_mitb5"]["optim"]


if __name__ == "__main__":
    if sys.argv[1:] != ["--write-snapshot"]:
        sys.exit(f"usage: python {sys.argv[0]} --write-snapshot")
    write_snapshot()
    print(f"wrote {SNAPSHOT}")


def test_shipped_configs_resolve_by_name_from_any_folder(tmp_path, monkeypatch, capsys):
    from pathlib import Path

    from duda.cli import main
    from duda.config import packaged_configs_dir, resolve_config_path
    from duda.config_base import to_dict
    from duda.methods import load_config

    repo_file = Path(__file__).resolve().parents[1] / "configs" / "gta2cs" / "duda_mitb5_mitb0.yaml"
    expected = to_dict(load_config(str(repo_file)))
    monkeypatch.chdir(tmp_path)  # no configs/ here
    for name in (
        "configs/gta2cs/duda_mitb5_mitb0.yaml",
        "gta2cs/duda_mitb5_mitb0.yaml",
        "gta2cs/duda_mitb5_mitb0",
    ):
        path = resolve_config_path(name)
        assert Path(path).is_relative_to(packaged_configs_dir())
        assert to_dict(load_config(name)) == expected
    with pytest.raises(ConfigError, match="gta2cs/nope.yaml: no such config file"):
        load_config("gta2cs/nope.yaml")
    assert main(["config", "list"]) == 0
    listed = [line for line in capsys.readouterr().out.splitlines() if not line.startswith("(")]
    assert "gta2cs/duda_mitb5_mitb0" in listed and not any(x.startswith("_base_") for x in listed)
    assert len(listed) == 64


def test_configs_are_only_built_with_the_methods_checks_registered():
    """duda.config sits below the methods: without them (a fresh interpreter that imported only
    duda.config) building a config is an error naming what to import, never an unchecked config;
    duda.load_config registers them itself."""
    import subprocess

    leaf = str(ROOT / "configs" / "gta2cs" / "duda_mitb5_mitb0.yaml")
    bare = f"import duda.config as c; c.load_config({leaf!r})"
    done = subprocess.run([sys.executable, "-c", bare], capture_output=True, text=True)
    assert done.returncode != 0 and "import duda.methods first" in done.stderr
    public = f"import duda; print(duda.load_config({leaf!r}).method.duda.stage1_iters)"
    done = subprocess.run([sys.executable, "-c", public], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(load_config(leaf).method.duda.stage1_iters)

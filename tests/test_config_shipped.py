"""Every shipped config loads, validates and names models that exist; every key is annotated."""

from pathlib import Path

import pytest

from duda.errors import ConfigError
from duda.methods import load_config
from duda.models import list_models

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(
    {p.resolve() for p in ROOT.glob("src/duda/configs/**/*.yaml") if "_base_" not in p.parts}
    | set(ROOT.glob("src/duda/demo/configs/*.yaml"))
)
BASES = sorted(ROOT.glob("src/duda/configs/_base_/**/*.yaml"))  # configs/ links here


def test_all_benchmarks_and_methods_present():
    names = {(p.parent.name, p.stem) for p in CONFIGS}
    for bench in ("gta2cs", "syn2cs", "cs2acdc", "cs2darkzurich"):
        for stem in (
            "source_only_mitb5",
            "daformer_mitb5",
            "mic_mitb5",
            "duda_mitb5_mitb0",
            "duda_r101_mitb0",
            "hrda_mitb5",
            "mic_hrda_mitb5",
            "duda_mic_hrda_mitb5_mitb0",
        ):
            assert (bench, stem) in names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_config_loads(path):
    cfg = load_config(str(path))
    assert cfg.model.name in list_models()
    if cfg.method.name == "duda":
        assert cfg.method.duda.large.name in list_models()
        assert cfg.method.duda.stage1_iters < cfg.train.iters
    # every key carries a comment or is self-explanatory: at least most lines are annotated
    lines = [l for l in path.read_text().splitlines() if ":" in l and not l.strip().startswith("#")]
    assert sum("#" in l for l in lines) >= len(lines) // 2


@pytest.mark.parametrize("path", BASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_every_value_in_a_base_file_is_annotated(path):
    """The paper configs' keys are explained where they are set: in the base files."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "- ")):
            continue
        value = line.split(":", 1)[1].split("#", 1)[0].strip()
        if value:  # a key with a value (section headers may go without)
            assert "#" in line.split(":", 1)[1], f"{path.name}: no comment on {line.strip()!r}"


def test_unknown_key_and_wrong_type_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "data:\n  source: {type: gta, root: x}\n  target: {type: cityscapes, root: y}\ntrain: {itres: 5}\n"
    )
    with pytest.raises(ConfigError, match="train.itres"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="train.iters"):
        load_config(str(CONFIGS[0]), ["train.iters=many"])
    with pytest.raises(ConfigError, match="data.target"):
        load_config(None, ["data.source={type: gta, root: x}", "method.name=daformer"])


PAPER = [p for p in CONFIGS if p.parent.name in ("gta2cs", "syn2cs", "cs2acdc", "cs2darkzurich")]


@pytest.mark.parametrize("path", PAPER, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_pseudo_label_ignore_rows_follow_the_reference_runs(path):
    """DAFormer's runs (experiments.py: plcrop=True for every benchmark, ACDC and Dark Zurich
    included) zero the top 15 / bottom 120 rows; MIC's keep them only for Cityscapes targets.
    HRDA's (and MIC(HRDA)'s) zero no rows: on Cityscapes targets they zero margins of the full
    2048×1024 image instead (crop_pseudo_margins [30, 240, 30, 30]); on ACDC / Dark Zurich none."""
    cfg = load_config(str(path))
    if cfg.method.name == "source_only":
        return
    base = cfg.method.base if cfg.method.name == "duda" else cfg.method.name
    if base in ("hrda", "mic_hrda"):
        assert (cfg.method.uda.ignore_top, cfg.method.uda.ignore_bottom) == (0, 0)
        cityscapes_target = path.parent.name in ("gta2cs", "syn2cs")
        assert cfg.data.target_valid_margins == ((30, 240, 30, 30) if cityscapes_target else None)
        assert cfg.data.crop_size == (1024, 1024) and cfg.data.rcs.min_crop_ratio == 2.0
        assert (cfg.train.eval_mode, cfg.train.eval_crop) == ("slide", (1024, 1024))
        return
    mic_based = cfg.method.name == "mic" or (cfg.method.name == "duda" and cfg.method.base == "mic")
    cityscapes_target = path.parent.name in ("gta2cs", "syn2cs")
    expected = (15, 120) if (cityscapes_target or not mic_based) else (0, 0)
    assert (cfg.method.uda.ignore_top, cfg.method.uda.ignore_bottom) == expected

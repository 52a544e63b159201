"""Tests of the procedural benchmark generator (duda.data.synth) and `duda synth`."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from duda.cli import main
from duda.data.synth import (
    GENERATOR_VERSION,
    generate_benchmark,
    generate_sample,
    meta_matches,
    render_sheet,
    train_to_label_id,
    write_split,
)
from duda.errors import DatasetError

SMALL = (96, 192)
CS_EVAL_IDS = {7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33}


@pytest.mark.parametrize("domain", ["game", "real", "night", "fog"])
def test_generate_sample_is_deterministic_in_seed_and_index(domain):
    img, lab = generate_sample(domain, 3, seed=7, size=SMALL)
    img2, lab2 = generate_sample(domain, 3, seed=7, size=SMALL)
    assert img.shape == (*SMALL, 3) and img.dtype == np.uint8
    assert lab.shape == SMALL and lab.dtype == np.uint8
    assert np.array_equal(img, img2) and np.array_equal(lab, lab2)
    other, other_lab = generate_sample(domain, 3, seed=8, size=SMALL)
    assert not np.array_equal(other_lab, lab)
    assert not np.array_equal(generate_sample(domain, 4, seed=7, size=SMALL)[1], lab)


def test_domains_share_nothing_but_rules():
    # Same index and seed in two domains are different scenes (independent streams).
    assert not np.array_equal(
        generate_sample("game", 0, 0, SMALL)[1], generate_sample("real", 0, 0, SMALL)[1]
    )


def test_class_presence_and_imbalance():
    counts = np.zeros(256, np.int64)
    for i in range(48):
        counts += np.bincount(generate_sample("game", i, 0, SMALL)[1].ravel(), minlength=256)
    assert (counts[:19] > 0).all(), f"classes never drawn: {np.flatnonzero(counts[:19] == 0)}"
    assert counts[255] == 0  # the game source has no ego hood
    share = counts[:19] / counts[:19].sum()
    big = share[[0, 2, 8, 10]]  # road, building, vegetation, sky
    rare = share[[12, 16, 17, 18]]  # rider, train, motorcycle, bicycle
    assert big.min() > 0.04 and rare.max() < 0.01
    assert big.min() > 5 * rare.max()


def test_targets_carry_an_ignored_ego_hood_at_the_bottom():
    _, lab = generate_sample("real", 1, 0, SMALL)
    assert lab[-1, SMALL[1] // 2] == 255
    assert not (lab[: SMALL[0] // 2] == 255).any()


@pytest.mark.parametrize("domain", ["game", "real"])
def test_layout_sky_on_top_road_at_the_bottom(domain):
    top_sky = bottom_road = 0
    for i in range(8):
        _, lab = generate_sample(domain, i, 0, SMALL)
        top_sky += (lab[:8] == 10).mean() + (lab[:8] == 2).mean() + (lab[:8] == 8).mean()
        bottom_road += (lab[-SMALL[0] // 4 :] == 0).mean()
        # nothing of the ground appears in the top rows: the horizon is well below them
        assert not np.isin(lab[:4], [0, 1, 9]).any()
    assert top_sky / 8 > 0.9  # sky or tall things (buildings, trees) above
    assert bottom_road / 8 > 0.3  # the road fills much of the bottom quarter (hood aside)


def test_bad_arguments_raise_dataset_errors():
    with pytest.raises(DatasetError, match="unknown synthetic domain 'snow'"):
        generate_sample("snow", 0, 0)
    with pytest.raises(DatasetError, match="size"):
        generate_sample("game", 0, 0, size=(8, 8))
    with pytest.raises(DatasetError, match="layout"):
        write_split("/tmp/unused", "game", 1, 0, SMALL, layout="voc")


def test_label_ids_follow_the_official_table():
    lut = train_to_label_id()
    assert lut[0] == 7 and lut[10] == 23 and lut[13] == 26 and lut[18] == 33 and lut[255] == 1


def test_write_split_gta_and_cityscapes_layouts(tmp_path):
    src = tmp_path / "source"
    assert write_split(src, "game", 3, seed=0, size=SMALL, layout="gta") == 3
    for name in ("00000.png", "00001.png", "00002.png"):
        img = cv2.imread(str(src / "images" / name), cv2.IMREAD_UNCHANGED)
        lab = cv2.imread(str(src / "labels" / name), cv2.IMREAD_UNCHANGED)
        assert img.shape == (*SMALL, 3) and lab.shape == SMALL and lab.dtype == np.uint8
        assert set(np.unique(lab)) <= CS_EVAL_IDS
    # the written pair is the generated pair: BGR on disk, labelIds
    img, lab = generate_sample("game", 1, 0, SMALL)
    assert np.array_equal(cv2.imread(str(src / "images" / "00001.png"))[..., ::-1], img)
    assert np.array_equal(cv2.imread(str(src / "labels" / "00001.png"), 0), train_to_label_id()[lab])

    tgt = tmp_path / "real"
    write_split(tgt, "real", 2, seed=0, size=SMALL, layout="cityscapes", split="train")
    write_split(tgt, "real", 1, seed=0, size=SMALL, layout="cityscapes", split="val")
    for split, n in (("train", 2), ("val", 1)):
        for i in range(n):
            stem = f"synth_000000_{i:06d}"
            assert (tgt / "leftImg8bit" / split / "synth" / f"{stem}_leftImg8bit.png").is_file()
            lab = cv2.imread(str(tgt / "gtFine" / split / "synth" / f"{stem}_gtFine_labelIds.png"), 0)
            assert set(np.unique(lab)) <= CS_EVAL_IDS | {1}
    # val images are not copies of train images
    a = cv2.imread(str(tgt / "gtFine/train/synth/synth_000000_000000_gtFine_labelIds.png"), 0)
    b = cv2.imread(str(tgt / "gtFine/val/synth/synth_000000_000000_gtFine_labelIds.png"), 0)
    assert not np.array_equal(a, b)
    meta = json.loads((tgt / "meta.json").read_text())
    assert meta == {
        "generator_version": GENERATOR_VERSION,
        "domain": "real",
        "seed": 0,
        "size": list(SMALL),
        "layout": "cityscapes",
        "counts": {"train": 2, "val": 1},
    }
    assert meta_matches(tgt, "real", 0, SMALL, {"train": 2, "val": 1})
    assert not meta_matches(tgt, "real", 1, SMALL, {"train": 2})
    assert not meta_matches(tgt, "real", 0, SMALL, {"train": 3})


def test_write_split_is_idempotent_and_rewrites_on_other_seed(tmp_path):
    root = tmp_path / "s"
    assert write_split(root, "game", 2, seed=0, size=SMALL) == 2
    marker = root / "images" / "00000.png"
    stamp = marker.stat().st_mtime_ns
    assert write_split(root, "game", 3, seed=0, size=SMALL) == 1  # only the new one
    assert marker.stat().st_mtime_ns == stamp
    assert write_split(root, "game", 1, seed=5, size=SMALL) == 1  # other seed: old files go
    assert sorted(p.name for p in (root / "images").iterdir()) == ["00000.png"]
    assert json.loads((root / "meta.json").read_text())["seed"] == 5
    assert not list(root.rglob("*.tmp"))


def test_generate_benchmark_and_cli(tmp_path, capsys):
    out = generate_benchmark(
        tmp_path / "b", seed=0, size=SMALL, n_source=2, n_target_train=1, n_target_val=1, domains=("fog",)
    )
    assert set(out) == {"source", "fog"}
    assert len(list((tmp_path / "b/source/images").glob("*.png"))) == 2
    assert (tmp_path / "b/fog/leftImg8bit/val/synth/synth_000000_000000_leftImg8bit.png").is_file()
    with pytest.raises(DatasetError, match="'game' is the source"):
        generate_benchmark(tmp_path / "c", domains=("game",))

    sheet = tmp_path / "sheet.png"
    rc = main(
        [
            "synth",
            "--out",
            str(tmp_path / "cli"),
            "--size",
            "96x192",
            "--n-source",
            "1",
            "--n-train",
            "1",
            "--n-val",
            "1",
            "--domains",
            "night",
            "--sheet",
            str(sheet),
        ]
    )
    assert rc == 0
    assert (tmp_path / "cli/night/gtFine/train/synth/synth_000000_000000_gtFine_labelIds.png").is_file()
    img = cv2.imread(str(sheet))
    assert img.shape[1] == 3 * 192 + 2 * 4  # 3 samples per row, 4 px gaps
    assert main(["synth", "--out", str(tmp_path / "x"), "--size", "big"]) == 2
    assert "expected HEIGHTxWIDTH" in capsys.readouterr().err


def test_render_sheet_rows(tmp_path):
    path = render_sheet(tmp_path / "s.png", seed=0, size=SMALL, per_domain=2, domains=("game", "real"))
    sheet = cv2.imread(str(path))
    # per domain: image row, 4 px gap, label row; domains separated by 8 px
    assert sheet.shape[:2] == (4 * SMALL[0] + 2 * 4 + 8, 2 * SMALL[1] + 4)

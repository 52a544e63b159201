import json

import cv2
import numpy as np
import pytest
from data_trees import (
    GTA_IDS,
    id_columns,
    make_acdc,
    make_cityscapes,
    make_darkzurich,
    make_gta,
    make_synthia,
    write_gray,
)

from duda.cli import main
from duda.data import labels as L
from duda.data.datasets import CityscapesDataset, GTA5Dataset, build_dataset
from duda.data.prepare import prepare_dataset
from duda.errors import DatasetError


def run(kind, root, **kw):
    return prepare_dataset(kind, root, progress=False, log=lambda s: None, **kw)


def stats(root):
    return json.loads((root / "sample_class_stats.json").read_text())


def test_gta_prepare_writes_trainids_and_stats(tmp_path):
    make_gta(tmp_path, n=2)
    summary = run("gta", tmp_path)
    out = cv2.imread(str(tmp_path / "labels" / "00001_labelTrainIds.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(out, L.map_ids(id_columns(GTA_IDS), L.GTA_ID_TO_TRAINID))
    entry = stats(tmp_path)["images"]["images/00002.png"]
    assert entry["label"] == "labels/00002_labelTrainIds.png"
    # 64 columns over 23 ids: ids at positions 0..17 appear 3 times per row, the rest twice; 32 rows.
    per_col = [3 if p < 64 - 2 * 23 else 2 for p in range(23)]
    expected_counts = [0] * 19
    for pos, i in enumerate(GTA_IDS):
        if L.GTA_ID_TO_TRAINID[i] != 255:
            expected_counts[L.GTA_ID_TO_TRAINID[i]] += per_col[pos] * 32
    assert entry["counts"] == expected_counts
    unknown = (per_col[GTA_IDS.index(34)] + per_col[GTA_IDS.index(200)]) * 32
    assert entry["unknown"] == unknown and entry["unknown_ids"] == [34, 200]
    ignored = sum(per_col[p] for p, i in enumerate(GTA_IDS) if L.GTA_ID_TO_TRAINID[i] == 255) * 32
    assert entry["ignored"] == ignored
    assert summary.images == 2 and summary.converted == 2 and summary.reused == 0
    assert summary.ignored_pixels == 2 * ignored and summary.unknown_pixels == 2 * unknown
    assert summary.unknown_ids == {34, 200}
    text = "\n".join(summary.lines())
    assert "classes seen: 19/19" in text and f"pixels mapped to ignore (255): {2 * ignored} of 4096" in text
    assert "[34, 200]" in text
    np.testing.assert_array_equal(GTA5Dataset(tmp_path).class_stats()[1], expected_counts)


def test_output_names_of_each_layout(tmp_path):
    run("synthia", make_synthia(tmp_path / "syn", n=1))
    assert (tmp_path / "syn" / "GT" / "LABELS" / "0000001_labelTrainIds.png").is_file()
    run("cityscapes", make_cityscapes(tmp_path / "cs", n=1))
    for split, city in (("train", "aachen"), ("val", "frankfurt")):
        assert (
            tmp_path / "cs" / "gtFine" / split / city / f"{city}_000000_000000_gtFine_labelTrainIds.png"
        ).is_file()
    summary = run("acdc", make_acdc(tmp_path / "acdc", conditions=("rain",), n=1))
    assert (
        tmp_path / "acdc" / "gt" / "rain" / "val" / "GP010475" / "GP010475_frame_000000_gt_labelTrainIds.png"
    ).is_file()
    assert summary.splits == ["rain/train", "rain/val"] and "fog/train" in summary.skipped_splits
    summary = run("darkzurich", make_darkzurich(tmp_path / "dz", n=1))
    assert summary.images == 1
    assert (
        tmp_path / "dz" / "gt" / "val" / "night" / "GOPR0356" / "GOPR0356_frame_000000_gt_labelTrainIds.png"
    ).is_file()


def test_second_run_does_nothing_and_interrupted_run_is_completed(tmp_path):
    make_cityscapes(tmp_path, n=3)
    first = run("cityscapes", tmp_path)
    assert first.converted == 6
    again = run("cityscapes", tmp_path)
    assert again.converted == 0 and again.reused == 6 and again.ignored_pixels == first.ignored_pixels
    # Simulate a kill half-way: one output and one stats entry lost, a stray temp file left behind.
    lost = CityscapesDataset(tmp_path, "val").samples[1].trainid_label
    lost.unlink()
    (lost.parent / ".stray.tmp.png").write_bytes(b"")
    data = stats(tmp_path)
    key = "leftImg8bit/train/aachen/aachen_000000_000002_leftImg8bit.png"
    del data["images"][key]
    (tmp_path / "sample_class_stats.json").write_text(json.dumps(data))
    third = run("cityscapes", tmp_path)
    assert third.converted == 1 and third.reused == 4 and third.images == 6
    assert lost.is_file() and key in stats(tmp_path)["images"]
    assert third.ignored_pixels == first.ignored_pixels and third.unknown_pixels == first.unknown_pixels


def test_workers_give_identical_results(tmp_path):
    make_gta(tmp_path / "a", n=4)
    make_gta(tmp_path / "b", n=4)
    run("gta", tmp_path / "a", workers=1)
    run("gta", tmp_path / "b", workers=2)
    assert stats(tmp_path / "a") == stats(tmp_path / "b")


def test_prepare_folder_with_and_without_id_map(tmp_path):
    write_gray(tmp_path / "f" / "labels" / "a.png", id_columns([10, 20, 99]))
    write_gray(tmp_path / "g" / "labels" / "a.png", id_columns([0, 1, 40]))
    for name in ("f", "g"):
        from data_trees import write_rgb

        write_rgb(tmp_path / name / "images" / "a.png", 1)
    (tmp_path / "f" / "classes.yaml").write_text("classes: [p, q]\nid_to_trainid: {10: 0, 20: 1}\n")
    s = run("folder", tmp_path / "f")
    assert (tmp_path / "f" / "labels" / "a_labelTrainIds.png").is_file() and s.unknown_ids == {99}
    assert stats(tmp_path / "f")["classes"] == ["p", "q"]
    s = run("folder", tmp_path / "g")
    assert not (tmp_path / "g" / "labels" / "a_labelTrainIds.png").exists()  # already trainIds
    assert s.unknown_ids == {40}
    assert build_dataset("folder", tmp_path / "g").class_stats()[0, :2].tolist() == [22 * 32, 21 * 32]


def test_prepare_reports_size_mismatch_and_bad_label(tmp_path):
    make_gta(tmp_path, n=2)
    from data_trees import write_rgb

    write_rgb(tmp_path / "images" / "00002.png", 2, size=(30, 32))
    with pytest.raises(DatasetError, match=r"images/00002.png is 30x32 but its label .*00002.png is 64x32"):
        run("gta", tmp_path, workers=2)
    write_rgb(tmp_path / "images" / "00002.png", 2)
    (tmp_path / "labels" / "00002.png").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="labels/00002.png: not a readable image"):
        run("gta", tmp_path)
    # the image that was fine is kept, and its statistics were saved
    assert "images/00001.png" in stats(tmp_path)["images"]


def test_class_stats_missing_names_the_command(tmp_path):
    make_gta(tmp_path, n=1)
    with pytest.raises(DatasetError, match="no class statistics for 1 of 1 images.*duda prepare gta"):
        GTA5Dataset(tmp_path).class_stats()


def test_cli_prepare(tmp_path, capsys):
    make_gta(tmp_path, n=1)
    assert main(["prepare", "gta", str(tmp_path), "--no-progress", "--workers", "1"]) == 0
    assert "images: 1 (1 converted, 0 already done)" in capsys.readouterr().out
    assert main(["prepare", "cityscapes", str(tmp_path / "nope"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "duda prepare: error: folder not found" in err and "nope" in err and "leftImg8bit" in err
    assert main(["prepare", "gta", str(tmp_path), "--condition", "fog"]) == 2


def test_acdc_condition_selection(tmp_path):
    make_acdc(tmp_path, conditions=("fog", "snow"), n=1)
    summary = run("acdc", tmp_path, conditions=("snow",))
    assert summary.splits == ["snow/train", "snow/val"] and summary.images == 2
    with pytest.raises(DatasetError, match=r"\['sun'\] not one of fog, night, rain, snow"):
        run("acdc", tmp_path, conditions=("sun",))

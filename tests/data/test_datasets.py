import numpy as np
import pytest
from data_trees import (
    CITYSCAPES_IDS,
    GTA_IDS,
    SYNTHIA_IDS,
    id_columns,
    make_acdc,
    make_cityscapes,
    make_darkzurich,
    make_gta,
    make_synthia,
    write_gray,
    write_rgb,
)

from duda.config_base import from_dict
from duda.data import labels as L
from duda.data.datasets import (
    ACDCDataset,
    CityscapesDataset,
    DarkZurichDataset,
    DatasetConfig,
    FolderDataset,
    GTA5Dataset,
    SynthiaDataset,
    build_dataset,
    build_dataset_from_config,
)
from duda.errors import ConfigError, DatasetError


def expected(ids, table):
    return L.map_ids(id_columns(ids, dtype=np.uint16), table)


def test_gta_reader_converts_on_the_fly(tmp_path):
    ds = GTA5Dataset(make_gta(tmp_path))
    assert len(ds) == 3 and ds.default_resize == (1280, 720) and ds.labels is L.CITYSCAPES
    assert ds.image_path(0).name == "00001.png"
    img, gt = ds.load_pair(1)
    assert img.shape == (32, 64, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(gt, expected(GTA_IDS, L.GTA_ID_TO_TRAINID))
    assert gt[0, :4].tolist() == [255, 0, 1, 2]  # id 0 (unlabelled) → 255, 7 → road, 8 → sidewalk
    assert ds.samples[0].trainid_label == tmp_path / "labels" / "00001_labelTrainIds.png"


def test_image_is_rgb_not_bgr(tmp_path):
    written = write_rgb(tmp_path / "images" / "00001.png", 5)
    write_gray(tmp_path / "labels" / "00001.png", id_columns([7]))
    np.testing.assert_array_equal(GTA5Dataset(tmp_path).load_image(0), written)


def test_synthia_reads_last_channel_of_16_bit_labels(tmp_path):
    ds = SynthiaDataset(make_synthia(tmp_path))
    assert ds.default_resize == (1280, 760)
    gt = ds.load_label(0)
    np.testing.assert_array_equal(gt, expected(SYNTHIA_IDS, L.SYNTHIA_ID_TO_TRAINID))
    assert 9 not in gt and 14 not in gt and 16 not in gt  # SYNTHIA has no terrain/truck/train
    assert gt[0, 22] == 255 and gt[0, 21] == 255  # ids 300 (> 255) and 25 (unknown) → ignore


def test_cityscapes_splits(tmp_path):
    make_cityscapes(tmp_path)
    train, val = CityscapesDataset(tmp_path, "train"), CityscapesDataset(tmp_path, "val")
    assert len(train) == len(val) == 2 and train.default_resize == (1024, 512)
    assert "aachen" in str(train.image_path(0)) and "frankfurt" in str(val.image_path(0))
    np.testing.assert_array_equal(val.load_label(1), expected(CITYSCAPES_IDS, L.CITYSCAPES_ID_TO_TRAINID))
    assert train.samples[0].trainid_label.name == "aachen_000000_000000_gtFine_labelTrainIds.png"


def test_prepared_labels_are_preferred(tmp_path):
    ds = GTA5Dataset(make_gta(tmp_path, n=1))
    write_gray(ds.samples[0].trainid_label, np.full((32, 64), 4, np.uint8))
    assert (ds.load_label(0) == 4).all()


def test_prepared_label_alone_is_enough(tmp_path):
    make_gta(tmp_path, n=1)
    (tmp_path / "labels" / "00001.png").unlink()
    write_gray(tmp_path / "labels" / "00001_labelTrainIds.png", np.full((32, 64), 2, np.uint8))
    assert (GTA5Dataset(tmp_path).load_label(0) == 2).all()


def test_acdc_conditions_and_unlabelled_test_split(tmp_path):
    make_acdc(tmp_path, conditions=("fog", "night"))
    both = ACDCDataset(tmp_path, "train", conditions=("fog", "night"))
    fog = ACDCDataset(tmp_path, "val", conditions=("fog",))
    assert len(both) == 4 and len(fog) == 2 and both.default_resize == (960, 540)
    assert all("/fog/" in str(s.image) for s in fog.samples)
    assert fog.samples[0].trainid_label.name.endswith("_gt_labelTrainIds.png")
    test = ACDCDataset(tmp_path, "test", conditions=("night",))
    assert not test.has_labels and test.load_label(0) is None
    with pytest.raises(DatasetError, match="rgb_anon/rain/train"):
        ACDCDataset(tmp_path, "train")  # all four conditions by default
    with pytest.raises(DatasetError, match="condition 'sun' is not one of fog, night, rain, snow"):
        ACDCDataset(tmp_path, "train", conditions=("sun",))


def test_darkzurich_night_train_unlabelled_val_labelled(tmp_path):
    make_darkzurich(tmp_path)
    train = DarkZurichDataset(tmp_path, "train")
    assert len(train) == 2 and not train.has_labels and all("night" in str(s.image) for s in train.samples)
    assert len(DarkZurichDataset(tmp_path, "train", time="day")) == 2
    val = DarkZurichDataset(tmp_path, "val")
    assert val.has_labels and val.load_label(0)[0, 7] == 0


def test_folder_dataset_with_id_map(tmp_path):
    write_rgb(tmp_path / "images" / "a.jpg", 1)
    write_rgb(tmp_path / "images" / "b.png", 2)
    write_gray(tmp_path / "labels" / "a.png", id_columns([10, 20, 30, 40]))
    write_gray(tmp_path / "labels" / "b.png", id_columns([30]))
    (tmp_path / "classes.yaml").write_text("classes: [x, y, z]\nid_to_trainid: {10: 0, 20: 1, 30: 2}\n")
    ds = build_dataset("folder", tmp_path)
    assert isinstance(ds, FolderDataset) and ds.labels.names == ("x", "y", "z") and ds.default_resize is None
    assert ds.load_label(0)[0, :4].tolist() == [0, 1, 2, 255]
    assert ds.samples[0].trainid_label == tmp_path / "labels" / "a_labelTrainIds.png"


def test_folder_dataset_without_class_file_holds_trainids(tmp_path):
    write_rgb(tmp_path / "images" / "a.png", 1)
    write_gray(tmp_path / "labels" / "a.png", id_columns([0, 18, 19, 255]))
    ds = build_dataset("folder", tmp_path)
    assert ds.labels is L.CITYSCAPES
    assert ds.load_label(0)[0, :4].tolist() == [0, 18, 255, 255]
    unlabelled = FolderDataset(tmp_path / "images")
    assert unlabelled.load_label(0) is None


def test_dataset_config_builds_readers(tmp_path):
    make_acdc(tmp_path / "acdc", conditions=("snow",))
    cfg = from_dict(DatasetConfig, {"type": "acdc", "root": str(tmp_path / "acdc"), "conditions": ["snow"],
                                    "resize": [480, 270]})  # fmt: skip
    ds = build_dataset_from_config(cfg)
    assert isinstance(ds, ACDCDataset) and ds.conditions == ("snow",) and ds.default_resize == (480, 270)
    with pytest.raises(ConfigError, match="type"):
        from_dict(DatasetConfig, {"type": "kitti", "root": "x"})
    with pytest.raises(DatasetError, match="dataset type 'kitti'"):
        build_dataset("kitti", tmp_path)


# ------------------------------------------------------------------------------------- bad input


def test_missing_root_shows_expected_layout(tmp_path):
    with pytest.raises(DatasetError) as err:
        GTA5Dataset(tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere") in msg and "expected layout" in msg and "labels/00001.png" in msg


def test_missing_split_folder_names_it(tmp_path):
    make_cityscapes(tmp_path, splits=("train",))
    with pytest.raises(DatasetError, match="leftImg8bit/val") as err:
        CityscapesDataset(tmp_path, "val")
    assert "gtFine/{train,val}" in str(err.value)
    with pytest.raises(DatasetError, match="split 'test' is not one of train, val"):
        CityscapesDataset(tmp_path, "test")


def test_image_without_label_and_label_without_image(tmp_path):
    make_gta(tmp_path, n=3)
    (tmp_path / "labels" / "00002.png").unlink()
    write_gray(tmp_path / "labels" / "00009.png", id_columns([7]))
    with pytest.raises(DatasetError) as err:
        GTA5Dataset(tmp_path)
    msg = str(err.value)
    assert "1 image(s)" in msg and "images/00002.png" in msg
    assert "1 label(s)" in msg and "labels/00009.png" in msg


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"", "file is empty"), (b"this is not a png", "not a readable image"), (None, "not a readable image")],
)
def test_unreadable_image_is_named(tmp_path, content, needle):
    make_gta(tmp_path, n=1)
    path = tmp_path / "images" / "00001.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if content is None else content)  # None: truncated
    ds = GTA5Dataset(tmp_path)
    with pytest.raises(DatasetError, match=needle) as err:
        ds.load_image(0)
    assert str(path) in str(err.value)


def test_unreadable_label_is_named(tmp_path):
    make_cityscapes(tmp_path, n=1, splits=("train",))
    path = next((tmp_path / "gtFine" / "train").rglob("*_labelIds.png"))
    path.write_bytes(b"")
    with pytest.raises(DatasetError, match="empty") as err:
        CityscapesDataset(tmp_path, "train").load_label(0)
    assert str(path) in str(err.value)


def test_rgb_label_is_rejected(tmp_path):
    write_rgb(tmp_path / "images" / "a.png", 1)
    write_rgb(tmp_path / "labels" / "a.png", 2)
    with pytest.raises(DatasetError, match="expected a single-channel or palette PNG"):
        build_dataset("folder", tmp_path).load_label(0)


def test_size_mismatch_names_pair_and_sizes(tmp_path):
    make_gta(tmp_path, n=1)
    write_rgb(tmp_path / "images" / "00001.png", 1, size=(60, 30))
    with pytest.raises(DatasetError) as err:
        GTA5Dataset(tmp_path).load_pair(0)
    msg = str(err.value)
    assert "images/00001.png is 60x30" in msg and "labels/00001.png is 64x32" in msg

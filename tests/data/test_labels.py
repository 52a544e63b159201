import numpy as np
import pytest
from cityscapesscripts.helpers.labels import labels as cs_labels

from duda.data import labels as L
from duda.errors import DatasetError

# method.md Part D, typed out here on purpose: the code takes it from cityscapesscripts.
GTA_MAP = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
           26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18}  # fmt: skip
SYNTHIA_MAP = {3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10, 10: 11, 17: 12, 8: 13,
               19: 15, 12: 17, 11: 18}  # fmt: skip


def test_cityscapes_label_space_matches_official_table():
    assert L.CITYSCAPES.num_classes == 19
    assert (
        L.CITYSCAPES.names[0] == "road"
        and L.CITYSCAPES.names[13] == "car"
        and L.CITYSCAPES.names[18] == "bicycle"
    )
    assert L.CITYSCAPES.palette.dtype == np.uint8 and L.CITYSCAPES.palette.shape == (19, 3)
    assert tuple(L.CITYSCAPES.palette[0]) == (128, 64, 128)  # road
    assert tuple(L.CITYSCAPES.palette[10]) == (70, 130, 180)  # sky


def test_cityscapes_table_agrees_with_cityscapesscripts_for_every_id():
    for label in cs_labels:
        if 0 <= label.id < 256:
            expected = label.trainId if 0 <= label.trainId < 255 else 255
            assert L.CITYSCAPES_ID_TO_TRAINID[label.id] == expected, label.name
    assert L.CITYSCAPES_ID_TO_TRAINID[34] == 255 and L.CITYSCAPES_ID_TO_TRAINID[255] == 255


@pytest.mark.parametrize(
    ("table", "mapping"), [(L.GTA_ID_TO_TRAINID, GTA_MAP), (L.SYNTHIA_ID_TO_TRAINID, SYNTHIA_MAP)]
)
def test_source_tables_match_method_reference(table, mapping):
    assert table.shape == (256,) and table.dtype == np.uint8
    for i in range(256):
        assert table[i] == mapping.get(i, 255), i


def test_synthia_metric_subsets():
    assert L.SYNTHIA16_IDX == [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18]
    assert L.SYNTHIA13_IDX == [0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18]


def test_map_ids_sends_ids_outside_the_table_to_ignore():
    raw16 = np.array([[3, 300, 65535], [1, 0, 21]], dtype=np.uint16)
    out = L.map_ids(raw16, L.SYNTHIA_ID_TO_TRAINID)
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 255, 255], [10, 255, 3]]
    assert L.map_ids(np.array([[7, 26]], dtype=np.uint8), L.GTA_ID_TO_TRAINID).tolist() == [[0, 13]]


def test_count_unknown_ids():
    raw = np.array([[0, 7, 34], [200, 200, 33]], dtype=np.uint8)
    assert L.count_unknown_ids(raw, L.GTA_KNOWN_IDS) == (3, [34, 200])
    assert L.count_unknown_ids(raw, None) == (0, [])


def test_class_pixel_counts_ignores_255_and_out_of_range():
    ids = np.array([[0, 0, 2], [255, 5, 1]], dtype=np.uint8)
    assert L.class_pixel_counts(ids, 3).tolist() == [2, 1, 1]


def test_label_space_from_yaml(tmp_path):
    f = tmp_path / "classes.yaml"
    f.write_text(
        "classes: [bg, road, car]\npalette: [[0,0,0],[1,2,3],[4,5,6]]\nid_to_trainid: {10: 0, 20: 1, 30: 2}\n"
    )
    space, id_map = L.label_space_from_file(f)
    assert space.names == ("bg", "road", "car") and space.num_classes == 3
    assert space.palette.tolist() == [[0, 0, 0], [1, 2, 3], [4, 5, 6]]
    assert id_map == {10: 0, 20: 1, 30: 2}


def test_label_space_from_json_without_palette(tmp_path):
    f = tmp_path / "classes.json"
    f.write_text('{"classes": ["a", "b"]}')
    space, id_map = L.label_space_from_file(f)
    assert space.num_classes == 2 and id_map is None and space.palette.shape == (2, 3)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("names: [a]", "unknown key"),
        ("classes: []", "expected a mapping"),
        ("classes: [a, b]\npalette: [[0,0,0]]", "'palette' must be 2 RGB triples"),
        ("classes: [a]\nid_to_trainid: {5: 3}", "id_to_trainid entry 5: 3"),
        ("classes: [a\n", "not valid YAML"),
    ],
)
def test_bad_class_file_names_file_and_problem(tmp_path, text, needle):
    f = tmp_path / "classes.yaml"
    f.write_text(text)
    with pytest.raises(DatasetError, match="classes.yaml") as err:
        L.label_space_from_file(f)
    assert needle in str(err.value)

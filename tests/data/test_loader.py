import itertools

import numpy as np
import pytest
import torch
from data_trees import make_cityscapes, make_darkzurich, make_gta, write_gray, write_rgb

from duda.data.datasets import CityscapesDataset, DarkZurichDataset, FolderDataset, GTA5Dataset
from duda.data.loader import EvalSet, GlobalIndexSampler, UDATrainSet, build_eval_loader, build_train_loader
from duda.data.prepare import prepare_dataset
from duda.data.rcs import RareClassSampler, RCSConfig
from duda.errors import DatasetError

SMALL = (64, 32)  # keep the 64×32 test images at their size


@pytest.fixture
def pair(tmp_path):
    return GTA5Dataset(make_gta(tmp_path / "gta", n=4)), CityscapesDataset(
        make_cityscapes(tmp_path / "cs", n=3)
    )


def make_set(pair, **kw):
    src, tgt = pair
    return UDATrainSet(src, tgt, (16, 24), seed=3, source_resize=SMALL, target_resize=SMALL, **kw)


def test_sample_keys_shapes_and_types(pair):
    s = make_set(pair)[0]
    assert set(s) == {"src_img", "src_gt", "tgt_img", "tgt_gt", "tgt_valid"}
    assert s["src_img"].shape == (3, 16, 24) and s["src_img"].dtype == torch.float32
    assert s["src_gt"].shape == (16, 24) and s["src_gt"].dtype == torch.int64
    assert s["tgt_gt"].dtype == torch.int64 and s["tgt_valid"].dtype == torch.float32
    assert (s["tgt_valid"] == 1).all()  # margins off by default
    src_only = UDATrainSet(pair[0], None, 16, seed=0, source_resize=SMALL)[5]
    assert set(src_only) == {"src_img", "src_gt"} and src_only["src_img"].shape == (3, 16, 16)


def test_deterministic_in_seed_and_k(pair):
    ds = make_set(pair)
    a, b, c = ds[7], ds[7], ds[8]
    for key in a:
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["src_img"], c["src_img"]) or not torch.equal(a["tgt_img"], c["tgt_img"])
    other_seed = UDATrainSet(*pair, (16, 24), seed=4, source_resize=SMALL, target_resize=SMALL)[7]
    assert not all(torch.equal(a[k], other_seed[k]) for k in a)


def test_loader_stream_is_independent_of_workers_and_resumable(pair):
    ds = make_set(pair)
    batches0 = list(itertools.islice(build_train_loader(ds, batch_size=2, workers=0), 3))
    batches2 = list(itertools.islice(build_train_loader(ds, batch_size=2, workers=2), 3))
    resumed = next(iter(build_train_loader(ds, batch_size=2, workers=0, start_iter=2)))
    for key in batches0[0]:
        for x, y in zip(batches0, batches2, strict=True):
            assert torch.equal(x[key], y[key])
        assert torch.equal(resumed[key], batches0[2][key])
        assert torch.equal(batches0[1][key][1], ds[3][key])  # iteration 1, slot 1 → k = 3


def test_sampler_indices_for_rank_world_size_and_start():
    it = iter(GlobalIndexSampler(batch_size=2, start_iter=3, rank=1, world_size=2))
    assert [next(it) for _ in range(6)] == [14, 15, 18, 19, 22, 23]  # (t·2 + 1)·2 + j, t = 3, 4, 5
    it = iter(GlobalIndexSampler(batch_size=3, start_iter=0, rank=0, world_size=1))
    assert [next(it) for _ in range(7)] == list(range(7))
    with pytest.raises(DatasetError, match="rank"):
        GlobalIndexSampler(2, rank=2, world_size=2)


def test_margin_mask_follows_crop_and_flip(pair):
    src, tgt = pair
    kw = dict(source_resize=SMALL, target_resize=SMALL, target_valid_margins=(2, 6, 1, 4))
    kw["margin_reference_size"] = SMALL
    plain = UDATrainSet(src, tgt, (32, 64), seed=0, flip_prob=0.0, **kw)[0]["tgt_valid"]
    expected = torch.zeros(32, 64)
    expected[2:26, 1:60] = 1
    assert torch.equal(plain, expected)
    flipped = UDATrainSet(src, tgt, (32, 64), seed=0, flip_prob=1.0, **kw)[0]["tgt_valid"]
    assert torch.equal(flipped, expected.flip(-1))


def test_unlabelled_target_gives_ignore_and_padding(tmp_path, pair):
    dz = DarkZurichDataset(make_darkzurich(tmp_path / "dz"), "train")
    s = UDATrainSet(pair[0], dz, (40, 80), seed=1, source_resize=SMALL, target_resize=SMALL)[0]
    assert (s["tgt_gt"] == 255).all()
    # crop larger than the 64×32 image: padded with 0 (normalised), 255 (labels), 0 (valid)
    assert (s["src_gt"][32:] == 255).all() and (s["src_img"][:, :, 64:] == 0).all()
    assert (s["tgt_valid"][32:] == 0).all() and (s["tgt_valid"][:32, :64] == 1).all()


def test_rcs_recrop_until_enough_pixels_of_the_class(tmp_path):
    # Class 5 (pole) fills columns 0..15 of a 64×32 map, class 0 the rest.
    label = np.zeros((32, 64), np.uint8)
    label[:, :16] = 5
    write_rgb(tmp_path / "images" / "a.png", 0)
    write_gray(tmp_path / "labels" / "a.png", label)
    src = FolderDataset(tmp_path / "images", tmp_path / "labels")
    sampler = RareClassSampler(np.array([[1536, 0, 0, 0, 0, 512] + [0] * 13]), 19, min_pixels=300)
    assert sampler.class_probs[5] > 0.999

    # a 16×16 crop holds > 300·0.5 pixels of class 5 only when x0 ≤ 6 (7 of 49 positions)
    def share(tries):
        ds = UDATrainSet(
            src, None, 16, seed=0, rcs=sampler, cat_max_ratio=1.0, rcs_crop_tries=tries, flip_prob=0
        )
        return np.mean([(ds[k]["src_gt"] == 5).sum().item() > 150 for k in range(60)])

    assert share(1) < 0.3 and share(10) > 0.6


def test_rcs_config_builds_sampler_from_prepared_stats(tmp_path):
    make_gta(tmp_path, n=2)
    with pytest.raises(DatasetError, match="duda prepare gta"):
        UDATrainSet(GTA5Dataset(tmp_path), None, 16, seed=0, rcs=RCSConfig())
    prepare_dataset("gta", tmp_path, progress=False)
    ds = UDATrainSet(
        GTA5Dataset(tmp_path), None, 16, seed=0, source_resize=SMALL, rcs=RCSConfig(min_pixels=10)
    )
    assert ds.sampler is not None and ds.min_crop_ratio == 0.5 and ds.sampler.class_probs.shape == (19,)
    assert ds[0]["src_gt"].shape == (16, 16)


def test_eval_set_and_loader(tmp_path):
    val = CityscapesDataset(make_cityscapes(tmp_path, n=2), "val")
    s = EvalSet(val, resize=(32, 16))[1]
    assert s["img"].shape == (3, 16, 32) and s["gt"].shape == (32, 64) and s["gt"].dtype == torch.int64
    assert s["name"] == "frankfurt_000000_000001_leftImg8bit" and s["path"].endswith(".png")
    batch = next(iter(build_eval_loader(val, workers=0, resize=(32, 16))))
    assert batch["img"].shape == (1, 3, 16, 32) and batch["name"] == ["frankfurt_000000_000000_leftImg8bit"]
    unlabelled = EvalSet(DarkZurichDataset(make_darkzurich(tmp_path / "dz"), "train"))[0]
    assert "gt" not in unlabelled and unlabelled["img"].shape[1:] == (
        480,
        960,
    )  # default (960, 540): 15× binds

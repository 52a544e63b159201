"""Method-level glue: pseudo-label weighting modes, the mixed batch, and the faithfulness of DUDA's
large student to its base method."""

import pytest
import torch

from duda.methods.sections import UDAConfig
from duda.methods.self_training import mixed_batch, pseudo_labels


def _probs():
    # 1 image, 2 classes, 1x4 pixels: max probs 0.9, 0.6, 0.99, 0.5
    p1 = torch.tensor([0.9, 0.4, 0.99, 0.5]).view(1, 1, 1, 4)
    return torch.cat([p1, 1 - p1], dim=1)


def test_threshold_and_confidence_weighting():
    batch = {}
    labels, w = pseudo_labels(_probs(), batch, UDAConfig(pseudo_threshold=0.8, ignore_top=0, ignore_bottom=0))
    assert labels.tolist() == [[[0, 1, 0, 0]]]
    assert torch.allclose(w, torch.full_like(w, 0.5))  # 2 of 4 pixels >= 0.8
    cfg = UDAConfig(pseudo_weighting="confidence", ignore_top=0, ignore_bottom=0)
    _, w = pseudo_labels(_probs(), batch, cfg)
    assert torch.allclose(w, torch.full_like(w, (0.9 + 0.6 + 0.99 + 0.5) / 4))


def test_valid_mask_and_ignored_rows_zero_the_weight():
    probs = torch.full((1, 2, 4, 2), 0.5)
    probs[:, 0] = 0.99
    probs[:, 1] = 0.01
    batch = {"tgt_valid": torch.tensor([[[1.0, 0.0], [1, 1], [1, 1], [1, 1]]])}
    _, w = pseudo_labels(probs, batch, UDAConfig(ignore_top=1, ignore_bottom=1))
    assert w.tolist() == [[[0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0]]]


def test_mixed_batch_takes_source_labels_where_pasted():
    g = torch.Generator().manual_seed(0)
    src_gt = torch.tensor([[[0, 0], [1, 1]]])
    batch = {"src_img": torch.ones(1, 3, 2, 2), "src_gt": src_gt, "tgt_img": -torch.ones(1, 3, 2, 2)}
    cfg = UDAConfig(color_jitter_p=0.0, blur_p=0.0)
    pl = torch.full((1, 2, 2), 5)
    w = torch.full((1, 2, 2), 0.25)
    img, lbl, wgt, m = mixed_batch(batch, pl, w, cfg, g)
    m = m.bool()
    assert m.any() and not m.all()  # one of the two source classes is pasted
    assert torch.equal(lbl[m], src_gt[m]) and (lbl[~m] == 5).all()
    assert (wgt[m] == 1).all() and (wgt[~m] == 0.25).all()
    assert (img[:, 0][m] == 1).all() and (img[:, 0][~m] == -1).all()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("base", "fd"), [("daformer", 0.0), ("daformer", 0.005), ("mic", 0.005), ("mic_hrda", 0.005)]
)
def test_duda_large_student_trains_exactly_as_daformer(tmp_path, base, fd):
    """Stage 1: L (with T = EMA(L)) follows the base method step for step; S changes nothing
    (also a single-resolution S at half scale under multi-resolution MIC(HRDA) networks)."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "engine"))
    from tinyrun import HRDA_TINY, tiny_config

    from duda.checkpoints import load_checkpoint
    from duda.config import config_from_dict
    from duda.data.prepare import prepare_dataset
    from duda.data.synth import generate_benchmark
    from duda.engine.trainer import train

    root = tmp_path / "synth"
    generate_benchmark(
        root, seed=0, size=(64, 128), n_source=8, n_target_train=6, n_target_val=2, domains=("real",)
    )
    prepare_dataset("gta", root / "source", progress=False, log=lambda _: None)
    large = {"name": "daformer_mit_tiny", "arch": {"embed_dims": [8, 16, 32, 32], "head_channels": 16}}
    common = {"train": {"iters": 3, "eval_every": 0}}
    if base == "mic_hrda":
        common |= {"data": HRDA_TINY["data"]}
        hrda = HRDA_TINY["method"]["hrda"]
    else:
        hrda = {}
    duda = tiny_config(
        root,
        tmp_path / "duda",
        "duda",
        common
        | {
            "method": {
                "base": base,
                "uda": {"fd_weight": fd},
                "hrda": hrda,
                "duda": {"large": large, "stage1_iters": 3, "small_input_scale": 0.5 if hrda else 1.0},
            }
        },
    )
    daf = tiny_config(
        root,
        tmp_path / "daf",
        base,
        common | {"model": large, "method": {"uda": {"fd_weight": fd}, "hrda": hrda}},
    )
    train(config_from_dict(duda), progress=False)
    train(config_from_dict(daf), progress=False)
    a = load_checkpoint(tmp_path / "duda" / "checkpoints" / "iter_0000003.pt")["state"]
    b = load_checkpoint(tmp_path / "daf" / "checkpoints" / "iter_0000003.pt")["state"]
    for k, v in b["student"].items():
        assert torch.equal(a["large"][k], v), k
    for k, v in b["teacher"].items():
        assert torch.equal(a["teacher"][k], v), k

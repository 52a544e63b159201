"""predict_images output files, keep-ratio resizing, and the visualisation helpers."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from duda.errors import DatasetError
from duda.evaluation.predict import keep_ratio_size, list_images, predict_images
from duda.evaluation.visualize import colorize, make_grid, overlay, save_png

PALETTE = np.array([[128, 64, 128], [244, 35, 232], [70, 70, 70]], dtype=np.uint8)


class BrightestChannel(nn.Module):
    """Stride-4 model: 1×1 identity convolution then 4×4 average pooling; class = brightest channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, kernel_size=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
        self.pool = nn.AvgPool2d(4)
        self.inputs: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(tuple(x.shape))
        return self.pool(self.conv(x))


def halves_image(path, height: int, width: int) -> np.ndarray:
    """Red left half, blue right half."""
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[:, : width // 2, 0] = 200
    rgb[:, width // 2 :, 2] = 200
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb).save(path)
    return rgb


def test_keep_ratio_size_follows_the_mmseg_rule():
    assert keep_ratio_size(2048, 1024, (1024, 512)) == (1024, 512)  # Cityscapes
    assert keep_ratio_size(1914, 1052, (1280, 720)) == (1280, 704)  # GTA: long side bounds
    assert keep_ratio_size(1920, 1080, (960, 540)) == (960, 540)  # ACDC
    assert keep_ratio_size(100, 300, (1024, 512)) == (341, 1024)  # portrait: long side <= 1024, short <= 512


def test_predict_images_writes_three_files_at_the_original_size(tmp_path):
    rgb = halves_image(tmp_path / "in/night/x.png", 37, 50)
    halves_image(tmp_path / "in/day/y.jpg", 12, 16)
    model = BrightestChannel()
    paths = list_images(tmp_path / "in")
    assert [p.name for p in paths] == ["y.jpg", "x.png"]  # day/ before night/
    written = predict_images(
        model, paths, tmp_path / "out", PALETTE, mean=(0, 0, 0), std=(1, 1, 1), resize=(32, 16),
        root=tmp_path / "in", overlay_alpha=0.25,
    )  # fmt: skip
    assert written[1]["trainIds"] == tmp_path / "out/night/x_trainIds.png"
    assert model.inputs[1] == (1, 3, 16, 22)  # 50×37 resized keeping the ratio into 32×16
    ids = np.asarray(Image.open(tmp_path / "out/night/x_trainIds.png"))
    color = np.asarray(Image.open(tmp_path / "out/night/x_color.png"))
    over = np.asarray(Image.open(tmp_path / "out/night/x_overlay.png"))
    assert ids.shape == (37, 50) and color.shape == over.shape == (37, 50, 3)
    assert ids.dtype == np.uint8
    assert (ids[:, :20] == 0).all() and (ids[:, 30:] == 2).all()  # red -> class 0, blue -> class 2
    assert (color[0, 0] == PALETTE[0]).all() and (color[0, -1] == PALETTE[2]).all()
    expected = np.rint(0.75 * rgb[0, 0].astype(float) + 0.25 * PALETTE[0]).astype(np.uint8)
    assert (over[0, 0] == expected).all()
    assert sorted(p.name for p in (tmp_path / "out/day").iterdir()) == [
        "y_color.png", "y_overlay.png", "y_trainIds.png",
    ]  # fmt: skip


def test_predict_images_slide_mode_and_no_resize(tmp_path):
    halves_image(tmp_path / "a.png", 20, 24)
    model = BrightestChannel()
    predict_images(model, [tmp_path / "a.png"], tmp_path / "o", PALETTE, (0, 0, 0), (1, 1, 1),
                   mode="slide", crop=(16, 16), stride=(8, 8))  # fmt: skip
    assert set(model.inputs) == {(1, 3, 16, 16)}
    ids = np.asarray(Image.open(tmp_path / "o/a_trainIds.png"))
    assert ids.shape == (20, 24) and (ids[:, :10] == 0).all() and (ids[:, 14:] == 2).all()


def test_predict_input_errors(tmp_path):
    with pytest.raises(DatasetError, match="input not found"):
        list_images(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no images"):
        list_images(tmp_path / "empty")
    (tmp_path / "bad.png").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="bad.png: cannot read as an image"):
        predict_images(
            BrightestChannel(), [tmp_path / "bad.png"], tmp_path / "o", PALETTE, (0,) * 3, (1,) * 3
        )
    halves_image(tmp_path / "a/x.png", 8, 8)
    halves_image(tmp_path / "b/x.png", 8, 8)
    with pytest.raises(DatasetError, match="would both write"):
        predict_images(BrightestChannel(), [tmp_path / "a/x.png", tmp_path / "b/x.png"], tmp_path / "o",
                       PALETTE, (0,) * 3, (1,) * 3)  # fmt: skip


def test_colorize_palette_ignore_and_unknown_ids_are_black():
    label = np.array([[0, 1], [2, 255], [7, 1]], dtype=np.uint8)
    rgb = colorize(label, PALETTE)
    assert rgb.shape == (3, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 1].tolist() == [244, 35, 232] and rgb[1, 0].tolist() == [70, 70, 70]
    assert rgb[1, 1].tolist() == [0, 0, 0] and rgb[2, 0].tolist() == [0, 0, 0]
    full = np.tile(np.array([[9, 9, 9]], np.uint8), (256, 1))
    assert colorize(np.array([255], np.uint8), full).tolist() == [[0, 0, 0]]  # ignore stays black


def test_overlay_blend_and_mask():
    img = np.full((2, 2, 3), 100, np.uint8)
    color = np.full((2, 2, 3), 200, np.uint8)
    mask = np.array([[True, False], [True, True]])
    out = overlay(img, color, alpha=0.3, mask=mask)
    assert out[0, 0].tolist() == [130, 130, 130] and out[0, 1].tolist() == [100, 100, 100]
    with pytest.raises(ValueError, match="alpha"):
        overlay(img, color, alpha=1.5)


def test_make_grid_layout_and_titles():
    a = np.full((10, 20, 3), 255, np.uint8)
    b = np.zeros((6, 8), np.uint8)
    sheet = make_grid([[a, b], [None, a]], titles=[["image", "label"], ["", "pred"]], pad=2, title_height=12)
    # 2 rows of (10 + 12) + 3 pads; 2 columns of 20 + 3 pads
    assert sheet.shape == (2 * 22 + 3 * 2, 2 * 20 + 3 * 2, 3) and sheet.dtype == np.uint8
    assert (sheet[2 + 12 : 2 + 22, 2:22] == 255).all()  # first picture below its title band
    assert sheet[2:14, 2:22].any()  # title text drawn
    assert not sheet[24 + 2 : 24 + 14, 2:22].any()  # empty title, blank cell
    with pytest.raises(ValueError, match="layout"):
        make_grid([[a]], titles=[["x", "y"]])


def test_save_png_round_trip_without_leftovers(tmp_path):
    arr = np.arange(12, dtype=np.uint8).reshape(3, 4)
    path = save_png(tmp_path / "sub/x.png", arr)
    assert np.array_equal(np.asarray(Image.open(path)), arr)
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["x.png"]
    with pytest.raises(ValueError, match="uint8"):
        save_png(tmp_path / "y.png", arr.astype(np.float32))


def test_predict_command_parser_documents_every_option():
    import argparse

    from duda.commands import predict as command

    parser = argparse.ArgumentParser()
    command.register(parser.add_subparsers())
    argv = ["predict", "ckpt", "imgs", "--out", "o", "--mode", "slide", "--crop", "64", "32"]
    args = parser.parse_args(argv)
    assert args.func is command.run_predict and args.crop == [64, 32] and args.which == "student"
    sub = parser._subparsers._group_actions[0].choices["predict"]
    assert all(a.help for a in sub._actions)


def test_cli_defaults_are_the_inference_defaults():
    # duda/commands/predict.py repeats them so that `duda --help` does not import torch
    from duda.commands import predict as command
    from duda.inference.image import MAX_WHOLE_PIXELS
    from duda.inference.options import DEFAULT_CROP, DEFAULT_STRIDE

    assert command.MAX_WHOLE_PIXELS == MAX_WHOLE_PIXELS
    assert (command.DEFAULT_CROP, command.DEFAULT_STRIDE) == (DEFAULT_CROP, DEFAULT_STRIDE)

"""Whole-image and sliding-window inference on toy models with known behaviour."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from duda.inference.modes import infer, infer_slide, infer_whole, iter_windows, window_starts


def pointwise_model(classes: int = 5) -> nn.Module:
    """1×1 convolution at stride 1: translation-equivariant, so windows cannot change its output."""
    torch.manual_seed(0)
    return nn.Conv2d(3, classes, kernel_size=1).eval()


class ShapeRecorder(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return self.inner(x)


def test_window_starts_cover_the_image_and_end_at_the_border():
    assert window_starts(20, 8, 5) == [0, 5, 10, 12]
    assert window_starts(8, 8, 5) == [0]
    assert window_starts(6, 16, 5) == [0]
    assert window_starts(1024, 512, 341) == [0, 341, 512]
    windows = list(iter_windows((10, 7), (4, 4), (3, 3)))
    covered = np.zeros((10, 7), int)
    for y0, y1, x0, x1 in windows:
        covered[y0:y1, x0:x1] += 1
    assert covered.min() >= 1


def test_slide_equals_whole_for_a_translation_equivariant_model():
    model = pointwise_model()
    img = torch.randn(2, 3, 20, 30)
    whole = infer_whole(model, img, (40, 60))
    slide = infer_slide(model, img, crop=(8, 12), stride=(5, 7), num_classes=5, out_hw=(40, 60))
    assert slide.shape == (2, 5, 40, 60)
    torch.testing.assert_close(slide, whole, atol=1e-5, rtol=1e-5)


def test_slide_pads_images_smaller_than_the_crop():
    model = ShapeRecorder(pointwise_model(4))
    img = torch.randn(1, 3, 6, 7)
    slide = infer_slide(model, img, crop=(16, 16), stride=(10, 10), out_hw=(12, 14))
    assert model.shapes == [(1, 3, 16, 16)]  # one padded window of the full crop size
    assert slide.shape == (1, 4, 12, 14)  # number of classes taken from the model
    torch.testing.assert_close(slide, infer_whole(model, img, (12, 14)), atol=1e-5, rtol=1e-5)


def test_strided_logits_are_upsampled_bilinearly():
    model = nn.Sequential(pointwise_model(3), nn.AvgPool2d(4)).eval()
    img = torch.randn(1, 3, 16, 24)
    # whole (mmseg): logits -> the (resized) input size -> the label size, two bilinear steps
    at_input = F.interpolate(model(img), size=(16, 24), mode="bilinear", align_corners=False)
    expected = F.interpolate(at_input, size=(32, 48), mode="bilinear", align_corners=False)
    torch.testing.assert_close(infer_whole(model, img, (32, 48)), expected)
    one_step = F.interpolate(model(img), size=(32, 48), mode="bilinear", align_corners=False)
    assert (one_step - expected).abs().max() > 1e-3  # the single resize is measurably different
    # sliding: each window's logits go to the window size first, the assembled map to out_hw
    slide = infer_slide(model, img, crop=(16, 24), stride=(8, 8), out_hw=(32, 48))
    at_input = F.interpolate(model(img), size=(16, 24), mode="bilinear", align_corners=False)
    expected = F.interpolate(at_input, size=(32, 48), mode="bilinear", align_corners=False)
    torch.testing.assert_close(slide, expected)


def test_overlapping_windows_are_averaged():
    class WindowMean(nn.Module):
        """Every pixel gets the mean of its window: depends on the window, so averaging shows."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, :1].mean(dim=(2, 3), keepdim=True).expand(-1, 1, *x.shape[2:])

    img = torch.zeros(1, 3, 1, 6)
    img[0, 0, 0] = torch.arange(6.0)
    out = infer_slide(WindowMean(), img, crop=(1, 4), stride=(1, 2))
    # windows x 0..3 (mean 1.5) and 2..5 (mean 3.5); columns 2, 3 are covered by both
    torch.testing.assert_close(out[0, 0, 0], torch.tensor([1.5, 1.5, 2.5, 2.5, 3.5, 3.5]))


def test_flip_averages_with_the_mirrored_prediction():
    conv = nn.Conv2d(3, 2, kernel_size=(1, 3), padding=(0, 1), bias=False).eval()
    img = torch.randn(1, 3, 5, 8)
    expected = (conv(img) + torch.flip(conv(torch.flip(img, dims=[-1])), dims=[-1])) / 2
    torch.testing.assert_close(infer_whole(conv, img, flip=True), expected)
    torch.testing.assert_close(infer(conv, img, mode="slide", crop=(5, 8), flip=True), expected)
    # a point-wise model is mirror-symmetric: flipping changes nothing
    point = pointwise_model()
    torch.testing.assert_close(infer_whole(point, img, flip=True), infer_whole(point, img), atol=1e-6, rtol=0)


def test_bf16_autocast_returns_float32_close_to_fp32():
    model = pointwise_model()
    img = torch.randn(1, 3, 8, 8)
    out = infer_whole(model, img, bf16=True)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, infer_whole(model, img), atol=0.1, rtol=0.05)


def test_numpy_callable_and_tuple_outputs_are_accepted():
    img = torch.randn(1, 3, 4, 4)

    def onnx_like(arr: np.ndarray) -> list[np.ndarray]:
        assert isinstance(arr, np.ndarray) and arr.dtype == np.float32
        return [arr[:, :2] * 2]

    torch.testing.assert_close(infer_whole(onnx_like, img), img[:, :2] * 2)

    class WithFeatures(nn.Module):
        def forward(self, x: torch.Tensor):
            return x[:, :2], x

    torch.testing.assert_close(
        infer(WithFeatures(), img, mode="slide", crop=(2, 2), stride=(2, 2)), img[:, :2]
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="B×3×H×W"):
        infer_whole(pointwise_model(), torch.randn(3, 4, 4))
    with pytest.raises(ValueError, match="mode"):
        infer(pointwise_model(), torch.randn(1, 3, 4, 4), mode="tiles")
    with pytest.raises(ValueError, match="expected 19"):
        infer_slide(pointwise_model(5), torch.randn(1, 3, 4, 4), crop=(4, 4), num_classes=19)

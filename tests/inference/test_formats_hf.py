"""Hugging Face format: export to SegformerForSemanticSegmentation, pipeline, loading back."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from duda import cli
from duda.errors import CheckpointError, DudaError
from duda.inference import load_inference_model, save_deploy_model
from duda.inference.formats import hf as H
from duda.models import build_model
from tiny_meta import CLASSES, META

# A tiny MiT with every kind of override: 3 stages, uneven heads, sr 1 in the last stage.
TINY_ARCH = {
    "embed_dims": [8, 16, 24],
    "depths": [1, 2, 1],
    "num_heads": [1, 2, 3],
    "sr_ratios": [4, 2, 1],
    "mlp_ratios": [2, 4, 4],
    "patch_sizes": [7, 3, 3],
    "strides": [4, 2, 2],
    "head_channels": 16,
}


def _randomise_batch_norm(model: torch.nn.Module) -> None:
    """Non-trivial running statistics, so that the BatchNorm mapping is exercised."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def deploy_dir(tmp_path: Path, name: str = "segformer_mit_tiny", **arch) -> Path:
    torch.manual_seed(0)
    model = build_model(name, num_classes=3, **arch).eval()
    _randomise_batch_norm(model)
    return save_deploy_model(tmp_path / f"deploy_{name}", model, META)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hf")
    loaded = load_inference_model(deploy_dir(tmp, **TINY_ARCH))
    result = H.export_hf(loaded, tmp / "hf_out")
    return loaded, result


def test_export_writes_the_three_files_and_reproduces_the_logits(exported):
    from transformers import SegformerForSemanticSegmentation

    loaded, result = exported
    out = result.path
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["config.json", "model.safetensors", "preprocessor_config.json"]
    )
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".hf_out")]  # no staging left
    assert result.max_abs_diff < 1e-5 and result.agreement == 1.0
    model, info = SegformerForSemanticSegmentation.from_pretrained(str(out), output_loading_info=True)
    assert not any(info.values()), info
    model.eval()
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ours = loaded.model(x)
        theirs = model(pixel_values=x).logits
    assert loaded.model.output_stride == 4 and theirs.shape == ours.shape == (2, 3, 16, 24)
    diff = float((ours - theirs).abs().max())
    print(f"max |logit difference| transformers vs duda: {diff:.2e}")
    assert diff <= 1e-5
    # the only difference is LayerNorm eps (duda 1e-6 in block/stage norms, transformers 1e-5)
    same_eps = copy.deepcopy(loaded.model)
    for m in same_eps.modules():
        if isinstance(m, torch.nn.LayerNorm):
            m.eps = 1e-5
    with torch.no_grad():
        diff_same_eps = float((same_eps(x) - theirs).abs().max())
    print(f"... with transformers' LayerNorm eps: {diff_same_eps:.2e}")
    assert diff_same_eps < 1e-6


def test_exported_files_hold_labels_normalisation_and_hub_keys(exported):
    _, result = exported
    config = json.loads((result.path / "config.json").read_text())
    assert config["model_type"] == "segformer" and config["architectures"] == [H.HF_CLASS]
    assert config["id2label"] == {"0": "road", "1": "sky", "2": "car"}
    assert config["label2id"] == {"road": 0, "sky": 1, "car": 2}
    assert config["hidden_sizes"] == [8, 16, 24] and config["decoder_hidden_size"] == 16
    assert config["duda"]["model"] == "segformer_mit_tiny"
    prep = json.loads((result.path / "preprocessor_config.json").read_text())
    assert prep["size"] == {"height": 64, "width": 96} and prep["do_reduce_labels"] is False
    np.testing.assert_allclose(np.asarray(prep["image_mean"]) * 255, META["mean"], rtol=1e-12)
    np.testing.assert_allclose(np.asarray(prep["image_std"]) * 255, META["std"], rtol=1e-12)
    keys = set(load_file(str(result.path / "model.safetensors")))
    assert "segformer.encoder.block.1.1.attention.self.query.weight" in keys
    assert "segformer.encoder.block.0.0.attention.self.sr.weight" in keys
    assert "segformer.encoder.block.2.0.attention.self.sr.weight" not in keys  # sr ratio 1
    assert {"decode_head.linear_c.2.proj.weight", "decode_head.batch_norm.running_var"} <= keys


def test_pipeline_runs_on_a_pil_image(exported):
    from transformers import pipeline

    _, result = exported
    seg = pipeline("image-segmentation", model=str(result.path))
    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (50, 70, 3), dtype=np.uint8))
    out = seg(image)
    print("pipeline labels:", [d["label"] for d in out])
    assert isinstance(out, list) and out
    for item in out:
        assert item["label"] in CLASSES
        assert item["mask"].size == image.size


def test_loading_the_folder_back_gives_the_same_model(exported, tmp_path):
    loaded, result = exported
    back = load_inference_model(result.path)
    assert back.model_name == "segformer_mit_tiny" and back.classes == CLASSES
    assert back.palette.tolist() == META["palette"] and back.resize == (96, 64)
    assert back.mean == tuple(META["mean"]) and back.std == tuple(META["std"])
    # build_model-compatible: the spec rebuilds the architecture
    rebuilt = build_model(back.spec["name"], back.spec["num_classes"], **back.spec["arch"])
    assert rebuilt.state_dict().keys() == back.model.state_dict().keys()
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(back.model.state_dict()[key], value), key
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(back.model(x), loaded.model(x))
    # the model.safetensors / config.json paths work too
    assert load_inference_model(result.path / "config.json").model_name == "segformer_mit_tiny"
    # the encoder is a pretrained= source as it stands (decode head dropped)
    enc = build_model("segformer_mit_tiny", 3, pretrained=result.path / "model.safetensors", **TINY_ARCH)
    ours = loaded.model.backbone.state_dict()  # (key names follow the installed transformers)
    assert enc.backbone.state_dict().keys() == ours.keys()
    for key, value in enc.backbone.state_dict().items():
        assert torch.equal(value, ours[key]), key


def test_nvidia_style_folder_loads_with_the_closest_name(exported, tmp_path):
    """A folder as the hub has them: transformers' own config (no duda entry), legacy keys,
    no num_batches_tracked, no preprocessor; architecture B0 shape → segformer_mitb0 + overrides."""
    from transformers import SegformerConfig

    _, result = exported
    folder = tmp_path / "nvidia_like"
    folder.mkdir()
    config = json.loads((result.path / "config.json").read_text())
    del config["duda"]
    (folder / "config.json").write_text(json.dumps(config))
    state = load_file(str(result.path / "model.safetensors"))
    del state["decode_head.batch_norm.num_batches_tracked"]
    save_file(state, str(folder / "model.safetensors"))
    back = load_inference_model(folder)
    assert back.resize is None and back.mean == pytest.approx(META["mean"])
    assert back.palette.shape == (3, 3)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(back.model(x).argmax(1), H.load_hf_folder(result.path).model(x).argmax(1))
    # the default SegformerConfig is MiT-B0 with a 256-channel decoder: no overrides at all
    b0 = SegformerConfig(num_labels=19).to_dict()
    assert H.arch_from_config(b0, "x") == ("segformer_mitb0", {})
    b2 = {**b0, "depths": [3, 4, 6, 3], "hidden_sizes": [64, 128, 320, 512], "decoder_hidden_size": 768}
    b2["num_attention_heads"] = [1, 2, 5, 8]
    assert H.arch_from_config(b2, "x") == ("segformer_mitb2", {})


def test_hub_id_resolves_through_huggingface_hub(exported, monkeypatch):
    import huggingface_hub

    _, result = exported
    asked = []

    def fake_download(repo_id, filename, local_files_only=False):
        asked.append((repo_id, filename))
        return str(result.path / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    back = load_inference_model("nvidia/segformer-tiny-test")
    assert back.model_name == "segformer_mit_tiny"
    assert ("nvidia/segformer-tiny-test", "config.json") in asked


def test_daformer_head_is_refused_naming_the_segformer_alternative(tmp_path):
    loaded = load_inference_model(deploy_dir(tmp_path, "daformer_mit_tiny"))
    expected = (
        "daformer_mit_tiny has a DAFormer head, which transformers has no class for; train segformer_mit_tiny"
    )
    with pytest.raises(DudaError, match=expected):
        H.export_hf(loaded, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert H._refusal("daformer_mitb5").startswith(
        "daformer_mitb5 has a DAFormer head, which transformers has no class for; train segformer_mitb5 "
    )


def test_deeplab_is_refused(tmp_path):
    loaded = load_inference_model(deploy_dir(tmp_path, "deeplabv3p_r_tiny"))
    with pytest.raises(DudaError, match="ResNet \\+ DeepLabV3\\+ model.*segformer_mitb0"):
        H.export_hf(loaded, tmp_path / "out")


def test_cli_export_hf(tmp_path, capsys):
    src = deploy_dir(tmp_path)
    out = tmp_path / "cli_hf"
    assert cli.main(["export", str(src), "--format", "hf", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "SegformerForSemanticSegmentation" in text and "max |Δlogit|" in text
    assert (out / "model.safetensors").is_file()
    assert cli.main(["export", str(src), "--format", "hf", "--out", str(out), "--dynamic"]) == 2
    assert "--dynamic: ONNX options" in capsys.readouterr().err


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_bad_folders_give_errors_naming_the_file(exported, tmp_path):
    _, result = exported
    other = _copy(result.path, tmp_path / "bert")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(CheckpointError, match=r"bert/config.json: model_type 'bert'.*'segformer'"):
        load_inference_model(other)
    assert H.is_hf_folder(result.path) and not H.is_hf_folder(other)

    no_weights = _copy(result.path, tmp_path / "no_weights")
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"no_weights: no model.safetensors or pytorch_model.bin"):
        load_inference_model(no_weights)

    wrong = _copy(result.path, tmp_path / "wrong")
    state = load_file(str(wrong / "model.safetensors"))
    state["decode_head.extra.weight"] = state.pop("decode_head.classifier.weight")
    save_file(state, str(wrong / "model.safetensors"))
    with pytest.raises(
        CheckpointError, match=r"wrong/model.safetensors: .*missing keys: decode_head.classifier"
    ):
        load_inference_model(wrong)
    with pytest.raises(CheckpointError, match=r"unexpected keys: decode_head.extra.weight"):
        load_inference_model(wrong)

    encoder_only = _copy(result.path, tmp_path / "mit")
    config = json.loads((encoder_only / "config.json").read_text())
    config["architectures"] = ["SegformerForImageClassification"]
    (encoder_only / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"mit/config.json: architectures.*pretrained"):
        load_inference_model(encoder_only)


def test_transformers_5_key_layout_loads_too(exported, tmp_path):
    """A file saved with transformers 5.x module names (save_original_format=False)."""
    from duda.models.pretrained import mit_legacy_to_stages

    _, result = exported
    folder = _copy(result.path, tmp_path / "v5")
    state = load_file(str(folder / "model.safetensors"))
    renamed = {}
    for k, v in state.items():
        if k.startswith("segformer.encoder."):
            k = "segformer." + mit_legacy_to_stages(k.removeprefix("segformer.encoder."))
        renamed[k.replace("decode_head.linear_c.", "decode_head.linear_projections.")] = v
    assert any(k.startswith("segformer.stages.") for k in renamed)
    save_file(renamed, str(folder / "model.safetensors"))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(load_inference_model(folder).model(x), load_inference_model(result.path).model(x))


def test_export_is_discarded_when_transformers_disagrees(tmp_path, monkeypatch):
    loaded = load_inference_model(deploy_dir(tmp_path))
    monkeypatch.setattr(H, "_check_export", lambda folder, model, shape: (0.5, 0.9, 2.0))
    with pytest.raises(DudaError, match=r"only to max \|Δlogit\| 5.00e-01 .*export discarded"):
        H.export_hf(loaded, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_key_check_against_transformers_catches_a_gap(exported):
    loaded, _ = exported
    config = H.segformer_config(loaded.model.spec, CLASSES, {})
    state = H.to_hf_state(loaded.model)
    H._check_against_transformers(config, state)  # complete: no error
    del state["segformer.encoder.block.1.0.mlp.dwconv.dwconv.weight"]
    state["decode_head.linear_c.9.proj.weight"] = torch.zeros(1)
    with pytest.raises(
        DudaError, match=r"keys transformers has and duda not: segformer.encoder.block.1.0.mlp"
    ):
        H._check_against_transformers(config, state)

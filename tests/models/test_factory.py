"""Factory names, overrides, specs, FLOP counting, key-layout conversion and the CLI table."""

from __future__ import annotations

import json
import re

import pytest
import torch
from safetensors.torch import save_file

from duda.cli import main
from duda.errors import CheckpointError, ConfigError
from duda.models import (
    allowed_overrides,
    build_from_spec,
    build_model,
    count_flops,
    count_parameters,
    list_models,
)
from duda.models.pretrained import mit_legacy_to_stages, mit_stages_to_legacy


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def test_all_required_names_exist():
    names = set(list_models())
    for v in ("b0", "b1", "b2", "b3", "b4", "b5"):
        assert {f"daformer_mit{v}", f"segformer_mit{v}"} <= names
    assert {"deeplabv2_r50", "deeplabv2_r101", "deeplabv3p_r18"} <= names
    assert {"daformer_mit_tiny", "segformer_mit_tiny", "deeplabv2_r_tiny", "deeplabv3p_r_tiny"} <= names


def test_published_parameter_counts_on_meta_device():
    # SegFormer paper: B0 3.7 M, B1 13.7 M, B5 84.7 M; DAFormer paper: MiT-B5 + DAFormer head 85.2 M.
    expected = {
        "segformer_mitb0": 3.7,
        "segformer_mitb1": 13.7,
        "segformer_mitb5": 84.7,
        "daformer_mitb5": 85.2,
    }
    for name, millions in expected.items():
        with torch.device("meta"):
            model = build_model(name)
        assert abs(count_parameters(model) / 1e6 - millions) < 0.1, name


def test_mit_b5_dims_and_depths():
    fields = allowed_overrides("daformer_mitb5")
    assert fields["embed_dims"] == (64, 128, 320, 512) and fields["depths"] == (3, 6, 40, 3)
    assert fields["drop_path_rate"] == 0.1 and fields["dropout"] == 0.1 and fields["head_channels"] == 256
    assert allowed_overrides("daformer_mitb0")["embed_dims"] == (32, 64, 160, 256)


def test_overrides_are_recorded_in_spec_and_rebuild_same_architecture():
    model = build_model(
        "segformer_mit_tiny", 7, embed_dims=[8, 16, 24, 32], depths=(1, 2, 1, 1), head_channels=16
    )
    spec = json.loads(json.dumps(model.spec))  # must survive JSON (model.json)
    assert spec == {
        "name": "segformer_mit_tiny",
        "num_classes": 7,
        "arch": {"embed_dims": [8, 16, 24, 32], "depths": [1, 2, 1, 1], "head_channels": 16},
    }
    rebuilt = build_from_spec(spec)
    assert rebuilt.backbone.out_channels == (8, 16, 24, 32)
    assert [tuple(v.shape) for v in rebuilt.state_dict().values()] == [
        tuple(v.shape) for v in model.state_dict().values()
    ]


def test_resnet_overrides_change_width_and_depth():
    model = build_model("deeplabv2_r_tiny", layers=(2, 1, 1, 1), width=4)
    assert model.backbone.out_channels == (16, 32, 64, 128)
    assert len(model.backbone.layer1) == 2
    assert model.backbone.feature_strides == (4, 8, 8, 8)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"embed_dim": (8, 16, 32, 64)}, r"unknown key 'arch\.embed_dim'; allowed here: .*embed_dims"),
        ({"depths": "1111"}, "depths.*list of integers"),
        ({"head_channels": 0}, "head_channels.*positive integer"),
        ({"num_heads": (3, 3, 3, 3)}, "divisible"),
        ({"depths": (1, 1, 1)}, "4 entries"),
    ],
)
def test_bad_overrides_raise_config_error(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        build_model("segformer_mit_tiny", **kwargs)


def test_unknown_name_and_bad_num_classes():
    with pytest.raises(ConfigError, match="unknown; expected one of .*daformer_mitb5"):
        build_model("daformer_mitb9")
    with pytest.raises(ConfigError, match="num_classes"):
        build_model("segformer_mit_tiny", num_classes=0)


def test_imagenet_shortcut_needs_published_weights():
    with pytest.raises(CheckpointError, match="no published ImageNet weights"):
        build_model("segformer_mit_tiny", pretrained="imagenet")


def test_flops_scale_with_pixels_and_match_hand_count_for_deeplabv2_head():
    small = count_flops("deeplabv2_r_tiny", (64, 64))
    big = count_flops("deeplabv2_r_tiny", (128, 128))
    assert big == 4 * small  # every op of a convnet is linear in the number of pixels
    # Head alone: 4 convs 3×3, 256 → 19 channels, on an 8×8 map, 2 FLOPs per multiply-add.
    head = 2 * 4 * (256 * 9) * 19 * 8 * 8
    with_more_classes = count_flops("deeplabv2_r_tiny", (64, 64), num_classes=20)
    assert with_more_classes - small == head // 19


def test_segformer_b0_flops_near_published():
    # SegFormer paper: MiT-B0 SegFormer 8.4 GMACs at 512×512 → ~33.6 GFLOPs at 512×1024.
    gflops = count_flops("segformer_mitb0") / 1e9
    assert 30 < gflops < 40


def _legacy_to_mmseg(state):
    """Hand-written inverse of the mmseg mapping, for the test (legacy HF keys → mmseg keys)."""
    out = {}
    for key, v in state.items():
        parts = key.split(".")
        if parts[0] == "patch_embeddings":
            out[f"patch_embed{int(parts[1]) + 1}.{'proj' if parts[2] == 'proj' else 'norm'}.{parts[3]}"] = v
        elif parts[0] == "layer_norm":
            out[f"norm{int(parts[1]) + 1}.{parts[2]}"] = v
        else:
            stage, blk, rest = int(parts[1]) + 1, parts[2], ".".join(parts[3:])
            names = {
                "layer_norm_1": "norm1",
                "layer_norm_2": "norm2",
                "attention.self.query": "attn.q",
                "attention.output.dense": "attn.proj",
                "attention.self.sr": "attn.sr",
                "attention.self.layer_norm": "attn.norm",
                "mlp.dense1": "mlp.fc1",
                "mlp.dense2": "mlp.fc2",
                "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
            }
            mod, leaf = rest.rsplit(".", 1)
            if mod == "attention.self.key":
                value = state[key.replace(".key.", ".value.")]
                out[f"block{stage}.{blk}.attn.kv.{leaf}"] = torch.cat([v, value], 0)
            elif mod != "attention.self.value":
                out[f"block{stage}.{blk}.{names[mod]}.{leaf}"] = v
    return out


def test_mmseg_mit_checkpoint_loads_with_kv_split(tmp_path):
    torch.manual_seed(5)
    donor = build_model("daformer_mit_tiny").eval()
    # installed keys: encoder.stages.* (transformers 5.x) or encoder.encoder.block.* (4.x)
    bare = {re.sub(r"^(encoder\.)+", "", k): v for k, v in donor.backbone.state_dict().items()}
    legacy = {mit_stages_to_legacy(k): v for k, v in bare.items()}
    assert "block.0.0.attention.self.query.weight" in legacy and "layer_norm.3.weight" in legacy
    mmseg = _legacy_to_mmseg(legacy)
    assert "block1.0.attn.kv.weight" in mmseg and "patch_embed1.proj.weight" in mmseg
    mmseg["head.weight"] = torch.zeros(1000, 64)
    torch.save({"state_dict": mmseg}, tmp_path / "mit_b.pth")
    torch.manual_seed(6)
    model = build_model("daformer_mit_tiny", pretrained=str(tmp_path / "mit_b.pth")).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.backbone(x)[-1], donor.backbone(x)[-1])


def test_mit_key_renaming_round_trip():
    key = "block.2.1.attention.self.sr.weight"
    assert (
        mit_legacy_to_stages(key)
        == "stages.2.blocks.1.attention.sequence_reduction.sequence_reduction.weight"
    )
    assert mit_stages_to_legacy(mit_legacy_to_stages(key)) == key
    assert (
        mit_legacy_to_stages("patch_embeddings.0.layer_norm.bias")
        == "stages.0.patch_embeddings.layer_norm.bias"
    )


def test_hf_resnet_checkpoint_loads(tmp_path):
    torch.manual_seed(7)
    donor = build_model("deeplabv3p_r_tiny").eval()
    hf = {}
    for key, v in donor.backbone.state_dict().items():
        parts = key.split(".")
        if parts[0] in ("conv1", "bn1"):
            kind = "convolution" if parts[0] == "conv1" else "normalization"
            hf[f"resnet.embedder.embedder.{kind}.{parts[1]}"] = v
            continue
        stage, blk = int(parts[0][5:]) - 1, parts[1]
        prefix = f"resnet.encoder.stages.{stage}.layers.{blk}"
        if parts[2] == "downsample":
            kind = "convolution" if parts[3] == "0" else "normalization"
            hf[f"{prefix}.shortcut.{kind}.{parts[4]}"] = v
        else:
            kind = "convolution" if parts[2].startswith("conv") else "normalization"
            hf[f"{prefix}.layer.{int(parts[2][-1]) - 1}.{kind}.{parts[3]}"] = v
    hf["classifier.1.weight"] = torch.zeros(1000, 128)
    save_file({k: v.contiguous() for k, v in hf.items()}, str(tmp_path / "model.safetensors"))
    torch.manual_seed(8)
    model = build_model("deeplabv3p_r_tiny", pretrained=tmp_path / "model.safetensors").eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model.backbone(x)[-1], donor.backbone(x)[-1])


def test_cli_models_table(capsys):
    assert main(["models", "--names", "segformer_mit_tiny", "deeplabv2_r_tiny", "--size", "64", "64"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in out[1:3]}
    assert float(rows["segformer_mit_tiny"][1]) == pytest.approx(0.12, abs=0.01)
    assert rows["deeplabv2_r_tiny"][3] == "8"
    assert float(rows["deeplabv2_r_tiny"][2]) == pytest.approx(
        count_flops("deeplabv2_r_tiny", (64, 64)) / 1e9, abs=0.05
    )


def test_cli_unknown_model_is_clear_error(capsys):
    assert main(["models", "--names", "nope"]) == 2
    assert "unknown" in capsys.readouterr().err


@pytest.mark.parametrize("groups", [1, 8])
def test_flop_counter_counts_grouped_conv_backward(groups):
    from duda.models.flops import flop_counter

    conv = torch.nn.Conv2d(8, 16, 3, padding=1, groups=groups)
    x = torch.randn(2, 8, 5, 5, requires_grad=True)
    forward = 2 * (2 * 16 * 5 * 5) * (8 // groups * 9)  # 2 · |output| · (Cin/groups · k²)
    with flop_counter() as counter:
        conv(x).sum().backward()
    assert counter.get_total_flops() == 3 * forward  # forward + grad input + grad weight
    with flop_counter() as counter:
        conv(x.detach()).sum().backward()  # no grad for the input: forward + grad weight
    assert counter.get_total_flops() == 2 * forward


def test_input_scale_resizes_inside_the_network_and_survives_a_round_trip(tmp_path):
    import torch.nn.functional as F

    from duda.errors import ConfigError
    from duda.inference import load_inference_model, save_deploy_model
    from duda.models import build_network

    torch.manual_seed(0)
    plain = build_model("segformer_mit_tiny", 19).eval()
    half = build_network("segformer_mit_tiny", 19, input_scale=0.5).eval()
    half.load_state_dict(plain.state_dict())  # same weights: the scale is no parameter
    x = torch.randn(1, 3, 128, 96)
    small = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
    with torch.no_grad():
        assert torch.equal(half(x), plain(small)) and half(x).shape[-2:] == (16, 12)
    assert half.min_input_side == 64 and half.spec["input_scale"] == 0.5
    meta = {"classes": [str(i) for i in range(19)], "palette": [[0, 0, 0]] * 19, "mean": [0, 0, 0],
            "std": [1, 1, 1], "resize": None}  # fmt: skip
    save_deploy_model(tmp_path / "m", half, meta)
    back = load_inference_model(tmp_path / "m").model
    assert back.input_scale == 0.5
    with torch.no_grad():
        assert torch.equal(back(x), half(x))
    with pytest.raises(ConfigError, match="input_scale: expected > 0"):
        build_network("segformer_mit_tiny", 19, input_scale=-1.0)

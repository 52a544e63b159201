"""Published DAFormer / MIC (mmseg) checkpoints: recognition, key mapping, safe reading, errors.

Fake checkpoints come from the key layouts in ``fixtures/`` (written from the reference module
structure by ``fixtures/make_reference_keys.py``, not from this project's conversion); the
converted models are compared with the reference forward pass in ``reference_fakes.py``.
"""

from __future__ import annotations

import fractions
import importlib.util
import subprocess
import sys

import numpy as np
import pytest
import torch
from reference_fakes import (
    FIXTURES,
    daformer_conv1_head_forward,
    daformer_head_forward,
    dlv2_head_forward,
    fake_checkpoint,
    fake_network,
    layout,
    mit_forward,
    save_fake,
    segformer_head_forward,
)

from duda.errors import CheckpointError, ConfigError
from duda.loading import load_inference_model
from duda.models import build_model, count_parameters
from duda.models import reference_checkpoint as rc
from duda.models.factory import RECIPES

TINY_HEADS = (1, 1, 2, 4)  # num_heads of daformer_mit_tiny / segformer_mit_tiny (not in the weights)


def _generator():
    spec = importlib.util.spec_from_file_location("make_reference_keys", FIXTURES / "make_reference_keys.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ours(model, *names: str) -> torch.Tensor:
    """The first of ``names`` that the installed model has (transformers 5.x / 4.x layouts)."""
    state = model.state_dict()
    for n in names:
        if n in state:
            return state[n]
    raise KeyError(names)


# ----------------------------------------------------------------------------- fixtures


def test_fixtures_match_their_generator_and_name_their_sources():
    generated = _generator().layouts()
    assert set(generated) == {p.name.removesuffix("_keys.json") for p in FIXTURES.glob("*_keys.json")}
    for name, expected in generated.items():
        stored = layout(name)
        assert stored["keys"] == expected["keys"], name
        assert stored["derived_from"] and all(
            src["file"] and src["classes"] for src in stored["derived_from"]
        )


def test_daformer_mitb5_parameter_count_equals_the_reference_count():
    params = layout("daformer_mitb5")["params"]
    assert params["decode_head"] == params["decode_head_by_hand"] == 3_712_275
    with torch.device("meta"):
        model = build_model("daformer_mitb5", num_classes=19)
    assert count_parameters(model.head) == params["decode_head"]
    assert count_parameters(model.backbone) == params["backbone"]


def test_daformer_mitb5_layout_maps_onto_our_model_shape_for_shape():
    net = fake_network("daformer_mitb5", device="meta")
    arch = rc.infer_architecture(net, "b5")
    assert (arch.name, arch.num_classes, arch.overrides) == ("daformer_mitb5", 19, {})
    with torch.device("meta"):
        model = build_model("daformer_mitb5", num_classes=19)
    rc.check_fits(model.state_dict(), rc.convert_network(net, arch, model, "b5"), "b5")


@pytest.mark.parametrize("variant", ["b0", "b1", "b2", "b3", "b4", "b5"])
@pytest.mark.parametrize("head", ["daformer", "segformer"])
def test_every_mit_variant_and_head_is_recognised(variant, head):
    from duda.models.mit import mit_variant

    gen = _generator()
    arch = mit_variant(variant)
    keys = gen.Keys()
    keys.mix_transformer("backbone", arch.embed_dims, arch.depths, arch.sr_ratios)
    width = 256 if head == "daformer" or variant in ("b0", "b1") else 768
    if head == "daformer":
        keys.daformer_head("decode_head", arch.embed_dims, width, width, 16)
    else:
        keys.segformer_head("decode_head", arch.embed_dims, width, 128, 16)
    net = {r["name"]: torch.empty(r["shape"], device="meta") for r in keys.rows}
    found = rc.infer_architecture(net, "x")
    assert (found.name, found.num_classes, found.overrides) == (f"{head}_mit{variant}", 16, {})


# ----------------------------------------------------------------------------- mapping


def _assert_same_as_reference(name: str, model_name: str, head_forward) -> None:
    ckpt = fake_checkpoint(name)
    loaded = rc.reference_inference_model(ckpt, "latest.pth", "student")
    assert loaded.model_name == model_name and loaded.num_classes == 19
    net = rc.network_state(ckpt["state_dict"], "model", "x")
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        ours = loaded.model(x)
        feats = mit_forward(net, x, TINY_HEADS)
        for a, b in zip(loaded.model.backbone(x), feats, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        ref = head_forward(net, feats)
    assert ours.shape == ref.shape == (2, 19, 16, 24)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_daformer_checkpoint_computes_what_the_reference_computes():
    _assert_same_as_reference("daformer_mit_tiny", "daformer_mit_tiny", daformer_head_forward)


def test_segformer_head_checkpoint_computes_what_the_reference_computes():
    # DAFormer's SegFormerHead concatenates the finest level first, ours the coarsest: reordered
    _assert_same_as_reference("segformer_mit_tiny", "segformer_mit_tiny", segformer_head_forward)


def test_daformer_conv1_head_becomes_our_segformer_head():
    _assert_same_as_reference("daformer_conv1_mit_tiny", "segformer_mit_tiny", daformer_conv1_head_forward)


def test_tensors_land_where_they_should():
    ckpt = fake_checkpoint("daformer_mit_tiny")
    sd = ckpt["state_dict"]
    model = rc.reference_inference_model(ckpt, "latest.pth", "model").model
    kv = sd["model.backbone.block2.0.attn.kv.weight"]  # (2*16, 16): key rows first, then value
    assert kv.shape == (32, 16)
    k = _ours(model, "backbone.encoder.stages.1.blocks.0.attention.k_proj.weight",
              "backbone.encoder.encoder.block.1.0.attention.self.key.weight")  # fmt: skip
    v = _ours(model, "backbone.encoder.stages.1.blocks.0.attention.v_proj.weight",
              "backbone.encoder.encoder.block.1.0.attention.self.value.weight")  # fmt: skip
    assert torch.equal(k, kv[:16]) and torch.equal(v, kv[16:])
    state = model.state_dict()
    embed = sd["model.decode_head.embed_layers.2.proj.weight"]  # nn.Linear (32, 32)
    assert state["head.embed.2.weight"].shape == (32, 32, 1, 1)
    assert torch.equal(state["head.embed.2.weight"][:, :, 0, 0], embed)
    assert torch.equal(
        state["head.fuse.branches.3.0.0.weight"],
        sd["model.decode_head.fuse_layer.aspp_modules.3.depthwise_conv.conv.weight"],
    )
    assert torch.equal(
        state["head.fuse.branches.2.1.1.running_var"],
        sd["model.decode_head.fuse_layer.aspp_modules.2.pointwise_conv.bn.running_var"],
    )
    assert torch.equal(
        state["head.fuse.bottleneck.0.weight"], sd["model.decode_head.fuse_layer.bottleneck.conv.weight"]
    )
    assert torch.equal(state["head.classifier.bias"], sd["model.decode_head.conv_seg.bias"])


def test_network_selection_and_aliases():
    ckpt = fake_checkpoint("daformer_mit_tiny")
    sd = ckpt["state_dict"]
    for which, prefix in [
        ("student", "model"),
        ("model", "model"),
        ("teacher", "ema_model"),
        ("ema_model", "ema_model"),
    ]:
        model = rc.reference_inference_model(ckpt, "latest.pth", which).model
        assert torch.equal(
            model.state_dict()["head.classifier.weight"], sd[f"{prefix}.decode_head.conv_seg.weight"]
        )
    only_model = fake_checkpoint("daformer_mit_tiny", networks=("model",))
    with pytest.raises(CheckpointError, match=r"no network 'teacher'.*\['model'\]"):
        rc.reference_inference_model(only_model, "latest.pth", "teacher")


def test_bare_segmentor_checkpoint_is_network_model():
    net = fake_network("daformer_mit_tiny")
    ckpt = {"meta": {}, "state_dict": net}
    assert rc.is_reference_checkpoint(ckpt) and rc.reference_networks(net) == ["model"]
    model = rc.reference_inference_model(ckpt, "plain.pth").model
    assert torch.equal(model.state_dict()["head.classifier.weight"], net["decode_head.conv_seg.weight"])


@pytest.mark.skipif("deeplabv2red_r_tiny" not in RECIPES, reason="needs the deeplabv2red_* models")
def test_deeplabv2_resnet_v1c_checkpoint():
    ckpt = fake_checkpoint("deeplabv2red_r_tiny")
    loaded = rc.reference_inference_model(ckpt, "latest.pth")
    assert loaded.model_name == "deeplabv2red_r_tiny"
    net = rc.network_state(ckpt["state_dict"], "model", "x")
    state = loaded.model.state_dict()
    assert torch.equal(state["backbone.stem.6.weight"], net["backbone.stem.6.weight"])
    with torch.no_grad():
        feats = loaded.model.backbone(torch.randn(1, 3, 64, 64))
        torch.testing.assert_close(loaded.model.head(feats), dlv2_head_forward(net, feats))
    full = fake_network("deeplabv2red_r101", device="meta")
    arch = rc.infer_architecture(full, "r101")
    assert (arch.name, arch.overrides) == ("deeplabv2red_r101", {})
    with torch.device("meta"):
        model = build_model("deeplabv2red_r101", num_classes=19)
    rc.check_fits(model.state_dict(), rc.convert_network(full, arch, model, "r101"), "r101")
    assert count_parameters(model) == sum(layout("deeplabv2red_r101")["params"].values())


# ----------------------------------------------------------------------------- errors


def test_hrda_checkpoint_is_refused_naming_its_keys(tmp_path):
    path = save_fake(tmp_path / "hrda" / "latest.pth", "hrda_daformer_mit_tiny")
    with pytest.raises(CheckpointError) as err:
        load_inference_model(path)
    msg = str(err.value)
    assert "HRDA" in msg and "not supported" in msg and str(path) in msg
    assert "decode_head.scale_attention.embed_layers" in msg and "decode_head.head.fuse_layer" in msg


def test_unknown_head_and_backbone_are_named():
    net = fake_network("daformer_mit_tiny")
    isa = {k: v for k, v in net.items() if not k.startswith("decode_head.fuse_layer")}
    isa["decode_head.fuse_layer.isa.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match="unsupported fusion"):
        rc.infer_architecture(isa, "isa.pth")
    odd = {"backbone.layers.0.weight": torch.zeros(1), **{k: v for k, v in net.items() if "decode_head" in k}}
    with pytest.raises(CheckpointError, match=r"odd.pth: unknown backbone \(backbone.\{layers\}\)"):
        rc.infer_architecture(odd, "odd.pth")
    pooled = dict(net, **{"decode_head.fuse_layer.image_pool.1.conv.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="image pooling"):
        rc.infer_architecture(pooled, "pool.pth")


def test_model_name_must_fit_the_weights():
    net = fake_network("segformer_mit_tiny")
    with pytest.raises(CheckpointError, match="model 'daformer_mitb5' is mit \\+ daformer"):
        rc.infer_architecture(net, "x", model_name="daformer_mitb5")
    with pytest.raises(ConfigError, match="unknown"):
        rc.infer_architecture(net, "x", model_name="nope")
    arch = rc.infer_architecture(net, "x", model_name="segformer_mitb0")  # tiny widths as overrides
    assert arch.name == "segformer_mitb0" and arch.overrides["embed_dims"] == [8, 16, 32, 64]


def test_missing_key_is_named():
    ckpt = fake_checkpoint("daformer_mit_tiny", networks=("model",))
    del ckpt["state_dict"]["model.backbone.block3.0.mlp.fc2.bias"]
    with pytest.raises(CheckpointError, match=r"missing: backbone.encoder.*mlp.(fc2|dense2).bias"):
        rc.reference_inference_model(ckpt, "latest.pth")


# ----------------------------------------------------------------------------- safe reading


def test_meta_classes_and_palette_are_used_and_numpy_meta_is_read_safely(tmp_path):
    names = [f"c{i}" for i in range(19)]
    palette = np.arange(57, dtype=np.int64).reshape(19, 3)  # a numpy array in meta: not plain data
    meta = {"CLASSES": tuple(names), "PALETTE": palette, "seed": np.int64(3), "config": "cfg text"}
    path = save_fake(tmp_path / "latest.pth", "daformer_mit_tiny", meta=meta)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path, weights_only=True)  # what a plain weights_only load says
    loaded = load_inference_model(path)
    assert loaded.classes == names and loaded.palette[18].tolist() == [54, 55, 56]


def test_meta_without_classes_falls_back_to_cityscapes():
    classes, palette, notes = rc.reference_labels({"config": "x"}, 19)
    assert classes[0] == "road" and palette.shape == (19, 3) and "Cityscapes" in notes[0]
    classes, _, notes = rc.reference_labels({"CLASSES": ("a", "b")}, 3)  # wrong length: ignored
    assert classes == ["class_0", "class_1", "class_2"] and notes


def test_pickled_object_in_meta_is_refused_with_a_strip_command(tmp_path):
    path = save_fake(
        tmp_path / "latest.pth",
        "daformer_mit_tiny",
        meta={"CLASSES": ("a",) * 19, "x": fractions.Fraction(1, 3)},
    )
    with pytest.raises(CheckpointError) as err:
        load_inference_model(path)
    msg = str(err.value)
    assert "fractions.Fraction" in msg and "weights_only=True" in msg and "python -c" in msg
    command = msg.split("\n  ", 1)[1]
    # the command is meant for a trusted file; it keeps the weights and CLASSES/PALETTE only
    subprocess.run(
        command.replace("python -c", f"{sys.executable} -c", 1), shell=True, check=True, cwd=tmp_path
    )
    stripped = tmp_path / "latest_weights.pth"
    ckpt = torch.load(stripped, weights_only=True)
    assert set(ckpt) == {"state_dict", "meta"} and ckpt["meta"] == {"CLASSES": ["a"] * 19}
    assert load_inference_model(stripped).classes == ["a"] * 19


def test_not_a_checkpoint_is_named(tmp_path):
    bad = tmp_path / "latest.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="latest.pth: not a readable checkpoint"):
        load_inference_model(bad)
    other = tmp_path / "other.pth"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match="neither a duda training checkpoint"):
        load_inference_model(other)


def test_folder_with_latest_pth_is_found(tmp_path):
    save_fake(tmp_path / "run" / "latest.pth", "daformer_mit_tiny")
    assert load_inference_model(tmp_path / "run").model_name == "daformer_mit_tiny"


def test_convert_writes_a_deploy_folder_that_predicts_the_same(tmp_path):
    path = save_fake(tmp_path / "latest.pth", "segformer_mit_tiny")
    result = rc.convert_reference_checkpoint(path, tmp_path / "deploy", network="teacher")
    assert result.network == "ema_model" and result.arch.name == "segformer_mit_tiny"
    assert any("conv_seg" in n for n in result.notes) and any("Cityscapes" in n for n in result.notes)
    deployed = load_inference_model(tmp_path / "deploy")
    direct = load_inference_model(path, which="teacher")
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        assert torch.equal(deployed.model(x), direct.model(x))
    assert deployed.resize == (1024, 512) and deployed.classes[0] == "road"
    info = (tmp_path / "deploy" / "model.json").read_text()
    assert '"network": "ema_model"' in info and "latest.pth" in info

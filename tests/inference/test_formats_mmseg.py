"""Published DAFormer / MIC (mmseg) checkpoints: recognition, key mapping, safe reading, errors.

Fake checkpoints come from the key layouts in ``fixtures/`` (written from the reference module
structure by ``fixtures/make_reference_keys.py``, not from this project's conversion); the
converted models are compared with the reference forward pass in ``reference_fakes.py``.
"""

from __future__ import annotations

import fractions
import importlib.util
import logging
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
    fake_hrda_checkpoint,
    fake_hrda_network,
    fake_network,
    hrda_config_text,
    hrda_forward,
    layout,
    mit_forward,
    save_fake,
    segformer_head_forward,
)

from duda.errors import CheckpointError, ConfigError
from duda.inference import load_inference_model
from duda.inference.formats import mmseg as rc
from duda.models import build_model, count_parameters
from duda.models.factory import RECIPES
from duda.models.hrda import HRDAModel, MultiResSpec, build_attention_head, build_hrda_model

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


# ----------------------------------------------------------------------------- HRDA, MIC(HRDA)

TINY_HRDA = MultiResSpec(hr_crop_size=(32, 32), attention_channels=16)  # hrda_config_text() + weights


class _Warnings(logging.Handler):
    """Collects the ``duda`` logger's warnings (whatever its propagation after a CLI test)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def duda_warnings():
    handler = _Warnings()
    logging.getLogger("duda").addHandler(handler)
    yield handler.messages
    logging.getLogger("duda").removeHandler(handler)


def test_hrda_checkpoint_is_recognised_with_its_config_settings():
    ckpt = fake_hrda_checkpoint(config=hrda_config_text())
    net = rc.network_state(ckpt["state_dict"], "teacher", "x")
    arch = rc.infer_architecture(net, "x", meta=ckpt["meta"])
    assert (arch.name, arch.num_classes, arch.overrides) == ("daformer_mit_tiny", 19, {})
    assert MultiResSpec.from_dict(arch.hrda) == TINY_HRDA and not arch.warnings
    assert "HRDAHead over DAFormerHead (sep-ASPP fusion)" in arch.head and "16 channels" in arch.head
    assert any("read from meta['config']" in n and "hr_crop_size" in n and "scales" in n for n in arch.notes)
    assert any("sliding windows of [1024, 1024] every [512, 512]" in n for n in arch.notes)
    # the look-alike entries of other top-level dicts (data.crop_size, data.scales) are not read
    assert rc.reference_config_model(ckpt["meta"])["hr_crop_size"] == [32, 32]
    # every head weight has exactly one place (one converted tensor each), and the whole fits strictly
    with torch.device("meta"):
        model = build_hrda_model(build_model("daformer_mit_tiny", num_classes=19), TINY_HRDA)
    converted = rc.convert_network(net, arch, model, "x")
    assert sum(k.startswith("head.") for k in converted) == sum(k.startswith("decode_head.") for k in net)
    rc.check_fits(model.state_dict(), converted, "x")
    assert any(k.startswith("head.attention.fuse.0.") for k in converted)


@pytest.mark.parametrize("classwise", [True, False])
@pytest.mark.parametrize("slide", [True, False])
def test_hrda_checkpoint_computes_what_the_reference_computes(classwise, slide):
    config = hrda_config_text(attention_classwise=classwise, hr_slide_inference=slide)
    ckpt = fake_hrda_checkpoint(networks=("model",), classwise=classwise, config=config)
    loaded = rc.reference_inference_model(ckpt, "latest.pth", "student")
    model = loaded.model
    assert isinstance(model, HRDAModel) and loaded.model_name == "daformer_mit_tiny"
    assert model.mr.attention_classwise is classwise and model.mr.hr_slide_inference is slide
    assert loaded.resize == (2048, 1024) and loaded.spec["hrda"] == model.mr.to_dict()
    net = rc.network_state(ckpt["state_dict"], "model", "x")
    x = torch.randn(2, 3, 64, 96)  # 64x96 at crop 32: 3x5 overlapping detail windows
    with torch.no_grad():
        ours = model(x)
        ref = hrda_forward(net, x, TINY_HEADS, crop=(32, 32), slide=slide)
    assert ours.shape == ref.shape == (2, 19, 16, 24)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_hrda_model_equals_a_directly_built_one_with_the_same_weights():
    ckpt = fake_hrda_checkpoint(networks=("model",), config=hrda_config_text())
    loaded = rc.reference_inference_model(ckpt, "latest.pth").model
    # the single-scale path (checked against the reference above) on backbone.* + decode_head.head.*
    net = rc.network_state(ckpt["state_dict"], "model", "x")
    plain = {
        k.replace("decode_head.head.", "decode_head."): v
        for k, v in net.items()
        if "scale_attention" not in k
    }
    base, _ = rc.build_reference_model(plain, "plain")
    attention = build_attention_head(base, 19, 16)
    attention.load_state_dict(loaded.head.attention.state_dict())
    direct = build_hrda_model(base, TINY_HRDA, attention_head=attention).eval()
    assert direct.state_dict().keys() == loaded.state_dict().keys()
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in direct.state_dict().items())
    assert torch.equal(
        loaded.state_dict()["head.attention.classifier.weight"],
        net["decode_head.scale_attention.conv_seg.weight"],
    )
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(direct(x), loaded(x))


def test_hrda_without_config_assumes_the_published_settings_and_warns(tmp_path, duda_warnings):
    path = tmp_path / "run" / "latest.pth"
    path.parent.mkdir()
    torch.save(fake_hrda_checkpoint(), path)
    loaded = load_inference_model(path.parent, which="teacher")
    assert isinstance(loaded.model, HRDAModel)
    assert loaded.model.mr == MultiResSpec(attention_channels=16)  # published, + what the weights show
    assert any("[ema_model]" in m and "published GTA->Cityscapes HRDA settings" in m for m in duda_warnings)
    # a bare (un-prefixed) HRDA segmentor is network "model"
    net = fake_hrda_network()
    bare = {"meta": {"config": hrda_config_text()}, "state_dict": net}
    assert rc.is_reference_checkpoint(bare) and rc.reference_networks(net) == ["model"]
    model = rc.reference_inference_model(bare, "plain.pth").model
    assert model.mr == TINY_HRDA and torch.equal(
        model.state_dict()["head.seg.classifier.weight"], net["decode_head.head.conv_seg.weight"]
    )


def test_hrda_missing_and_extra_keys_are_named():
    ckpt = fake_hrda_checkpoint(networks=("model",))
    del ckpt["state_dict"]["model.decode_head.scale_attention.fuse_layer.bn.running_var"]
    with pytest.raises(CheckpointError, match=r"missing: head\.attention\.fuse\.1\.running_var"):
        rc.reference_inference_model(ckpt, "latest.pth")
    ckpt = fake_hrda_checkpoint(networks=("model",))
    ckpt["state_dict"]["model.decode_head.scale_attention.fuse_layer.extra.weight"] = torch.zeros(1)
    with pytest.raises(
        CheckpointError,
        match=r"no place in HRDA daformer_mit_tiny: decode_head\.scale_attention\.fuse_layer\.extra\.weight",
    ):
        rc.reference_inference_model(ckpt, "latest.pth")
    ckpt = fake_hrda_checkpoint(networks=("model",))
    ckpt["state_dict"]["model.decode_head.conv_seg.weight"] = torch.zeros(19, 32, 1, 1)  # HRDAHead deletes it
    with pytest.raises(
        CheckpointError, match=r"outside decode_head\.head\.\* .*: decode_head\.conv_seg\.weight"
    ):
        rc.reference_inference_model(ckpt, "latest.pth")
    ckpt = fake_hrda_checkpoint(networks=("model",))
    del ckpt["state_dict"]["model.decode_head.scale_attention.fuse_layer.conv.weight"]
    with pytest.raises(
        CheckpointError, match=r"without decode_head\.scale_attention\.fuse_layer\.conv\.weight"
    ):
        rc.reference_inference_model(ckpt, "latest.pth")


def test_hrda_config_is_read_as_data_never_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sneaky = hrda_config_text(extra_model=",\n    blur_hr_crop=__import__('pathlib').Path('ran').touch()")
    ckpt = fake_hrda_checkpoint(networks=("model",), config=sneaky)
    arch = rc.infer_architecture(rc.network_state(ckpt["state_dict"], "model", "x"), "x", meta=ckpt["meta"])
    assert not (tmp_path / "ran").exists()
    assert any("['blur_hr_crop'] not plain data" in w for w in arch.warnings)
    assert MultiResSpec.from_dict(arch.hrda) == TINY_HRDA  # the rest is still read
    broken = fake_hrda_checkpoint(networks=("model",), config="model = dict(type='HRDAEncoderDecoder'")
    arch = rc.infer_architecture(
        rc.network_state(broken["state_dict"], "model", "x"), "x", meta=broken["meta"]
    )
    assert MultiResSpec.from_dict(arch.hrda) == MultiResSpec(attention_channels=16) and arch.warnings
    odd = fake_hrda_checkpoint(networks=("model",), config=hrda_config_text(scales=(2, 1)))
    with pytest.raises(
        CheckpointError, match=r"x: the HRDA settings of meta\['config'\].*detail scale must be 1"
    ):
        rc.infer_architecture(rc.network_state(odd["state_dict"], "model", "x"), "x", meta=odd["meta"])


def test_hrda_fixed_attention_comes_from_the_config():
    ckpt = fake_hrda_checkpoint(networks=("model",))
    ckpt["state_dict"] = {k: v for k, v in ckpt["state_dict"].items() if "scale_attention" not in k}
    with pytest.raises(CheckpointError, match="without a scale-attention head.*fixed_attention"):
        rc.reference_inference_model(ckpt, "latest.pth")
    ckpt["meta"]["config"] = hrda_config_text(extra_head=",\n        fixed_attention=0.5")
    model = rc.reference_inference_model(ckpt, "latest.pth").model
    assert model.head.attention is None and model.mr.fixed_attention == 0.5
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 19, 16, 16)


def test_hrda_convert_round_trip(tmp_path):
    path = tmp_path / "latest.pth"
    torch.save(fake_hrda_checkpoint(config=hrda_config_text()), path)
    result = rc.convert_reference_checkpoint(path, tmp_path / "deploy", network="teacher")
    assert result.arch.hrda is not None and any("read from meta['config']" in n for n in result.notes)
    deployed = load_inference_model(tmp_path / "deploy")
    direct = load_inference_model(path, which="teacher")
    assert isinstance(deployed.model, HRDAModel) and deployed.model.mr == TINY_HRDA
    assert deployed.spec == direct.spec and deployed.resize == (2048, 1024)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(deployed.model(x), direct.model(x))


@pytest.mark.skipif("deeplabv2red_r_tiny" not in RECIPES, reason="needs the deeplabv2red_* models")
def test_hrda_over_deeplabv2_maps_both_aspp_classifiers():
    seg, att = fake_network("deeplabv2red_r_tiny", seed=0), fake_network("deeplabv2red_r_tiny", seed=1)
    net = {k: v for k, v in seg.items() if k.startswith("backbone.")}
    net |= {k.replace("decode_head.", "decode_head.head."): v for k, v in seg.items() if "decode_head" in k}
    net |= {
        k.replace("decode_head.", "decode_head.scale_attention."): v
        for k, v in att.items()
        if "decode_head" in k
    }
    model, arch = rc.build_reference_model(net, "dl", meta={"config": hrda_config_text()})
    assert isinstance(model, HRDAModel) and "HRDAHead over DLV2Head" in arch.head
    state = model.state_dict()
    assert torch.equal(
        state["head.attention.branches.1.weight"], att["decode_head.aspp_modules.1.conv.weight"]
    )
    assert torch.equal(state["head.seg.branches.0.bias"], seg["decode_head.aspp_modules.0.conv.bias"])
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 19, 8, 8)  # output stride 8

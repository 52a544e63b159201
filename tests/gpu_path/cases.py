"""The cases run on the emulated CUDA device (in the child process of ``runner.py``).

Each case is a function of a :class:`Context` that raises (plain ``assert``) when the CUDA path
misbehaves and returns JSON-ready data for the tests in ``test_gpu_path.py`` (host-sync counts).
Training cases drive the real trainer (``duda.engine.trainer.train``) with
``train.device: cuda`` and ``train.bf16: true`` on tiny models and a tiny synthetic benchmark;
an observer wraps the trainer's step to record where every tensor lived, which forwards ran
under CUDA autocast, and the host syncs of each step.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

CASES: dict[str, Callable[[Context], dict]] = {}
MISMATCH = "Expected all tensors to be on the same device"
CUDA = "cuda:0"

#: tiny DAFormer networks (as tests/engine/tinyrun.py); DUDA's large network is wider
LARGE = {"name": "daformer_mit_tiny", "arch": {"embed_dims": [8, 16, 32, 32], "head_channels": 16}}


def case(fn: Callable[[Context], dict]) -> Callable[[Context], dict]:
    CASES[fn.__name__] = fn
    return fn


@dataclass
class Context:
    emu: Any  # emulator.Emulator
    tmp: Path
    _synth: Path | None = None

    @property
    def synth(self) -> Path:
        """A tiny synthetic benchmark (source in GTA layout, target in Cityscapes layout)."""
        if self._synth is None:
            from duda.data.prepare import prepare_dataset
            from duda.data.synth import generate_benchmark

            root = self.tmp / "synth"
            generate_benchmark(
                root, seed=0, size=(64, 128), n_source=4, n_target_train=2, n_target_val=1, domains=("real",)
            )
            prepare_dataset("gta", root / "source", progress=False, log=lambda _: None)
            prepare_dataset("cityscapes", root / "real", progress=False, log=lambda _: None)
            self._synth = root
        return self._synth

    def config(self, name: str, method: str, overrides: dict | None = None, model: dict | None = None):
        """A tiny training config on the emulated GPU with bf16 autocast, ``work_dir`` fresh."""
        from tinyrun import deep_update, tiny_config

        from duda.config import config_from_dict

        work = self.tmp / name
        shutil.rmtree(work, ignore_errors=True)
        base = {"train": {"iters": 2, "eval_every": 0, "ckpt_every": 0, "device": "cuda", "bf16": True}}
        data = tiny_config(self.synth, work, method, deep_update(base, overrides or {}))
        if model is not None:
            data["model"] = model
        return config_from_dict(data)


# --------------------------------------------------------------------------- observing steps
@dataclass
class Forward:
    network: str
    device: str
    dtype: str
    autocast: bool


@dataclass
class StepRecord:
    step: int
    batch_devices: dict[str, str] = field(default_factory=dict)
    param_devices: dict[str, list[str]] = field(default_factory=dict)
    forwards: list[Forward] = field(default_factory=list)
    losses: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    syncs: dict[str, int] = field(default_factory=dict)
    sites: list[tuple[str, str, str, int]] = field(default_factory=list)

    def summary(self) -> dict:
        from emulator import SYNC_KINDS

        return {
            "step": self.step,
            "syncs": {k: self.syncs[k] for k in SYNC_KINDS},
            "total": sum(self.syncs[k] for k in SYNC_KINDS),
            "sites": [list(s) for s in self.sites],
            "losses": self.losses,
            "events": self.events,
            "extra_forwards": sum(f.network.startswith("extra_teacher") for f in self.forwards),
        }


def _tensors(out: Any) -> list[torch.Tensor]:
    """The tensors of a network's output (a tensor, a tuple / named tuple, a dict)."""
    if isinstance(out, torch.Tensor):
        return [out]
    values = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else ()
    return [t for v in values for t in _tensors(v)]


@contextlib.contextmanager
def observe_steps(emu) -> Iterator[list[StepRecord]]:
    """Wrap ``duda.engine.trainer._Run.step``: per step, the devices of the batch and of every
    network's parameters (DUDA's extra teachers included), each network forward (device, dtype,
    CUDA autocast on?), the losses, the events and the host syncs (the step = the method's
    forward/backward, the finite check, the optimiser steps)."""
    from duda.engine import trainer

    records: list[StepRecord] = []
    original = trainer._Run.step

    def step(run, index: int, batch: dict):
        rec = StepRecord(index)
        rec.batch_devices = {k: str(v.device) for k, v in batch.items() if isinstance(v, torch.Tensor)}
        nets = dict(run.method.networks)
        for i, (net, _) in enumerate(getattr(run.method, "extra_teachers", [])):  # DUDA's frozen extras
            nets[f"extra_teacher{i}"] = net
        rec.param_devices = {n: sorted({str(p.device) for p in net.parameters()}) for n, net in nets.items()}

        def hook(name):
            def record(module, args, out):
                autocast = torch.is_autocast_enabled("cuda")
                for t in _tensors(out):
                    rec.forwards.append(Forward(name, str(t.device), str(t.dtype), autocast))

            return record

        handles = [net.register_forward_hook(hook(n)) for n, net in nets.items()]
        try:
            with emu.count_syncs() as count:
                out = original(run, index, batch)
        finally:
            for h in handles:
                h.remove()
        rec.losses = sorted(out[0]["losses"])
        rec.events = sorted(out[0].get("events", {}))
        rec.syncs = count.counts
        rec.sites = sorted(
            ((k, op, where, n) for (k, op, where), n in count.sites.items()), key=lambda s: -s[3]
        )
        records.append(rec)
        return out

    trainer._Run.step = step
    try:
        yield records
    finally:
        trainer._Run.step = original


def check_cuda_steps(records: list[StepRecord], steps: list[int]) -> None:
    """Every recorded step ran on the emulated GPU: batch and parameters on cuda:0, every network
    forward on cuda:0 and under CUDA autocast, with bf16 results."""
    assert [r.step for r in records] == steps, [r.step for r in records]
    for r in records:
        assert r.batch_devices and set(r.batch_devices.values()) == {CUDA}, r.batch_devices
        for name, devices in r.param_devices.items():
            assert devices == [CUDA], (name, devices)
        assert r.forwards, f"step {r.step}: no network forward was observed"
        assert {f.device for f in r.forwards} == {CUDA}, r.forwards
        assert all(f.autocast for f in r.forwards), f"step {r.step}: a forward ran without CUDA autocast"
        assert any(f.dtype == "torch.bfloat16" for f in r.forwards), f"step {r.step}: no bf16 output"


def train_on_cuda(ctx: Context, cfg, steps: list[int]) -> tuple[Any, list[StepRecord]]:
    """Train ``cfg`` with the real trainer, observing every step; checks the run finished, wrote
    its model and evaluated every network (on the device) at the end."""
    from duda.engine.trainer import train

    with observe_steps(ctx.emu) as records:
        result = train(cfg, progress=False)
    check_cuda_steps(records, steps)
    assert result.step == cfg.train.iters and not result.stopped_early
    assert result.model_dir is not None and (result.model_dir / "model.safetensors").is_file()
    assert result.metrics, "no final evaluation"
    for name, r in result.metrics.items():
        assert 0.0 <= r["miou"] <= 1.0, (name, r["miou"])
    return result, records


def step_data(records: list[StepRecord]) -> dict:
    return {"steps": [r.summary() for r in records]}


# --------------------------------------------------------------------------- the emulator itself
@case
def emulator_takes_the_cuda_path(ctx: Context) -> dict:
    """model.to("cuda"), forward, backward, AdamW (its CUDA foreach implementation), autocast
    bf16; a CPU/CUDA mix, a CPU generator in a CUDA op and .numpy() of a CUDA tensor fail as on
    a GPU; values are those of the same computation on the CPU."""
    from torch import nn

    assert torch.cuda.is_available() and torch.cuda.device_count() == 1 and torch.cuda.is_bf16_supported()

    def net():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))

    x = torch.randn(2, 3, 8, 8)
    runs = {}
    for device in ("cpu", "cuda"):
        model = net().to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        loss = model(x.to(device)).square().mean()
        loss.backward()
        grads = [p.grad.detach().cpu().clone() for p in model.parameters()]
        opt.step()
        runs[device] = (model, loss.detach().cpu(), grads, [p.detach().cpu() for p in model.parameters()])
    model, loss, grads, params = runs["cuda"]
    assert all(p.is_cuda and p.device == torch.device(CUDA) for p in model.parameters())
    assert all(type(p) is nn.Parameter for p in model.parameters())
    assert torch.equal(loss, runs["cpu"][1])
    assert all(torch.equal(a, b) for a, b in zip(grads, runs["cpu"][2], strict=True))
    # AdamW takes its foreach (multi-tensor) path for CUDA parameters, the for-loop one on the CPU
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(params, runs["cpu"][3], strict=True))
    import torch.optim.adam as adam_module

    seen = []
    original = adam_module._multi_tensor_adam

    def spy(params, *args, **kwargs):
        seen.append(params[0].device)
        return original(params, *args, **kwargs)

    adam_module._multi_tensor_adam = spy
    try:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        model(x.to("cuda")).mean().backward()
        opt.step()
    finally:
        adam_module._multi_tensor_adam = original
    assert seen == [torch.device(CUDA)], f"AdamW did not take its foreach path for CUDA parameters: {seen}"

    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = model(x.to("cuda"))
        assert torch.is_autocast_enabled("cuda") and out.dtype == torch.bfloat16 and out.is_cuda
        assert (out.float() @ torch.ones(8, 4, device="cuda")).dtype == torch.bfloat16  # matmul autocasts
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x.to("cuda")).dtype == torch.float32  # CPU autocast leaves CUDA ops alone

    def fails(fn, message: str) -> None:
        try:
            fn()
        except (RuntimeError, TypeError) as exc:
            assert message in str(exc), str(exc)
        else:
            raise AssertionError(f"expected an error containing {message!r}")

    gpu = torch.ones(2, 3, device="cuda")
    fails(lambda: gpu * torch.ones(2, 3), MISMATCH)
    fails(lambda: torch.cat([gpu, torch.ones(2, 3)]), MISMATCH)
    fails(
        lambda: nn.functional.cross_entropy(
            torch.zeros(1, 3, device="cuda"), torch.zeros(1, dtype=torch.long)
        ),
        MISMATCH,
    )
    fails(lambda: model(x), MISMATCH)  # CPU input, CUDA weights
    fails(
        lambda: torch.rand(3, device="cuda", generator=torch.Generator().manual_seed(0)),
        "device type for generator",
    )
    fails(lambda: gpu.numpy(), "can't convert cuda:0 device type tensor to numpy")
    # what CUDA kernels accept: 0-dim CPU tensors as scalars, CPU index tensors, copies
    assert torch.equal((gpu * torch.tensor(2.0)).cpu(), torch.full((2, 3), 2.0))
    assert torch.equal(gpu[torch.tensor([1])].cpu(), torch.ones(1, 3))
    assert gpu.cpu().device.type == "cpu" and torch.ones(1).to("cuda").is_cuda
    return {}


@case
def emulator_counts_host_syncs(ctx: Context) -> dict:
    """Each kind of host sync is counted once, and nothing else is: the sync budgets of the
    training steps cannot be met by a counter that does not count."""
    emu = ctx.emu
    gpu = torch.arange(6.0, device="cuda")
    pinned = torch.ones(6).pin_memory()
    assert pinned.is_pinned() and not torch.ones(6).is_pinned() and not gpu.is_pinned()
    expected = {
        "item": lambda: gpu.sum().item(),
        "device_to_host": lambda: gpu.cpu(),
        "host_to_device": lambda: torch.ones(6).to("cuda"),
        "data_shape": lambda: gpu.nonzero(),
        "explicit": lambda: torch.cuda.synchronize(),
        "async_copy": lambda: pinned.to("cuda", non_blocking=True),
    }
    for kind, fn in expected.items():
        with emu.count_syncs() as c:
            fn()
        others = {k: v for k, v in c.counts.items() if k not in (kind, "ops") and v}
        assert c.counts[kind] == 1 and not others, (kind, c.counts)
    with emu.count_syncs() as c:
        float(gpu[0])
        bool(gpu[1] > 0)
        gpu[gpu > 2].sum()  # a boolean mask: the output size depends on the data
        gpu.tolist()
        (gpu * 2 + 1).exp_()  # no sync
    assert (c.counts["item"], c.counts["data_shape"], c.counts["device_to_host"]) == (2, 1, 1), c.counts
    assert c.total == 4
    assert sum(n for (kind, _, _), n in c.sites.items() if kind != "async_copy") == c.total, c.sites
    return {}


# --------------------------------------------------------------------------- planted bugs
@case
def planted_cpu_mask_fails_the_cuda_step(ctx: Context) -> dict:
    """A ClassMix mask made on the CPU and mixed into CUDA images must stop the emulated step with
    the device-mismatch error, while the same planted code trains on the CPU: the harness cannot
    silently turn into a no-op."""
    from duda.engine.trainer import train
    from duda.methods import self_training

    original = self_training.classmix_masks

    def cpu_masks(src_gt, gen, *args, **kwargs):
        return original(src_gt, gen, *args, **kwargs).cpu()

    self_training.classmix_masks = cpu_masks
    try:
        cpu_run = train(
            ctx.config("planted_cpu", "daformer", {"train": {"iters": 1, "device": "cpu", "bf16": False}}),
            progress=False,
        )
        assert cpu_run.step == 1
        try:
            train(ctx.config("planted_cuda", "daformer", {"train": {"iters": 1}}), progress=False)
        except RuntimeError as exc:
            assert MISMATCH in str(exc), str(exc)
        else:
            raise AssertionError("the step with a CPU ClassMix mask ran on the emulated GPU")
    finally:
        self_training.classmix_masks = original
    return {}


@case
def planted_cpu_generator_fails_the_cuda_step(ctx: Context) -> dict:
    """Random draws taken directly on the device with the step's CPU generator fail as on a GPU
    ("Expected a 'cuda' device type for generator"); duda draws on the generator's device."""
    from duda.engine.trainer import train
    from duda.uda import _checks, masking

    def on_device(shape, generator, device):
        return torch.rand(tuple(shape), generator=generator, device=device)

    original = masking.uniform
    masking.uniform = on_device
    try:
        try:
            train(ctx.config("planted_gen", "mic", {"train": {"iters": 1}}), progress=False)
        except RuntimeError as exc:
            assert "device type for generator but found 'cpu'" in str(exc), str(exc)
        else:
            raise AssertionError("a CPU generator drew directly on the emulated GPU")
    finally:
        masking.uniform = original
    assert masking.uniform is _checks.uniform
    return {}


# --------------------------------------------------------------------------- training steps
def _method_case(ctx: Context, name: str, method: str, overrides: dict | None = None) -> dict:
    cfg = ctx.config(name, method, overrides)
    result, records = train_on_cuda(ctx, cfg, [0, 1])
    expected = {"student"} if method == "source_only" else {"student", "teacher"}
    assert set(result.metrics) == expected, set(result.metrics)
    return step_data(records)


@case
def train_source_only(ctx: Context) -> dict:
    return _method_case(ctx, "source_only", "source_only")


@case
def train_daformer(ctx: Context) -> dict:
    data = _method_case(ctx, "daformer", "daformer", {"train": {"channels_last": True, "debug_every": 2}})
    assert (ctx.tmp / "daformer" / "debug" / "iter_0000002.png").is_file()  # visuals copied to the host
    return data


@case
def train_mic(ctx: Context) -> dict:
    return _method_case(ctx, "mic", "mic")


def _hrda(extra: dict | None = None) -> dict:
    from tinyrun import HRDA_TINY, deep_update

    # sliding-window evaluation at the end (the HRDA configs' test mode)
    slide = {"train": {"eval_mode": "slide", "eval_crop": [64, 64], "eval_stride": [32, 32]}}
    return deep_update(deep_update(deep_update({}, HRDA_TINY), slide), extra or {})


@case
def train_hrda(ctx: Context) -> dict:
    return _method_case(ctx, "hrda", "hrda", _hrda())


@case
def train_mic_hrda(ctx: Context) -> dict:
    return _method_case(ctx, "mic_hrda", "mic_hrda", _hrda())


def _duda_case(ctx: Context, name: str, overrides: dict, model: dict | None = None) -> dict:
    """DUDA with stage 1 = step 0 and stage 2 = steps 1 (I'_c computed) and 2."""
    from tinyrun import deep_update

    base = {"train": {"iters": 3}, "method": {"duda": {"large": LARGE, "stage1_iters": 1}}}
    cfg = ctx.config(name, "duda", deep_update(base, overrides), model)
    result, records = train_on_cuda(ctx, cfg, [0, 1, 2])
    assert set(result.metrics) == {"student", "teacher", "large"}, set(result.metrics)
    stage1, stage2 = records[0], records[1:]
    assert "lambda" in stage1.losses and any(f.network == "large" for f in stage1.forwards), stage1.losses
    for r in stage2:  # stage 2: S alone learns; L is no longer run
        assert "lambda" not in r.losses and not any(f.network == "large" for f in r.forwards), r.losses
    assert any(f.network == "student" for r in records for f in r.forwards)
    return step_data(records)


@case
def train_duda_daformer(ctx: Context) -> dict:
    return _duda_case(ctx, "duda_daformer", {"method": {"base": "daformer"}})


@case
def train_duda_mic(ctx: Context) -> dict:
    return _duda_case(ctx, "duda_mic", {"method": {"base": "mic"}})


@case
def train_duda_mic_hrda(ctx: Context) -> dict:
    # a single-resolution small student at half scale under the multi-resolution networks
    return _duda_case(
        ctx, "duda_mic_hrda", _hrda({"method": {"base": "mic_hrda", "duda": {"small_input_scale": 0.5}}})
    )


@case
def train_duda_multi_teacher(ctx: Context) -> dict:
    """Stage 2 fuses T with an extra frozen teacher loaded from a deploy folder (two teachers,
    weighted), with I'_c refreshed every stage-2 step; L starts from that folder's weights
    (method.duda.large_init)."""
    from duda.data.datasets import build_dataset_from_config
    from duda.inference import dataset_meta, save_deploy_model
    from duda.models import build_network

    cfg = ctx.config("duda_multi_probe", "source_only")
    torch.manual_seed(1)
    extra = build_network(LARGE["name"], 19, arch=LARGE["arch"])
    meta = dataset_meta(build_dataset_from_config(cfg.data.val))
    folder = save_deploy_model(ctx.tmp / "extra_teacher", extra, meta)
    teachers = [{"checkpoint": str(folder), "network": "student", "weight": 0.5}]
    data = _duda_case(
        ctx,
        "duda_multi_teacher",
        {
            "method": {
                "duda": {
                    "teachers": teachers,
                    "stage1_teacher_weight": 1.0,
                    "inconsistency_refresh": 1,
                    "large_init": str(folder),
                }
            }
        },
    )
    extra = [s for s in data["steps"] if s["step"] >= 1]
    assert all(s["extra_forwards"] > 0 for s in extra), extra  # the extra teacher ran in stage 2
    return data


@case
def train_duda_heterogeneous(ctx: Context) -> dict:
    """A large MiT teacher/student with a small CNN student (ResNet + DeepLabV3+, batch norm);
    soft targets in both stages and KD in both stages; debug pictures of the stage-2 step."""
    d = {"stage1_targets": "soft", "stage2_targets": "soft", "kd_stages": "both", "kd_weight": 1.0}
    data = _duda_case(
        ctx,
        "duda_heterogeneous",
        {"method": {"duda": d}, "train": {"debug_every": 3}},
        model={"name": "deeplabv3p_r_tiny"},
    )
    assert (ctx.tmp / "duda_heterogeneous" / "debug" / "iter_0000003.png").is_file()
    return data


@case
def train_resume_on_cuda(ctx: Context) -> dict:
    """A DUDA run stopped after its stage-1 step and resumed on the device (CPU checkpoint into
    CUDA networks and optimisers, I'_c state) ends with exactly the weights of a run that never
    stopped."""
    from duda.checkpoints import load_checkpoint
    from duda.engine.trainer import train

    overrides = {
        "train": {"iters": 3, "ckpt_every": 1},
        "method": {"duda": {"large": LARGE, "stage1_iters": 1}},
    }
    full = train(ctx.config("resume_full", "duda", overrides), progress=False)
    part_cfg = ctx.config("resume_part", "duda", overrides)
    assert train(part_cfg, progress=False, max_steps=2).step == 2
    with observe_steps(ctx.emu) as records:
        resumed = train(part_cfg, resume=True, progress=False)
    check_cuda_steps(records, [2])
    a, b = load_checkpoint(full.checkpoint), load_checkpoint(resumed.checkpoint)
    assert a["step"] == b["step"] == 3
    for net, weights in a["state"].items():
        for key, value in weights.items():
            assert torch.equal(value, b["state"][net][key]), (net, key)
    assert torch.equal(a["extra"]["inconsistency"], b["extra"]["inconsistency"])
    return {}


# --------------------------------------------------------------------------- data, evaluation, API
@case
def loader_pins_memory_for_cuda(ctx: Context) -> dict:
    """train.device cuda: the training and evaluation loaders pin their batches, and the batch
    goes to the device with non-blocking copies (no sync); train.device cpu: nothing is pinned
    even where CUDA is available."""
    from duda.engine.distributed import DistInfo
    from duda.engine.trainer import build_datasets, make_eval_loader, make_train_loader
    from duda.methods.base import to_device

    for device, pinned in (("cuda", True), ("cpu", False)):
        cfg = ctx.config(f"loader_{device}", "daformer", {"train": {"device": device}})
        src, tgt, val = build_datasets(cfg)
        loader = make_train_loader(cfg, src, tgt, 0, DistInfo(), device=torch.device(device))
        assert loader.pin_memory is pinned, (device, loader.pin_memory)
        batch = next(iter(loader))
        tensors = {k: v for k, v in batch.items() if isinstance(v, torch.Tensor)}
        assert tensors and all(v.is_pinned() is pinned for v in tensors.values()), device
        val_loader = make_eval_loader(cfg, val, cfg.data.val, device=torch.device(device))
        assert val_loader.pin_memory is pinned
        assert next(iter(val_loader))["img"].is_pinned() is pinned
        if device == "cuda":
            with ctx.emu.count_syncs() as c:
                on_gpu = to_device(batch, torch.device("cuda"))
            assert all(v.is_cuda for k, v in on_gpu.items() if k in tensors)
            assert c.total == 0 and c.counts["async_copy"] == len(tensors), c.counts
    return {}


def _eval_setup(ctx: Context):
    from duda.engine.trainer import build_datasets
    from duda.models import build_network

    cfg = ctx.config("eval_probe", "source_only")
    _, _, val = build_datasets(cfg)
    torch.manual_seed(2)
    model = build_network(LARGE["name"], 19, arch=LARGE["arch"]).eval()
    return cfg, val, model


@case
def evaluate_whole_and_slide(ctx: Context) -> dict:
    """Whole-image and sliding-window evaluation (with flip) on the device give the CPU's
    scores; with bf16 autocast it runs on the device too."""
    from duda.engine.trainer import make_eval_loader
    from duda.evaluation.evaluate import evaluate

    cfg, val, model = _eval_setup(ctx)
    loader = make_eval_loader(cfg, val, cfg.data.val, device=torch.device("cuda"))
    results = {}
    for mode, flip in (("whole", False), ("slide", True)):
        for device in ("cpu", "cuda"):
            model.to(device)
            r = evaluate(
                model, loader, 19, mode=mode, crop=(32, 32), stride=(24, 24), flip=flip, device=device,
                progress=False,
            )  # fmt: skip
            results[(mode, device)] = r.to_dict()
        assert results[(mode, "cpu")] == results[(mode, "cuda")], mode
        assert next(model.parameters()).is_cuda
        r = evaluate(
            model,
            loader,
            19,
            mode=mode,
            crop=(32, 32),
            stride=(24, 24),
            bf16=True,
            device="cuda",
            progress=False,
        )
        assert 0.0 <= r.miou <= 1.0
    return {}


@case
def segmenter_predicts_on_cuda(ctx: Context) -> dict:
    """duda.load_model(..., device="cuda"): predict and predict_proba (whole, slide, flip) run on
    the device and return the CPU's labels and probabilities as numpy arrays."""
    import numpy as np

    import duda
    from duda.inference import dataset_meta, save_deploy_model

    cfg, val, model = _eval_setup(ctx)
    folder = save_deploy_model(ctx.tmp / "segmenter_model", model, dataset_meta(val))
    rng = np.random.default_rng(0)
    images = [
        (rng.random((40, 70, 3)) * 255).astype(np.uint8),
        (rng.random((33, 50, 3)) * 255).astype(np.uint8),
    ]
    for mode, flip in (("whole", False), ("slide", True)):
        options = {"mode": mode, "crop": (32, 32), "stride": (16, 16), "flip": flip}
        gpu = duda.load_model(folder, device="cuda", **options)
        cpu = duda.load_model(folder, device="cpu", **options)
        assert gpu.device == torch.device(CUDA) and next(gpu.model.parameters()).is_cuda
        labels = gpu.predict(images)
        probs = gpu.predict_proba(images[0])
        assert [lab.shape for lab in labels] == [(40, 70), (33, 50)] and labels[0].dtype == np.uint8
        assert probs.shape == (19, 40, 70) and probs.dtype == np.float32
        for a, b in zip(labels, cpu.predict(images), strict=True):
            assert np.array_equal(a, b), mode
        # (attention takes another kernel on CUDA devices: the math path, not the CPU's flash one)
        assert np.allclose(probs, cpu.predict_proba(images[0]), atol=1e-5), mode
    return {}

"""The training loop shared by every method.

Read top to bottom: set-up (device, distribution, data, method, optimisers, resume), then the
loop (schedule, step, checks, logs, checkpoints, evaluation), then the end (final checkpoint,
evaluation, deployable model). Every random draw of step ``t`` comes from a generator seeded
with ``(seed, t, rank)`` and the data stream is indexed by the step, so a run resumed from a
checkpoint continues exactly as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from duda.config import ExperimentConfig, to_dict
from duda.engine import checkpoint as ckpt_io
from duda.engine.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    cleanup_distributed,
    init_distributed,
    resolve_device,
)
from duda.engine.logger import MetricLogger
from duda.engine.optim import build_optimizer, lr_factor, set_lr
from duda.errors import DudaError
from duda.methods import Method, StepContext, build_method
from duda.methods.base import to_device


class NonFiniteLossError(DudaError):
    pass


@dataclass
class TrainResult:
    work_dir: Path
    step: int
    metrics: dict = field(default_factory=dict)  # network -> eval result dict
    stopped_early: bool = False


def step_seed(seed: int, step: int, rank: int) -> int:
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


class _StopFlag:
    """SIGTERM/SIGINT set a flag; the loop writes a checkpoint and exits cleanly."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old = {}

    def __enter__(self):
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not in the main thread
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:  # second signal: give up immediately
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


def build_datasets(cfg: ExperimentConfig):
    from duda.data.datasets import build_dataset_from_config

    src = build_dataset_from_config(cfg.data.source)
    tgt = (
        build_dataset_from_config(cfg.data.target)
        if cfg.data.target and cfg.method.name != "source_only"
        else None
    )
    val = build_dataset_from_config(cfg.data.val) if cfg.data.val else None
    return src, tgt, val


def make_train_loader(cfg: ExperimentConfig, src, tgt, start_iter: int, dist_info: DistInfo):
    from duda.data.loader import UDATrainSet, build_train_loader
    from duda.data.rcs import RCSConfig

    r = cfg.data.rcs
    rcs = RCSConfig(r.temperature, r.min_pixels, r.min_crop_ratio) if r.enabled else None
    train_set = UDATrainSet(
        src,
        tgt,
        crop_size=tuple(cfg.data.crop_size),
        seed=cfg.train.seed,
        source_resize=cfg.data.source.resize,
        target_resize=cfg.data.target.resize if cfg.data.target else None,
        rcs=rcs,
        min_crop_ratio=cfg.data.rcs.min_crop_ratio,
        target_valid_margins=cfg.data.target_valid_margins,
    )
    return build_train_loader(
        train_set,
        batch_size=cfg.data.batch_size,
        workers=cfg.data.workers,
        start_iter=start_iter,
        rank=dist_info.rank,
        world_size=dist_info.world_size,
        seed=cfg.train.seed,
    )


def make_eval_loader(cfg: ExperimentConfig, dataset, ds_cfg, shard: DistInfo | None = None):
    from duda.data.loader import EvalSet, build_eval_loader

    eval_set = EvalSet(dataset, resize=ds_cfg.resize or dataset.default_resize)
    if cfg.train.max_eval_images and len(eval_set) > cfg.train.max_eval_images:
        eval_set = torch.utils.data.Subset(eval_set, list(range(cfg.train.max_eval_images)))
    if shard is not None and shard.enabled:
        eval_set = torch.utils.data.Subset(eval_set, list(range(shard.rank, len(eval_set), shard.world_size)))
    return build_eval_loader(eval_set, workers=min(2, cfg.data.workers))


def evaluate_networks(
    method: Method,
    cfg: ExperimentConfig,
    loader,
    names,
    dist_info: DistInfo,
    class_names: list[str] | None = None,
    progress: bool = False,
) -> dict:
    """mIoU of each named network on the val loader (sharded over ranks, counts all-reduced)."""
    from duda.evaluation.evaluate import accumulate
    from duda.evaluation.metrics import IoUMetric

    results = {}
    for name in names:
        net = method.networks[name]
        modes = [(m, m.training) for m in net.modules()]  # restored exactly (teacher: dropout off)
        net.eval()
        metric = IoUMetric(method.num_classes, device=method.device)
        accumulate(
            net,
            loader,
            metric,
            mode=cfg.train.eval_mode,
            crop=tuple(cfg.train.eval_crop),
            stride=tuple(cfg.train.eval_stride),
            bf16=cfg.train.bf16,
            device=method.device,
            progress=progress,
        )
        if dist_info.enabled:
            for t in metric.state_tensors():
                all_reduce_sum(t, dist_info)
        results[name] = metric.compute().to_dict(class_names)
        for m, mode in modes:
            m.training = mode
    return results


def _wrap_trainable(method: Method, cfg: ExperimentConfig, dist_info: DistInfo) -> None:
    for name in method.spans():
        net = method.networks[name]
        fwd = net
        if cfg.train.compile:
            fwd = torch.compile(fwd)
        if dist_info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [method.device.index] if method.device.type == "cuda" else None
            fwd = DDP(fwd, device_ids=ids, broadcast_buffers=False)
        method.forward_nets[name] = fwd


def _check_finite(losses: dict, step: int, last_ckpt: Path | None) -> None:
    bad = {k: float(v) for k, v in losses.items() if not torch.isfinite(torch.as_tensor(v)).all()}
    if bad:
        where = f"the last good checkpoint is {last_ckpt}" if last_ckpt else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"non-finite loss at step {step}: {bad}; stopping ({where}). "
            "Lower optim.lr, disable train.bf16, or check the data for corrupt labels."
        )


def train(
    cfg: ExperimentConfig,
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
) -> TrainResult:
    """Train ``cfg`` in ``cfg.work_dir``; with ``resume`` continue from its latest checkpoint.

    ``max_steps`` stops after that many steps of this call (used to simulate interruptions).
    """
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device)
    dist_info = init_distributed(device)
    device = resolve_device(cfg.train.device, dist_info.local_rank)
    work_dir = Path(cfg.work_dir)
    ckpt_dir = work_dir / "checkpoints"
    try:
        return _train(cfg, resume, progress, max_steps, device, dist_info, work_dir, ckpt_dir)
    finally:
        cleanup_distributed()


def _train(cfg, resume, progress, max_steps, device, dist_info, work_dir, ckpt_dir) -> TrainResult:
    is_main = dist_info.is_main
    if is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        (work_dir / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))

    src, tgt, val = build_datasets(cfg)
    num_classes = src.labels.num_classes
    meta = ckpt_io.dataset_meta(val or tgt or src)
    torch.manual_seed(cfg.train.seed)  # identical initial weights on every rank
    method = build_method(cfg, num_classes, device)
    spans = method.spans()
    optimizers = {
        name: build_optimizer(
            method.networks[name],
            lr=cfg.optim.lr,
            weight_decay=cfg.optim.weight_decay,
            head_lr_mult=cfg.optim.head_lr_mult,
            betas=tuple(cfg.optim.betas),
        )
        for name in spans
    }

    start = 0
    last_ckpt = None
    if resume:
        last_ckpt = ckpt_io.latest_checkpoint(ckpt_dir)
        if last_ckpt is not None:
            state = ckpt_io.load_checkpoint(last_ckpt)
            method.load_state_dict(state["state"])
            method.load_extra_state(state.get("extra", {}))
            for name, opt in optimizers.items():
                opt.load_state_dict(state["optimizers"][name])
            start = int(state["step"])
            if is_main:
                print(f"resuming {work_dir} from {last_ckpt.name} (step {start})")
                changed = config_changes(state.get("config", {}), to_dict(cfg))
                if changed:
                    print(f"warning: the config differs from the checkpoint's: {', '.join(changed[:8])}")
        elif is_main:
            print(f"no checkpoint in {ckpt_dir}; starting from scratch")
    _wrap_trainable(method, cfg, dist_info)

    total = cfg.train.iters
    end = total if max_steps is None else min(total, start + max_steps)
    logger = MetricLogger(work_dir, enabled=is_main)
    val_loader = make_eval_loader(cfg, val, cfg.data.val, shard=dist_info) if val is not None else None

    def target_images():
        from duda.data.loader import EvalSet, build_eval_loader

        ds_cfg = cfg.data.target
        eval_set = EvalSet(tgt, resize=ds_cfg.resize or tgt.default_resize)
        n = cfg.method.duda.inconsistency_images or len(eval_set)
        idx = list(range(dist_info.rank, min(n, len(eval_set)), dist_info.world_size))
        return iter(
            build_eval_loader(torch.utils.data.Subset(eval_set, idx), workers=min(2, cfg.data.workers))
        )

    def save(step: int) -> Path | None:
        nonlocal last_ckpt
        if is_main:
            payload = {
                "step": step,
                "meta": meta,
                "config": to_dict(cfg),
                "state": method.state_dict(),
                "extra": method.extra_state(),
                "optimizers": {n: o.state_dict() for n, o in optimizers.items()},
            }
            last_ckpt = ckpt_io.save_checkpoint(ckpt_dir, step, payload, keep_last=cfg.train.keep_last)
        barrier(dist_info)
        return last_ckpt

    def run_eval(step: int) -> dict:
        if val_loader is None:
            return {}
        res = evaluate_networks(method, cfg, val_loader, method.eval_networks, dist_info, meta["classes"])
        for name, r in res.items():
            per_class = {f"IoU/{k}": v["iou"] for k, v in r["per_class"].items() if v["iou"] is not None}
            logger.log(step, {"mIoU": r["miou"], **per_class}, f"val_{name}")
        return res

    results: dict = {}
    stopped = False
    method.on_train_start(start)
    for name in spans:
        method.networks[name].train()
    loader_iter = iter(make_train_loader(cfg, src, tgt, start, dist_info)) if start < end else None
    bar = None
    if progress and is_main and start < end:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=start, desc=f"{cfg.method.name}", dynamic_ncols=True, smoothing=0.05)
    t_last = time.perf_counter()
    with _StopFlag() as stop:
        step = start
        while step < end:
            batch = to_device(next(loader_iter), device, cfg.train.channels_last)
            active = [n for n, s in spans.items() if s.start <= step < s.end]
            for name in active:
                s = spans[name]
                factor = lr_factor(
                    step - s.start,
                    s.end - s.start,
                    cfg.optim.warmup_iters,
                    cfg.optim.warmup_ratio,
                    cfg.optim.power,
                )
                set_lr(optimizers[name], cfg.optim.lr, factor)
                optimizers[name].zero_grad(set_to_none=True)
            seed = step_seed(cfg.train.seed, step, dist_info.rank)
            torch.manual_seed(seed)  # dropout / drop-path
            gen = torch.Generator().manual_seed(seed)
            want_vis = is_main and cfg.train.debug_every > 0 and (step + 1) % cfg.train.debug_every == 0
            ctx = StepContext(
                step=step,
                generator=gen,
                want_visuals=want_vis,
                target_images=target_images if tgt is not None else None,
                all_reduce=(lambda t: all_reduce_sum(t, dist_info)),
            )
            out = method.train_step(batch, ctx)
            losses = out["losses"]
            _check_finite(losses, step, last_ckpt)
            for name in active:
                optimizers[name].step()
            step += 1

            if is_main and (step % cfg.train.log_every == 0 or step == end):
                now = time.perf_counter()
                rec = {k: float(v) for k, v in losses.items()}
                rec["lr"] = optimizers[active[0]].param_groups[0]["lr"] if active else 0.0
                rec["sec_per_iter"] = (now - t_last) / cfg.train.log_every
                t_last = now
                logger.log(step, rec)
            for kind, values in out.get("events", {}).items():
                values = {meta["classes"][k] if isinstance(k, int) else k: v for k, v in values.items()}
                logger.log(step, values, kind)
                if is_main:
                    text = ", ".join(f"{k} {v:.2f}" for k, v in values.items())
                    (bar.write if bar else print)(f"step {step} {kind}: {text}")
            if want_vis and out.get("visuals"):
                from duda.engine.visuals import save_debug_grid

                save_debug_grid(
                    out["visuals"], work_dir / "debug" / f"iter_{step:07d}.png", src.labels.palette
                )
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{float(v):.3f}" for k, v in list(losses.items())[:4]}, refresh=False)
            if cfg.train.ckpt_every and step % cfg.train.ckpt_every == 0 and step < total:
                save(step)
            if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step < total:
                results = run_eval(step)
                if is_main and results:
                    summary = ", ".join(f"{n} {100 * r['miou']:.2f}" for n, r in results.items())
                    (bar.write if bar else print)(f"step {step}: mIoU {summary}")
            if stop.signum is not None:
                save(step)
                if is_main:
                    print(
                        f"received signal {stop.signum}: checkpoint written at step {step}; "
                        "resume with --resume"
                    )
                stopped = True
                break
    if bar is not None:
        bar.close()

    if not stopped and step >= total:
        if last_ckpt is None or not last_ckpt.name.endswith(f"{step:07d}.pt"):
            save(step)
        results = run_eval(step)
        if is_main:
            ckpt_io.save_deploy_model(work_dir / "model", method.networks["student"], meta)
            if results:
                (work_dir / "eval.json").write_text(json.dumps(results, indent=2))
    elif not stopped and step == end:
        save(step)
    if dist_info.enabled:
        _check_ranks_agree(method, work_dir, dist_info)
    logger.close()
    return TrainResult(work_dir=work_dir, step=step, metrics=results, stopped_early=stopped)


def weights_checksum(module: torch.nn.Module) -> float:
    """A cheap fingerprint of a network's parameters (sum of |w| in float64)."""
    return float(sum(p.detach().double().abs().sum() for p in module.parameters()))


def _check_ranks_agree(method: Method, work_dir: Path, dist_info: DistInfo) -> None:
    """Every rank must hold the same weights (students by DDP, teachers by identical EMA)."""
    import torch.distributed as dist

    mine = {name: weights_checksum(net) for name, net in method.networks.items()}
    gathered: list = [None] * dist_info.world_size
    dist.all_gather_object(gathered, mine)
    if dist_info.is_main:
        (work_dir / "rank_checksums.json").write_text(json.dumps(gathered, indent=2))
        for rank, sums in enumerate(gathered[1:], start=1):
            if sums != gathered[0]:
                raise DudaError(
                    f"rank {rank} weights differ from rank 0 after training: {sums} vs {gathered[0]}"
                )


def config_changes(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += config_changes(a, b, name + ".")
        elif a != b:
            out.append(f"{name}: {a!r} -> {b!r}")
    return out

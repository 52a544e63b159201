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

from duda import checkpoints as ckpt_io
from duda import inference
from duda.config import ExperimentConfig, to_dict
from duda.data.datasets import build_dataset_from_config
from duda.data.loader import EvalSet, UDATrainSet, build_eval_loader, build_train_loader
from duda.data.rcs import RCSConfig
from duda.engine.checkpoint import incompatibilities
from duda.engine.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
)
from duda.engine.logger import MetricLogger
from duda.engine.optim import build_optimizer, set_lr, span_lr_factor
from duda.engine.visuals import save_debug_grid
from duda.engine.workdir import ExistingRunError, WorkDirLock, move_run_aside, run_contents
from duda.errors import CheckpointError, ConfigError, DudaError
from duda.evaluation.evaluate import accumulate
from duda.evaluation.metrics import IoUMetric
from duda.files import WriteError, write_text
from duda.inference.device import resolve_device
from duda.log import info
from duda.methods import Method, StepContext, build_method, method_class
from duda.methods.base import to_device
from duda.progress import is_terminal


class NonFiniteLossError(DudaError):
    pass


@dataclass
class TrainResult:
    work_dir: Path
    step: int
    metrics: dict = field(default_factory=dict)  # network -> eval result dict
    stopped_early: bool = False
    signal: int | None = None  # the signal that stopped the run early (SIGTERM, SIGINT)
    checkpoint: Path | None = None  # the newest checkpoint written
    model_dir: Path | None = None  # the deployable model folder of a finished run


def step_seed(seed: int, step: int, rank: int) -> int:
    # shifted as a Python int: numpy < 2 has no uint64 >> int64 ufunc loop
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1, dtype=np.uint64)[0]) >> 1


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

    src = build_dataset_from_config(cfg.data.source)
    uses_target = method_class(cfg.method.name).needs_target
    tgt = build_dataset_from_config(cfg.data.target) if cfg.data.target and uses_target else None
    val = build_dataset_from_config(cfg.data.val) if cfg.data.val else None
    return src, tgt, val


def _pin(device: torch.device | None) -> bool | None:
    """Pin loader batches when they go to a CUDA device (None: the loader's default)."""
    return None if device is None else device.type == "cuda"


def make_train_loader(
    cfg: ExperimentConfig, src, tgt, start_iter: int, dist_info: DistInfo, device: torch.device | None = None
):
    """The training loader from ``start_iter`` on (batches pinned when ``device`` is CUDA)."""

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
        pin_memory=_pin(device),
    )


def make_eval_loader(
    cfg: ExperimentConfig, dataset, ds_cfg, shard: DistInfo | None = None, device: torch.device | None = None
):
    """The evaluation loader of ``dataset`` (batches pinned when ``device`` is CUDA)."""

    eval_set = EvalSet(dataset, resize=ds_cfg.resize or dataset.default_resize)
    if cfg.train.max_eval_images and len(eval_set) > cfg.train.max_eval_images:
        eval_set = torch.utils.data.Subset(eval_set, list(range(cfg.train.max_eval_images)))
    if shard is not None and shard.enabled:
        eval_set = torch.utils.data.Subset(eval_set, list(range(shard.rank, len(eval_set), shard.world_size)))
    return build_eval_loader(eval_set, workers=min(2, cfg.data.workers), pin_memory=_pin(device))


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
    """Compile and/or DDP-wrap each trained network; the method forwards through the wrapper."""
    for name in method.spans():
        fwd = method.networks[name]
        if cfg.train.compile:
            fwd = torch.compile(fwd)
        if dist_info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [method.device.index] if method.device.type == "cuda" else None
            fwd = DDP(fwd, device_ids=ids, broadcast_buffers=False)
        method.set_forward(name, fwd)


def target_images_fn(cfg: ExperimentConfig, tgt, dist_info: DistInfo, device: torch.device | None = None):
    """``limit -> iterator`` over the target training images at test scale, without crops
    (the first ``limit``, 0 = all, sharded over ranks), for methods that look at the whole set
    (batches pinned when ``device`` is CUDA)."""

    def target_images(limit: int = 0):

        eval_set = EvalSet(tgt, resize=cfg.data.target.resize or tgt.default_resize)
        n = min(limit or len(eval_set), len(eval_set))
        idx = list(range(dist_info.rank, n, dist_info.world_size))
        subset = torch.utils.data.Subset(eval_set, idx)
        return iter(build_eval_loader(subset, workers=min(2, cfg.data.workers), pin_memory=_pin(device)))

    return target_images


def _check_finite(losses: dict, step: int, last_ckpt: Path | None) -> None:
    # one host sync per device for all the losses (not one per loss): on a GPU each read of a
    # value waits for the work queued on the device
    finite: dict[torch.device, list[torch.Tensor]] = {}
    for v in losses.values():
        t = torch.as_tensor(v)
        finite.setdefault(t.device, []).append(torch.isfinite(t).all())
    if all(bool(torch.stack(flags).all()) for flags in finite.values()):
        return
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
    *,
    overwrite: bool = False,
) -> TrainResult:
    """Train ``cfg`` in ``cfg.work_dir``; with ``resume`` continue from its latest checkpoint.

    The work_dir is locked for the whole run (a second training of it is refused, naming the
    holder). Without ``resume`` a work_dir that already holds a run is refused, unless
    ``overwrite``, which first moves that run aside to ``<work_dir>.replaced-<time>``. With
    ``resume`` the newest readable checkpoint is used (unreadable newer ones are set aside with a
    warning), after checking that it was written for the same model, method and classes.
    Everything that can be checked (config, device, datasets, models) is checked before the
    work_dir is created or changed. On SIGTERM/SIGINT a checkpoint is written and the result has
    ``stopped_early`` and ``signal`` set.

    ``max_steps`` stops after that many steps of this call (used to simulate interruptions).
    """
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite exclude each other: continue the run or replace it")
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    device = resolve_device(cfg.train.device, what="train.device")
    dist_info = init_distributed(device)
    device = resolve_device(cfg.train.device, dist_info.local_rank, what="train.device")
    work_dir = Path(cfg.work_dir).absolute()
    ckpt_dir = work_dir / "checkpoints"
    try:
        return _train(cfg, resume, overwrite, progress, max_steps, device, dist_info, work_dir, ckpt_dir)
    finally:
        cleanup_distributed()


def _log(is_main: bool):
    """``duda.log.info`` on the main process, nothing on the other ranks."""

    def log(*args) -> None:
        if is_main:
            info(" ".join(str(a) for a in args))

    return log


def _claim_work_dir(
    cfg, resume: bool, overwrite: bool, work_dir: Path, ckpt_dir: Path, num_classes: int, log
):
    """Lock the work_dir and decide where the run starts (rank 0). Returns (lock, created,
    resume point or None); writes nothing but the lock, except ``overwrite`` moving a run aside."""

    created = not work_dir.exists()
    try:
        lock = WorkDirLock(work_dir).acquire()
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                work_dir.rmdir()
        raise
    try:
        if lock.stale_note:
            log(lock.stale_note)
        point = None
        if not resume:
            found = run_contents(work_dir)
            if found and not overwrite:
                raise ExistingRunError(
                    f"{work_dir} already holds a run ({', '.join(found)}); continue it with --resume, "
                    "train into a new --work-dir, or pass --overwrite to move it aside (nothing is deleted)"
                )
            if found:
                aside = move_run_aside(work_dir)
                log(f"moved the previous run in {work_dir} to {aside}")
        else:
            point = ckpt_io.find_resume_point(ckpt_dir)
            if point is not None:
                state = point.state
                old_classes = (state.get("meta") or {}).get("num_classes")
                bad = incompatibilities(state["config"], to_dict(cfg), old_classes, num_classes)
                if bad:
                    raise CheckpointError(
                        f"--resume: {point.path} was written for another run ({'; '.join(bad)}); "
                        "nothing was changed: train into a new --work-dir, or --overwrite to move the old "
                        "run aside"
                    )
        return lock, created, point
    except BaseException:
        _release(lock, work_dir, created)
        raise


def _release(lock, work_dir: Path, created: bool) -> None:
    """Drop the lock; remove the work_dir again if this call created it and it stayed empty."""
    if lock is None:
        return
    lock.release()
    if created:
        with contextlib.suppress(OSError):
            work_dir.rmdir()


def _train(cfg, resume, overwrite, progress, max_steps, device, dist_info, work_dir, ckpt_dir) -> TrainResult:
    is_main = dist_info.is_main
    log = _log(is_main)

    # 1. Everything that depends only on the inputs, before the work_dir is created or touched.
    src, tgt, val = build_datasets(cfg)
    num_classes = src.labels.num_classes
    meta = inference.dataset_meta(val or tgt or src)
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

    # 2. The work_dir: lock it, refuse another run's folder or checkpoint, pick the resume point.
    lock, created, point, error = None, False, None, None
    if is_main:
        try:
            lock, created, point = _claim_work_dir(
                cfg, resume, overwrite, work_dir, ckpt_dir, num_classes, log
            )
        except DudaError as exc:
            error = exc
    if dist_info.enabled:  # every rank stops on rank 0's refusal and loads the same checkpoint
        shared = (str(error) if error else None, str(point.path) if point else None)
        message, path = broadcast_object(shared, dist_info)
        if message and not is_main:
            raise DudaError(message)
        if path and not is_main:
            point = ckpt_io.ResumePoint(Path(path), ckpt_io.load_training_checkpoint(path), [])
    if error is not None:
        raise error
    run = _Run(cfg, dist_info, work_dir, log, src, tgt, val, meta, method, optimizers)
    try:
        start = run.restore(point, resume, lock, created)
        return run.train(start, max_steps, progress)
    finally:
        _release(lock, work_dir, False)


class _Run:
    """One training run, set up: the loop (:meth:`train`) and what each step involves."""

    def __init__(self, cfg, dist_info, work_dir, log, src, tgt, val, meta, method, optimizers) -> None:
        self.cfg, self.dist_info, self.work_dir, self.log = cfg, dist_info, work_dir, log
        self.is_main = dist_info.is_main
        self.src, self.tgt, self.val, self.meta = src, tgt, val, meta
        self.method, self.optimizers = method, optimizers
        self.spans = method.spans()
        self.ckpt_dir = work_dir / "checkpoints"
        self.last_ckpt: Path | None = None
        self.logger: MetricLogger | None = None
        self.val_loader = None
        self.target_images = target_images_fn(cfg, tgt, dist_info, method.device) if tgt is not None else None

    # ------------------------------------------------------------------ before the loop
    def restore(self, point, resume: bool, lock, created: bool) -> int:
        """Load the resume point (networks, method state, optimisers); the step to start from."""
        cfg, method, log = self.cfg, self.method, self.log
        start = 0
        if point is not None:
            state = point.state
            try:
                method.load_state_dict(state["state"])
                method.load_extra_state(state.get("extra", {}))
                for name, opt in self.optimizers.items():
                    opt.load_state_dict(state["optimizers"][name])
            except (RuntimeError, KeyError, ValueError) as exc:
                if self.is_main:
                    _release(lock, self.work_dir, created)
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise CheckpointError(
                    f"--resume: {point.path} does not fit this run's networks ({first}); nothing was changed"
                ) from None
            start = int(state["step"])
            self.last_ckpt = point.path
            if self.is_main:
                moved = ckpt_io.set_aside_unreadable(point.skipped)
                for (_, why), aside in zip(point.skipped, moved, strict=True):
                    log(f"warning: {why}; renamed it to {aside.name}, falling back to {point.path.name}")
                log(f"resuming {self.work_dir} from {point.path.name} (step {start})")
                changed = config_changes(state.get("config", {}), to_dict(cfg))
                if changed:
                    log(f"warning: the config differs from the checkpoint's: {', '.join(changed[:8])}")
            point.state = {}  # loaded: do not hold a second copy of every network while training
        elif resume:
            log(f"no checkpoint in {self.ckpt_dir}; starting from scratch")
        if self.is_main:
            log(f"work_dir: {self.work_dir}")
            config_text = yaml.safe_dump(to_dict(cfg), sort_keys=False)
            write_text(self.work_dir / "config.yaml", config_text, what="config")
        _wrap_trainable(method, cfg, self.dist_info)
        self.logger = MetricLogger(self.work_dir, enabled=self.is_main, resume_step=start if resume else None)
        if self.val is not None:
            self.val_loader = make_eval_loader(
                cfg, self.val, cfg.data.val, shard=self.dist_info, device=self.method.device
            )
        return start

    # ------------------------------------------------------------------ the loop
    def train(self, start: int, max_steps: int | None, progress: bool) -> TrainResult:
        """Steps ``start`` … ``end``; checkpoints, evaluations and logs on the way; on SIGTERM /
        SIGINT a checkpoint and an early return; at the end of the run the deployable model."""
        cfg, method = self.cfg, self.method
        total = cfg.train.iters
        end = total if max_steps is None else min(total, start + max_steps)
        method.on_train_start(start)
        for name in self.spans:
            method.networks[name].train()
        loader = None
        if start < end:
            loader = iter(make_train_loader(cfg, self.src, self.tgt, start, self.dist_info, method.device))
        bar = self._progress_bar(start, end, progress)
        self.t_last = time.perf_counter()
        results: dict = {}
        step, stopped = start, None
        try:
            with _StopFlag() as stop:
                while step < end:
                    batch = to_device(next(loader), method.device, cfg.train.channels_last)
                    out, active, want_vis = self.step(step, batch)
                    step += 1
                    self.record(step, end, out, active, want_vis, bar)
                    if cfg.train.ckpt_every and step % cfg.train.ckpt_every == 0 and step < total:
                        self.save(step)
                    if cfg.train.eval_every and step % cfg.train.eval_every == 0 and step < total:
                        results = self.evaluate(step)
                    if stop.signum is not None:
                        if self.last_ckpt is None or self.last_ckpt.name != f"iter_{step:07d}.pt":
                            self.save(step)
                        stopped = stop.signum
                        break
        finally:
            if bar is not None:
                bar.close()
        if stopped is not None:
            return self.stopped(step, stopped)
        return self.finish(step, end, results)

    def step(self, step: int, batch: dict) -> tuple[dict, list[str], bool]:
        """One optimisation step of every network whose span holds ``step``."""
        cfg, spans = self.cfg, self.spans
        active = [n for n, s in spans.items() if s.start <= step < s.end]
        for name in active:
            set_lr(self.optimizers[name], cfg.optim.lr, span_lr_factor(spans[name], step, cfg.optim))
            self.optimizers[name].zero_grad(set_to_none=True)
        seed = step_seed(cfg.train.seed, step, self.dist_info.rank)
        torch.manual_seed(seed)  # dropout / drop-path
        want_vis = self.is_main and cfg.train.debug_every > 0 and (step + 1) % cfg.train.debug_every == 0
        ctx = StepContext(
            step=step,
            generator=torch.Generator().manual_seed(seed),
            want_visuals=want_vis,
            target_images=self.target_images,
            all_reduce=(lambda t: all_reduce_sum(t, self.dist_info)),
        )
        out = self.method.train_step(batch, ctx)
        _check_finite(out["losses"], step, self.last_ckpt)
        for name in active:
            self.optimizers[name].step()
        return out, active, want_vis

    # ------------------------------------------------------------------ on the way
    def record(self, step: int, end: int, out: dict, active: list[str], want_vis: bool, bar) -> None:
        """Losses to the logs, the method's events, debug pictures, the progress bar."""
        cfg, losses = self.cfg, out["losses"]
        if self.is_main and (step % cfg.train.log_every == 0 or step == end):
            now = time.perf_counter()
            rec = {k: float(v) for k, v in losses.items()}
            rec["lr"] = self.optimizers[active[0]].param_groups[0]["lr"] if active else 0.0
            rec["sec_per_iter"] = (now - self.t_last) / cfg.train.log_every
            self.t_last = now
            self.logger.log(step, rec)
        for kind, values in out.get("events", {}).items():
            values = {self.meta["classes"][k] if isinstance(k, int) else k: v for k, v in values.items()}
            self.logger.log(step, values, kind)
            if self.is_main:
                text = ", ".join(f"{k} {v:.2f}" for k, v in values.items())
                self.log(f"step {step} {kind}: {text}")
        if want_vis and out.get("visuals"):
            path = self.work_dir / "debug" / f"iter_{step:07d}.png"
            save_debug_grid(out["visuals"], path, self.src.labels.palette)
        if bar is not None:
            bar.update(1)
            bar.set_postfix({k: f"{float(v):.3f}" for k, v in list(losses.items())[:4]}, refresh=False)

    def save(self, step: int) -> Path | None:
        """A checkpoint of every network, the method's state and the optimisers (rank 0)."""
        if self.is_main:
            payload = {
                "step": step,
                "meta": self.meta,
                "config": to_dict(self.cfg),
                "state": self.method.state_dict(),
                "extra": self.method.extra_state(),
                "optimizers": {n: o.state_dict() for n, o in self.optimizers.items()},
            }
            try:
                self.last_ckpt = ckpt_io.save_checkpoint(
                    self.ckpt_dir, step, payload, keep_last=self.cfg.train.keep_last
                )
            except WriteError as exc:
                good = self.last_ckpt and f"the last good checkpoint is {self.last_ckpt}"
                raise WriteError(
                    f"{exc}; training stopped at step {step} ({good or 'no checkpoint was written yet'})"
                ) from None
        barrier(self.dist_info)
        return self.last_ckpt

    def evaluate(self, step: int) -> dict:
        """mIoU of the method's evaluated networks on data.val, logged."""
        if self.val_loader is None:
            return {}
        method = self.method
        res = evaluate_networks(
            method, self.cfg, self.val_loader, method.eval_networks, self.dist_info, self.meta["classes"]
        )
        for name, r in res.items():
            per_class = {f"IoU/{k}": v["iou"] for k, v in r["per_class"].items() if v["iou"] is not None}
            self.logger.log(step, {"mIoU": r["miou"], **per_class}, f"val_{name}")
        if self.is_main and res and step < self.cfg.train.iters:
            summary = ", ".join(f"{n} {100 * r['miou']:.2f}" for n, r in res.items())
            self.log(f"step {step}: mIoU {summary}")
        return res

    def _progress_bar(self, start: int, end: int, progress: bool):
        if not (progress and self.is_main and start < end and is_terminal()):
            return None
        from tqdm import tqdm

        total = self.cfg.train.iters
        return tqdm(total=total, initial=start, desc=self.cfg.method.name, dynamic_ncols=True, smoothing=0.05)

    # ------------------------------------------------------------------ after the loop
    def stopped(self, step: int, signum: int) -> TrainResult:
        self.log(
            f"received {signal.Signals(signum).name}: checkpoint written at step {step}: {self.last_ckpt}; "
            "continue with --resume"
        )
        self.logger.close()
        return TrainResult(
            work_dir=self.work_dir, step=step, stopped_early=True, signal=signum, checkpoint=self.last_ckpt
        )

    def finish(self, step: int, end: int, results: dict) -> TrainResult:
        """The final checkpoint, evaluation and deployable model of a finished run."""
        total = self.cfg.train.iters
        model_dir = None
        if step >= total:
            if self.last_ckpt is None or self.last_ckpt.name != f"iter_{step:07d}.pt":
                self.save(step)
            results = self.evaluate(step)
            if self.is_main:
                ship = self.method.networks[self.method.ship]
                model_dir = inference.save_deploy_model(self.work_dir / "model", ship, self.meta)
                if results:
                    write_text(self.work_dir / "eval.json", json.dumps(results, indent=2), what="results")
                self.log(f"finished {total} steps: model {model_dir} (checkpoint {self.last_ckpt})")
        elif step == end:
            self.save(step)
        if self.dist_info.enabled:
            _check_ranks_agree(self.method, self.work_dir, self.dist_info)
        self.logger.close()
        return TrainResult(
            work_dir=self.work_dir,
            step=step,
            metrics=results,
            stopped_early=False,
            checkpoint=self.last_ckpt,
            model_dir=model_dir,
        )


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

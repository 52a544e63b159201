"""`duda demo`: the whole story on the built-in procedural benchmark, on a CPU.

It generates the benchmark (cached), prepares it with the normal `prepare` step, and trains
with the normal trainer from the configs in ``duda/demo/configs/`` (linked as ``configs/synth``
in a checkout) — the same code paths a GPU user runs; only model sizes and crops are small.
Every encoder starts from the shipped procedural pretraining (``duda:KEY``, ``duda pretrain``).
Runs, all evaluated on the target's val split:

- ``source_only``  small model, source labels only (the floor);
- ``daformer``     small model, DAFormer self-training on its own EMA teacher;
- ``duda``         DUDA large→small; its stage-1 large student L is reported as the large
                   DAFormer reference, since L trains exactly as DAFormer (tested bit for bit);
- ``duda_no_inconsistency``  DUDA's stage 2 without the inconsistency weights (Fig. 4b),
                   started from the ``duda`` run's stage-1 checkpoint;
- ``oracle``       small model trained on target labels (the ceiling).

``--baselines`` trains the calibration set instead: the large DAFormer model on its own and
no DUDA run.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import shutil
import signal
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from pathlib import Path

import numpy as np
import torch

from duda import log as logs
from duda.data.prepare import prepare_dataset
from duda.data.synth import generate_benchmark
from duda.demo.pretrained import DEMO_ENCODERS, missing_keys, pretrain_in_parallel, weights_for
from duda.engine.trainer import train
from duda.errors import ConfigError, DudaError, StoppedBySignal
from duda.log import info
from duda.methods import load_config, network_specs

BENCH_SEED = 0  # the benchmark's seed: fixed before any method was run on it (docs/benchmark.md)
DOMAINS = ("real", "night", "fog")


@dataclass(frozen=True)
class DemoScale:
    """Sizes of one demo flavour (the default, or --quick)."""

    size: tuple[int, int]  # generated image (H, W)
    n_source: int
    n_target_train: int
    n_target_val: int
    overrides: tuple[str, ...] = ()  # config overrides applied to every run


DEFAULT = DemoScale(size=(256, 512), n_source=400, n_target_train=400, n_target_val=100)
QUICK = DemoScale(
    size=(128, 256),
    n_source=24,
    n_target_train=24,
    n_target_val=8,
    overrides=(
        "train.iters=20",
        "method.duda.stage1_iters=15",
        "train.ckpt_every=5",
        "train.eval_every=0",
        "train.log_every=5",
        "optim.warmup_iters=5",
        "data.crop_size=[64, 64]",
        "data.source.resize=[256, 128]",
        "data.target.resize=[256, 128]",
        "data.val.resize=[256, 128]",
        "data.rcs.min_pixels=100",
    ),
)


@dataclass
class RunResult:
    name: str  # row label
    run: str  # which training run
    network: str
    work_dir: Path
    seed: int
    miou: float
    per_class: dict[str, float | None]
    iters: int
    model_name: str = ""
    arch: dict = field(default_factory=dict)
    train_seconds: float = 0.0


def configs_dir() -> Path:
    """The demo's configs, shipped inside the package (``configs/synth`` in a checkout links here)."""
    return Path(__file__).resolve().parent / "configs"


def prepare_data(
    data_dir: Path, domain: str, scale: DemoScale, workers: int = 1, log=info
) -> dict[str, Path]:
    """Generate (or reuse) the benchmark and convert its labels to trainIds."""

    t0 = time.perf_counter()
    roots = generate_benchmark(
        data_dir,
        seed=BENCH_SEED,
        size=scale.size,
        n_source=scale.n_source,
        n_target_train=scale.n_target_train,
        n_target_val=scale.n_target_val,
        domains=(domain,),
        workers=workers,
    )
    prepare_dataset("gta", roots["source"], progress=False, log=lambda _: None, workers=workers)
    prepare_dataset("cityscapes", roots[domain], progress=False, log=lambda _: None, workers=workers)
    log(f"benchmark data ready in {data_dir} ({time.perf_counter() - t0:.0f} s)")
    return roots


@dataclass(frozen=True)
class Variant:
    """One training run: a config of configs/synth, extra overrides, and the rows it reports."""

    key: str  # folder name of the run
    config: str  # configs/synth/<config>.yaml
    rows: tuple[tuple[str, str], ...]  # (network, row label)
    overrides: tuple[str, ...] = ()
    # start from another run's checkpoint at the end of DUDA's stage 1 (that run goes first): a
    # variant that differs only in stage 2 then costs only stage 2, and since every step is a
    # pure function of (seed, step), the result is bit-identical to training it from scratch
    start_from: str | None = None
    cost: float = 1.0  # rough relative training time: with --jobs > 1 the longest runs start first


SOURCE_ONLY = Variant("source_only", "source_only", (("student", "source-only (small)"),))
DAFORMER = Variant("daformer", "daformer", (("student", "DAFormer (small)"),), cost=2.0)
ORACLE = Variant("oracle", "oracle", (("student", "oracle: target labels (small)"),))
NO_INCONSISTENCY = Variant(
    "duda_no_inconsistency",
    "duda",
    (("student", "DUDA without inconsistency weights (small)"),),
    ("method.duda.inconsistency=false",),
    start_from="duda",
    cost=1.5,
)
DEMO = (
    SOURCE_ONLY,
    DAFORMER,
    Variant(
        "duda",
        "duda",
        (("student", "DUDA large→small (small)"), ("large", "DAFormer large (L of DUDA stage 1)")),
        cost=7.0,
    ),
    NO_INCONSISTENCY,
    ORACLE,
)
#: The calibration set (``duda demo --baselines``): no DUDA run; the large DAFormer model is
#: trained on its own (bit-identical to DUDA's stage-1 L, tested).
BASELINES = (
    SOURCE_ONLY,
    DAFORMER,
    Variant("daformer_large", "daformer_large", (("student", "DAFormer large"),), cost=4.0),
    ORACLE,
)


def _models(cfg) -> list:
    """The model config objects of a run's networks, each once (the method declares them);
    :func:`ensure_pretrained` points their encoders at weights in place."""

    models: list = []
    for spec in network_specs(cfg).values():
        if not any(spec.config is m for m in models):
            models.append(spec.config)
    return models


def arch_text(arch: dict) -> str:
    """Architecture overrides as one ``--set model.arch=...`` value (YAML flow mapping)."""
    return (
        "{"
        + ", ".join(f"{k}: {list(v) if isinstance(v, (list, tuple)) else v}" for k, v in arch.items())
        + "}"
    )


def ensure_pretrained(cfg, cache_dir: Path, log=info) -> float:
    """Point every ``duda:KEY`` encoder of ``cfg`` at usable weights: the shipped file when it is
    there and up to date, else one pretrained now into ``cache_dir``. Returns seconds spent."""

    spent = 0.0
    for m in _models(cfg):
        if not (m.pretrained or "").startswith("duda:"):
            continue
        key = m.pretrained.removeprefix("duda:")
        if key not in DEMO_ENCODERS:
            raise ConfigError(
                f"model.pretrained={m.pretrained!r}: expected one of duda:{', duda:'.join(DEMO_ENCODERS)}"
            )
        name, arch = DEMO_ENCODERS[key]
        path, seconds = weights_for(name, arch, cache_dir, log)
        spent += seconds
        if path.parent != cache_dir:
            continue  # the shipped file
        m.pretrained = str(path)
    return spent


def run_config(variant: Variant, roots: dict[str, Path], domain: str, out: Path, seed: int, scale: DemoScale):

    tgt = roots[domain]
    oracle = variant.config == "oracle"
    has_target = variant.config not in ("oracle", "source_only")
    overrides = [
        f"work_dir={out / f'seed{seed}' / variant.key}",
        f"train.seed={seed}",
        f"data.source.root={tgt if oracle else roots['source']}",
        f"data.val.root={tgt}",
        *(o for o in scale.overrides if has_target or not o.startswith("data.target.")),
        *(o.replace("{seed_dir}", str(out / f"seed{seed}")) for o in variant.overrides),
    ]
    if has_target:
        overrides.append(f"data.target.root={tgt}")
    return load_config(str(configs_dir() / f"{variant.config}.yaml"), overrides)


def default_jobs() -> int:
    """Runs trained at once: each run uses one compute thread (and a loader process that is
    mostly idle), so one per core on a CPU; one at a time on a GPU."""

    if torch.cuda.is_available():
        return 1
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


@dataclass
class _Task:
    seed: int
    variant: Variant
    cfg: object
    work: Path
    log_file: Path


def run_demo(
    out: Path,
    data_dir: Path,
    domain: str = "real",
    quick: bool = False,
    seeds: int = 1,
    only_seeds: list[int] | None = None,
    progress: bool = True,
    variants: tuple[Variant, ...] = DEMO,
    log=info,
    timing: dict[str, float] | None = None,
    jobs: int = 1,
) -> list[RunResult]:
    """Train every variant for each seed (reusing runs already finished in ``out``).

    ``jobs`` > 1 trains that many runs at once, each in its own process with its output in
    ``out/seedN/<run>.log``; every run is a pure function of its config and seed (one compute
    thread each), so the results do not depend on ``jobs``. ``timing`` (if given) receives the
    seconds spent per phase: data, pretraining, each run, and the runs' wall time."""
    timing = {} if timing is None else timing
    if domain not in DOMAINS:
        raise ConfigError(f"--domain {domain!r}: expected one of {', '.join(DOMAINS)}")
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    scale = QUICK if quick else DEFAULT
    t_data = time.perf_counter()
    roots = prepare_data(data_dir, domain, scale, log=log)
    timing["data"] = time.perf_counter() - t_data
    cfgs = [
        (seed, variant, run_config(variant, roots, domain, out, seed, scale))
        for seed in (only_seeds if only_seeds is not None else range(seeds))
        for variant in variants
    ]
    tasks = _make_tasks(cfgs, out, data_dir, jobs, timing, log)
    metrics, seconds, todo = _finished_earlier(tasks, log)
    t_runs = time.perf_counter()
    if jobs == 1 or len(todo) <= 1:
        for i in todo:
            metrics[i], seconds[i] = _train_here(tasks[i], progress, log)
    else:
        _train_in_parallel(tasks, todo, jobs, metrics, seconds, log)
    for i, task in enumerate(tasks):
        timing[f"seed {task.seed}: {task.variant.key}"] = seconds[i]
    if todo and jobs > 1:
        timing[f"runs (wall, {min(jobs, len(todo))} at once)"] = time.perf_counter() - t_runs
    return [row for i, task in enumerate(tasks) for row in _results(task, metrics[i], seconds[i])]


def _make_tasks(cfgs, out: Path, data_dir: Path, jobs: int, timing: dict, log) -> list[_Task]:
    """One task per (seed, variant, config), after pretraining the encoders they need."""
    if jobs > 1:  # encoders to pretrain (shipped weights missing or out of date): several at once
        models = [m for _, _, c in cfgs for m in _models(c)]
        keys = missing_keys(models, data_dir / "pretrained")
        if len(keys) > 1:
            timing["pretraining"] = pretrain_in_parallel(keys, data_dir / "pretrained", jobs, log)
    tasks: list[_Task] = []
    for seed, variant, cfg in cfgs:
        timing["pretraining"] = timing.get("pretraining", 0.0) + ensure_pretrained(
            cfg, data_dir / "pretrained", log
        )
        work = Path(cfg.work_dir)
        tasks.append(_Task(seed, variant, cfg, work, out / f"seed{seed}" / f"{variant.key}.log"))
    return tasks


def _finished_earlier(tasks: list[_Task], log) -> tuple[dict[int, dict], dict[int, float], list[int]]:
    """Metrics and seconds of the runs finished earlier (their eval.json), and the rest to train."""
    metrics: dict[int, dict] = {}
    seconds: dict[int, float] = {}
    todo = []
    for i, task in enumerate(tasks):
        done = task.work / "eval.json"
        if done.is_file():
            metrics[i] = json.loads(done.read_text())
            seconds[i] = 0.0
            log(f"[seed {task.seed}] {task.variant.key}: finished earlier, reusing {done}")
        else:
            todo.append(i)
    return metrics, seconds, todo


def _results(task: _Task, metrics: dict, seconds: float) -> list[RunResult]:
    """The report rows of one finished run (one per network the variant reports)."""
    cfg = task.cfg
    results = []
    for network, label in task.variant.rows:
        r = metrics[network]
        model_cfg = cfg.model if network == "student" else cfg.method.duda.large
        results.append(
            RunResult(
                name=label,
                run=task.variant.key,
                network=network,
                work_dir=task.work,
                seed=task.seed,
                miou=100 * r["miou"],
                per_class={
                    k: (None if v["iou"] is None else 100 * v["iou"]) for k, v in r["per_class"].items()
                },
                iters=cfg.method.duda.stage1_iters if network in ("teacher", "large") else cfg.train.iters,
                model_name=model_cfg.name,
                arch=dict(model_cfg.arch),
                train_seconds=seconds,
            )
        )
    return results


def _start_message(task: _Task) -> str:
    return f"[seed {task.seed}] {task.variant.key}: training {task.cfg.train.iters} iterations in {task.work}"


def _stopped(task: _Task, signum: int | None, checkpoint) -> StoppedBySignal:

    name = signal.Signals(signum).name if signum else "a signal"
    return StoppedBySignal(
        f"stopped by {name} during {task.work} (checkpoint {checkpoint}); run the same "
        "`duda demo` command again to continue",
        signum or signal.SIGTERM,
    )


def _train_here(task: _Task, progress: bool, log) -> tuple[dict, float]:
    """Train one run in this process."""

    if task.variant.start_from:
        _copy_stage1_checkpoint(task.work.parent / task.variant.start_from, task.work, task.cfg)
    log(_start_message(task))
    t0 = time.perf_counter()
    result = train(task.cfg, resume=True, progress=progress)
    if result.stopped_early:
        raise _stopped(task, result.signal, result.checkpoint)
    return result.metrics, time.perf_counter() - t0


def _child_train(task: _Task, conn) -> None:
    """Entry point of a run's own process: its own process group (a Ctrl-C reaches the demo
    process, which passes it on once), its output into ``task.log_file``."""

    os.setpgrp()
    task.log_file.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(task.log_file, "a", buffering=1) as f,
        contextlib.redirect_stdout(f),
        contextlib.redirect_stderr(f),
    ):
        try:
            logs.setup(logs.NORMAL, f)  # the run's messages go to its log file
            t0 = time.perf_counter()
            result = train(task.cfg, resume=True, progress=False)
            conn.send(
                (
                    "ok",
                    result.metrics,
                    time.perf_counter() - t0,
                    result.stopped_early,
                    result.signal,
                    str(result.checkpoint),
                )
            )
        except BaseException as e:  # reported to the demo process, which raises it there
            traceback.print_exc()
            conn.send(("error", f"{type(e).__name__}: {e}", isinstance(e, ConfigError)))


def _train_in_parallel(tasks, todo, jobs, metrics, seconds, log) -> None:
    """Train ``tasks[todo]`` in up to ``jobs`` processes, longest first; a run that starts from
    another run's stage-1 checkpoint waits for that checkpoint. SIGINT/SIGTERM are passed on to
    the runs, which write a checkpoint and stop; no new run starts after that."""
    pool = _RunPool(tasks, todo, jobs, metrics, seconds, log)
    old = {s: signal.signal(s, pool.on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while pool.pending or pool.running:
            pool.start_ready()
            if not pool.running:
                break
            wait([p.sentinel for p, _ in pool.running.values()], timeout=5)
            pool.collect()
            if (pool.stop or pool.failures) and not pool.running:
                break
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    pool.raise_outcome()


class _RunPool:
    """The demo's runs in child processes: which wait, which run, how each ended."""

    def __init__(self, tasks, todo, jobs, metrics, seconds, log) -> None:
        self.tasks, self.jobs, self.metrics, self.seconds, self.log = tasks, jobs, metrics, seconds, log
        self.ctx = mp.get_context("spawn")
        self.pending = sorted(todo, key=lambda i: -tasks[i].variant.cost)
        self.running: dict[int, tuple] = {}  # task index -> (process, parent end of the pipe)
        self.finished = {i for i in range(len(tasks)) if i not in todo}
        self.stop: list[int] = []
        self.failures: list[str] = []
        self.stopped: list[StoppedBySignal] = []

    def on_signal(self, signum, frame) -> None:
        if not self.stop:
            self.log(f"received {signal.Signals(signum).name}: the running runs write a checkpoint and stop")
        self.stop.append(signum)
        for proc, _ in self.running.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signum)

    def start_ready(self) -> None:
        """Start pending runs whose stage-1 dependency is done, up to ``jobs`` at a time."""
        tasks = self.tasks
        while self.pending and len(self.running) < self.jobs and not self.stop and not self.failures:
            ready = [
                i
                for i in self.pending
                if not tasks[i].variant.start_from or _dependency_done(tasks, i, self.finished)
            ]
            if not ready:
                break
            i = ready[0]
            self.pending.remove(i)
            task = tasks[i]
            if task.variant.start_from:
                _copy_stage1_checkpoint(task.work.parent / task.variant.start_from, task.work, task.cfg)
            self.log(f"{_start_message(task)} (output: {task.log_file})")
            parent_end, child_end = self.ctx.Pipe(duplex=False)
            proc = self.ctx.Process(
                target=_child_train, args=(task, child_end), name=f"duda-demo-{task.variant.key}"
            )
            proc.start()
            child_end.close()
            self.running[i] = (proc, parent_end)

    def collect(self) -> None:
        """Take in the runs whose process ended: results, early stops, failures."""
        for i, (proc, conn) in list(self.running.items()):
            if proc.is_alive():
                continue
            proc.join()
            del self.running[i]
            task = self.tasks[i]
            message = conn.recv() if conn.poll() else None
            conn.close()
            if message is None:
                self.failures.append(
                    f"{task.work}: the run's process ended with exit code {proc.exitcode} and no "
                    f"result; its output: {task.log_file}"
                )
            elif message[0] == "error":
                self.failures.append(f"{task.work}: {message[1]} (output: {task.log_file})")
            else:
                _, m, secs, early, signum, ckpt = message
                if early:
                    self.stopped.append(_stopped(task, signum, ckpt))
                else:
                    self.metrics[i], self.seconds[i] = m, secs
                    self.finished.add(i)
                    self.log(f"[seed {task.seed}] {task.variant.key}: done in {secs / 60:.1f} min")

    def raise_outcome(self) -> None:
        """Raise what stopped the demo early (a failure, a signal, a dependency never written)."""
        if self.failures:
            raise DudaError("; ".join(self.failures))
        if self.pending and not self.stop:
            raise DudaError(
                "runs left waiting for a stage-1 checkpoint that never appeared: "
                + ", ".join(str(self.tasks[i].work) for i in self.pending)
            )
        if self.stopped:
            raise self.stopped[0]
        if self.stop:
            raise StoppedBySignal(
                "stopped before the remaining runs started; "
                "run the same `duda demo` command again to continue",
                self.stop[0],
            )


def _dependency_done(tasks, i, finished) -> bool:
    """Whether the run ``tasks[i]`` starts from can give it its stage-1 checkpoint: that run has
    finished, or has written the checkpoint already (files appear whole: written, then renamed),
    so the stage-2 variant trains beside the rest of that run; a run that is not part of this
    demo call must have left the checkpoint behind."""
    task = tasks[i]
    source = task.work.parent / task.variant.start_from
    for j in finished:
        if tasks[j].seed == task.seed and tasks[j].variant.key == task.variant.start_from:
            return True
    return (source / "checkpoints" / _stage1_name(task.cfg)).is_file() or not any(
        t.seed == task.seed and t.variant.key == task.variant.start_from for t in tasks
    )


def _stage1_name(cfg) -> str:
    return f"iter_{cfg.method.duda.stage1_iters:07d}.pt"


def _copy_stage1_checkpoint(source_run: Path, work: Path, cfg) -> None:
    """Put ``source_run``'s checkpoint from the end of DUDA's stage 1 into ``work/checkpoints``."""

    step = cfg.method.duda.stage1_iters
    name = _stage1_name(cfg)
    src = source_run / "checkpoints" / name
    if not src.is_file():
        raise ConfigError(
            f"{src}: missing; the run it starts from must keep its stage-1 checkpoint "
            f"(train.ckpt_every dividing {step}, train.keep_last large enough)"
        )
    dst = work / "checkpoints" / name
    if not dst.is_file():
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)


def aggregate(results: list[RunResult]) -> list[dict]:
    """Mean ± std over seeds per row, keeping the row order of the first seed."""
    order: list[str] = []
    by_name: dict[str, list[RunResult]] = {}
    for r in results:
        if r.name not in by_name:
            order.append(r.name)
        by_name.setdefault(r.name, []).append(r)
    rows = []
    for name in order:
        rs = by_name[name]
        mious = np.array([r.miou for r in rs])
        classes = list(rs[0].per_class)
        per_class = {}
        for c in classes:
            vals = [r.per_class[c] for r in rs if r.per_class[c] is not None]
            per_class[c] = float(np.mean(vals)) if vals else None
        rows.append(
            {
                "name": name,
                "run": rs[0].run,
                "network": rs[0].network,
                "model_name": rs[0].model_name,
                "arch": rs[0].arch,
                "iters": rs[0].iters,
                "seeds": len(rs),
                "miou": float(mious.mean()),
                "miou_std": float(mious.std(ddof=1)) if len(rs) > 1 else 0.0,
                "mious": mious.tolist(),
                "per_class": per_class,
                "work_dirs": [str(r.work_dir) for r in rs],
            }
        )
    return rows

"""Fault injection (issue #14): every bad input or fault a user can meet, run as a user would.

Each case asserts the outcome a user sees: the exit status, one message line naming the path /
key / value, and the files before and after. Most cases call ``duda.cli.main`` in-process (fast);
the concurrent-training and signal cases run real ``duda train`` processes. Faults the machine
cannot be made to produce here (a full disk, a read-only mount: the tests may run as root) are
injected as the ``OSError`` the kernel would raise, at the system call.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from tinyrun import tiny_config, write_config

from duda import inference
from duda.checkpoints import list_checkpoints, load_checkpoint, save_checkpoint
from duda.cli import main
from duda.config import TrainConfig, config_from_dict, load_config
from duda.engine import checkpoint as ckpt_io
from duda.engine.trainer import train
from duda.engine.workdir import LOCK_NAME, WorkDirLock

pytestmark = pytest.mark.slow

ITERS = 8  # the reference run: 8 steps, a checkpoint every 2
OVER = {"train": {"iters": ITERS, "ckpt_every": 2, "eval_every": 0}}


# ----------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def ref_run(synth_root, tmp_path_factory) -> Path:
    """An uninterrupted reference run (daformer, 8 steps); tests copy it, never change it."""
    work = tmp_path_factory.mktemp("faults") / "ref"
    train(config_from_dict(tiny_config(synth_root, work, "daformer", OVER)), progress=False)
    return work


def config_file(synth_root: Path, tmp_path: Path, work: Path, extra: dict | None = None) -> Path:
    over = json.loads(json.dumps(OVER))
    for k, v in (extra or {}).items():
        over.setdefault(k, {}).update(v)
    return write_config(tiny_config(synth_root, work, "daformer", over), tmp_path / "run.yaml")


def copy_run(ref: Path, dst: Path) -> Path:
    shutil.copytree(ref, dst)
    return dst


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes | None]]:
    """Every file under ``root``: size, mtime and (for small files) content."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (
                st.st_size,
                st.st_mtime_ns,
                p.read_bytes() if st.st_size < 1 << 16 else None,
            )
    return out


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_error_line(err: str, command: str) -> str:
    """The error output is exactly one line ``duda CMD: error: ...`` (no traceback)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"duda {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def final_state(work: Path) -> dict:
    return load_checkpoint(work / "checkpoints" / f"iter_{ITERS:07d}.pt")["state"]


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for net in a:
        assert a[net].keys() == b[net].keys(), net
        for k in a[net]:
            assert torch.equal(a[net][k], b[net][k]), f"{net}.{k}"


def read_only(monkeypatch, root: Path, err: int = errno.EROFS) -> None:
    """Make every write below ``root`` fail as on a read-only mount (works when run as root)."""
    root_s = str(Path(root).absolute())

    def below(path) -> bool:
        try:
            p = os.path.abspath(os.fspath(path))
        except TypeError:  # a file descriptor
            return False
        return p == root_s or p.startswith(root_s + os.sep)

    def deny(path):
        raise OSError(err, os.strerror(err), os.fspath(path))

    real_open, real_mkdir, real_replace, real_bopen = os.open, os.mkdir, os.replace, builtins.open
    writing = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def fake_os_open(path, flags, *a, **kw):
        if flags & writing and below(path):
            deny(path)
        return real_open(path, flags, *a, **kw)

    def fake_mkdir(path, *a, **kw):
        if below(path):
            if os.path.isdir(path):
                raise FileExistsError(errno.EEXIST, "File exists", os.fspath(path))
            deny(path)
        return real_mkdir(path, *a, **kw)

    def fake_replace(src, dst, *a, **kw):
        if below(src) or below(dst):
            deny(dst)
        return real_replace(src, dst, *a, **kw)

    def fake_open(file, mode="r", *a, **kw):
        if any(c in mode for c in "wax+") and below(file):
            deny(file)
        return real_bopen(file, mode, *a, **kw)

    monkeypatch.setattr(os, "open", fake_os_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    monkeypatch.setattr(os, "replace", fake_replace)
    monkeypatch.setattr(os, "rename", fake_replace)
    monkeypatch.setattr(builtins, "open", fake_open)
    monkeypatch.setattr(io, "open", fake_open)


def run_cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "duda", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def wait_until(cond, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    t0 = time.time()
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early ({proc.returncode}): {proc.stdout.read().decode()}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError("timed out")
        time.sleep(0.02)


def train_steps_logged(work: Path) -> int:
    path = work / "metrics.jsonl"
    if not path.is_file():
        return 0
    return sum('"split": "train"' in line for line in path.read_text().splitlines())


# ------------------------------------------------------- 1. a work_dir that already holds a run


def test_rerun_without_resume_is_refused_and_changes_nothing(ref_run, synth_root, tmp_path, capsys):
    work = copy_run(ref_run, tmp_path / "run")
    cfg = config_file(synth_root, tmp_path, work)
    before = snapshot(work)
    code, _, err = cli(capsys, "train", cfg, "--no-progress")
    line = one_error_line(err, "train")
    assert code == 2
    assert str(work) in line and "--resume" in line and "--overwrite" in line and "iter_0000008.pt" in line
    assert snapshot(work) == before  # model/, eval.json, metrics.jsonl, checkpoints untouched
    assert not (work / LOCK_NAME).exists()


def test_overwrite_moves_the_old_run_aside(ref_run, synth_root, tmp_path, capsys):
    work = copy_run(ref_run, tmp_path / "run")
    cfg = config_file(synth_root, tmp_path, work)
    before = snapshot(work)
    code, out, _ = cli(capsys, "train", cfg, "--no-progress", "--overwrite", "--set", "train.iters=2")
    assert code == 0
    (aside,) = tmp_path.glob("run.replaced-*")
    assert f"moved the previous run in {work} to {aside}" in out
    assert {k: v[0] for k, v in snapshot(aside).items()} == {k: v[0] for k, v in before.items()}
    assert [s for s, _ in list_checkpoints(work / "checkpoints")] == [2]  # only the new run's
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 2


def test_resume_and_overwrite_together_are_refused(synth_root, tmp_path, capsys):
    cfg = config_file(synth_root, tmp_path, tmp_path / "run")
    code, _, err = cli(capsys, "train", cfg, "--resume", "--overwrite")
    assert code == 2 and "--resume and --overwrite" in one_error_line(err, "train")
    assert not (tmp_path / "run").exists()


def test_pruning_never_deletes_the_newest_checkpoint_of_the_run(tmp_path):
    save_checkpoint(tmp_path, 9, {"step": 9}, keep_last=1)  # left behind by some other run
    save_checkpoint(tmp_path, 2, {"step": 2}, keep_last=1)
    save_checkpoint(tmp_path, 3, {"step": 3}, keep_last=1)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [3, 9]  # before: [9] (step 3 deleted)
    save_checkpoint(tmp_path, 4, {"step": 4}, keep_last=2)
    save_checkpoint(tmp_path, 5, {"step": 5}, keep_last=2)
    assert [s for s, _ in list_checkpoints(tmp_path)] == [4, 5, 9]


# ------------------------------------------------------------ 2. two trainings, one work_dir


def test_concurrent_training_is_refused_and_a_stale_lock_taken_over(synth_root, tmp_path, capsys):
    work = tmp_path / "run"
    cfg = config_file(synth_root, tmp_path, work, {"train": {"iters": 100000, "ckpt_every": 0}})
    first = run_cli(["train", str(cfg), "--no-progress"])
    try:
        wait_until(lambda: train_steps_logged(work) >= 1, first)
        holder = json.loads((work / LOCK_NAME).read_text())
        assert holder["pid"] == first.pid and holder["host"] == socket.gethostname()
        metrics_before = (work / "metrics.jsonl").stat().st_size
        code, _, err = cli(capsys, "train", cfg, "--no-progress", "--resume")  # resume too: refused
        line = one_error_line(err, "train")
        assert code == 2
        assert f"{work} is in use by another training (PID {first.pid} on host {socket.gethostname()}" in line
        assert first.poll() is None  # the first run goes on undisturbed
        wait_until(lambda: (work / "metrics.jsonl").stat().st_size > metrics_before, first)
    finally:
        first.kill()  # SIGKILL: no chance to release the lock
        first.wait(timeout=60)
    assert (work / LOCK_NAME).is_file()  # the stale lock of the killed run
    code, out, _ = cli(capsys, "train", cfg, "--no-progress", "--overwrite", "--set", "train.iters=2")
    assert code == 0
    assert f"took over the stale lock of {work} left by PID {first.pid}" in out
    assert not (work / LOCK_NAME).exists()  # released at the end


def test_lock_in_process_names_the_holder(tmp_path):
    with WorkDirLock(tmp_path / "w"), pytest.raises(Exception, match=rf"PID {os.getpid()} on host"):
        WorkDirLock(tmp_path / "w").acquire()
    assert not (tmp_path / "w" / LOCK_NAME).exists()
    WorkDirLock(tmp_path / "w").acquire().release()


def test_lock_without_flock_checks_the_pid(tmp_path, monkeypatch):
    """File systems without flock (some network mounts): the holder's PID decides, same host only."""
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_flock)
    work = tmp_path / "w"
    work.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = socket.gethostname()
    (work / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": host, "started": 1.0}))
    lock = WorkDirLock(work).acquire()  # the holder is gone: taken over
    assert lock.took_over["pid"] == dead.pid and "no longer running" in lock.stale_note
    lock.release()
    (work / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": host, "started": 1.0}))
    with pytest.raises(Exception, match=rf"in use by another training \(PID {os.getppid()} on host {host}"):
        WorkDirLock(work).acquire()
    (work / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": 1.0}))
    with pytest.raises(Exception, match="may be in use by PID 1 on host elsewhere"):
        WorkDirLock(work).acquire()


# ------------------------------------------------------ 3. --resume with another run's checkpoint


@pytest.mark.parametrize(
    "override,key",
    [
        ("model.name=segformer_mit_tiny", "model.name"),
        ("model.arch={embed_dims: [8, 16, 32, 32], head_channels: 16}", "model.arch.embed_dims"),
        ("method.name=source_only", "method.name"),
    ],
)
def test_resume_with_another_runs_checkpoint_names_the_keys_and_writes_nothing(
    ref_run, synth_root, tmp_path, capsys, override, key
):
    work = copy_run(ref_run, tmp_path / "run")
    cfg = config_file(synth_root, tmp_path, work)
    before = snapshot(work)
    code, _, err = cli(capsys, "train", cfg, "--resume", "--no-progress", "--set", override)
    line = one_error_line(err, "train")
    assert code == 2 and "iter_0000008.pt" in line and f"{key}:" in line and "nothing was changed" in line
    assert snapshot(work) == before  # config.yaml included


def test_incompatibilities_name_classes_and_duda_large_model():
    base = tiny_config(Path("/d"), Path("/w"), "duda")
    other = json.loads(json.dumps(base))
    other["method"]["duda"]["large"]["name"] = "segformer_mit_tiny"
    cfg_a, cfg_b = (yaml.safe_load(yaml.safe_dump(c)) for c in (base, other))
    bad = ckpt_io.incompatibilities(cfg_a, cfg_b, 19, 7)
    assert any(b.startswith("method.duda.large.name:") for b in bad)
    assert "number of classes: 19 in the checkpoint, 7 now" in bad
    assert ckpt_io.incompatibilities(cfg_a, cfg_a, 19, 19) == []


# -------------------------------------------------------- 4. a truncated newest checkpoint


def test_truncated_latest_checkpoint_falls_back_to_the_previous_one(ref_run, synth_root, tmp_path, capsys):
    work = copy_run(ref_run, tmp_path / "run")
    for name in ("model", "eval.json"):
        shutil.rmtree(work / name) if (work / name).is_dir() else (work / name).unlink()
    newest = work / "checkpoints" / "iter_0000008.pt"
    newest.write_bytes(newest.read_bytes()[:4000])  # killed while copying, disk hiccup, ...
    cfg = config_file(synth_root, tmp_path, work)
    code, out, _ = cli(capsys, "train", cfg, "--resume", "--no-progress")
    assert code == 0, out
    assert re.search(r"warning: \S+iter_0000008\.pt: not a readable duda checkpoint .*renamed it to "
                     r"iter_0000008\.pt\.corrupt, falling back to iter_0000006\.pt", out), out  # fmt: skip
    assert "resuming" in out and "(step 6)" in out
    assert (work / "checkpoints" / "iter_0000008.pt.corrupt").is_file()
    assert_same_weights(final_state(work), final_state(ref_run))  # as if nothing had happened


def test_no_readable_checkpoint_at_all_is_an_error(ref_run, synth_root, tmp_path, capsys):
    work = copy_run(ref_run, tmp_path / "run")
    for _, p in list_checkpoints(work / "checkpoints"):
        p.write_bytes(b"junk")
    before = snapshot(work)
    code, _, err = cli(capsys, "train", config_file(synth_root, tmp_path, work), "--resume")
    assert code == 2 and "none of the 4 checkpoints is readable" in one_error_line(err, "train")
    assert snapshot(work) == before


def test_default_keep_last_leaves_a_checkpoint_to_fall_back_to():
    assert TrainConfig().keep_last >= 2


# ------------------------------------------------------- 5. signals: exit 128+N, then resume


def test_signal_at_a_random_step_exits_128_plus_n_and_resumes_bit_identically(ref_run, synth_root, tmp_path):
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    sig = rng.choice([signal.SIGTERM, signal.SIGINT])
    at = rng.randrange(1, ITERS - 2)  # leave room: the run must still be going when the signal lands
    note = f"seed {seed}: {sig.name} after step {at}"
    work = tmp_path / "run"
    cfg = config_file(synth_root, tmp_path, work, {"train": {"ckpt_every": 1000}})  # only the signal's
    proc = run_cli(["train", str(cfg), "--no-progress"])
    wait_until(lambda: train_steps_logged(work) >= at, proc)
    proc.send_signal(sig)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 128 + sig, f"{note}: {out}"
    m = re.search(r"checkpoint written at step (\d+): (\S+iter_\d{7}\.pt)", out)
    assert m and Path(m.group(2)).is_file(), f"{note}: {out}"
    assert f"stopped by {sig.name} (exit {128 + sig})" in out
    step = int(m.group(1))
    assert at <= step < ITERS, note
    assert not (work / "model").exists() and not (work / LOCK_NAME).exists()
    done = run_cli(["train", str(cfg), "--no-progress", "--resume"])
    out = done.communicate(timeout=300)[0].decode()
    assert done.returncode == 0 and f"(step {step})" in out, f"{note}: {out}"
    assert_same_weights(final_state(work), final_state(ref_run))
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == list(range(1, ITERS + 1)), note  # each step logged once over both attempts


def _children(pid: int) -> list[int]:
    """The PIDs of a process's children (Linux /proc)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with open(task / "children") as fh:
            kids += [int(k) for k in fh.read().split()]
    return kids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs /proc to find the loader workers")
def test_sigkill_with_loader_workers_alive_then_resume_takes_over_and_ends_identical(
    ref_run, synth_root, tmp_path, capsys
):
    """kill -9 (what the out-of-memory killer does) at a random step while data-loader workers run:
    the workers outlive the trainer for a few seconds, and --resume right away must take the lock
    over (naming the dead PID), continue from the last checkpoint and end as the uninterrupted run."""
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    at = rng.randrange(2, ITERS - 1)  # a checkpoint (every 2 steps) exists by then
    note = f"seed {seed}: SIGKILL after step {at}"
    work = tmp_path / "run"
    cfg = config_file(synth_root, tmp_path, work, {"data": {"workers": 2}})
    proc = run_cli(["train", str(cfg), "--no-progress"])
    wait_until(lambda: train_steps_logged(work) >= at and list_checkpoints(work / "checkpoints"), proc)
    workers = _children(proc.pid)
    assert len(workers) >= 2, f"{note}: no loader workers found"
    proc.kill()
    proc.wait(timeout=60)
    assert any(_alive(w) for w in workers), f"{note}: the workers died with the trainer; nothing tested"
    code, out, err = cli(capsys, "train", cfg, "--no-progress", "--resume")
    assert code == 0, f"{note}: {out}{err}"
    assert f"took over the stale lock of {work} left by PID {proc.pid}" in out, f"{note}: {out}"
    assert "resuming" in out, note
    assert_same_weights(final_state(work), final_state(ref_run))  # workers 0 or 2: the same stream
    records = [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]
    train_steps = [r["step"] for r in records if r["split"] == "train"]
    assert train_steps == list(range(1, ITERS + 1)), note  # steps past the checkpoint logged once
    assert not (work / LOCK_NAME).exists()


def test_forked_children_do_not_keep_the_lock(tmp_path):
    """A child made with fork (a loader worker) closes its copy of the lock: once the parent
    lets go, the lock is free although the child still runs."""
    lock = WorkDirLock(tmp_path / "w").acquire()
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: outlive the parent's lock by a while, then leave without clean-up
        os.write(ready_w, b"1")  # the fork hooks have run
        time.sleep(3)
        os._exit(0)
    os.read(ready_r, 1)
    os.close(ready_r)
    os.close(ready_w)
    try:
        fd = os.open(lock.path, os.O_RDONLY)
        os.close(lock._fd)  # the parent's own descriptor gone, as at a kill -9 (no unlink, no unlock)
        lock._fd = None
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError while the child held it
        os.close(fd)
        assert _alive(pid)
    finally:
        os.waitpid(pid, 0)


def test_lock_held_only_by_a_dead_holders_children_is_replaced(tmp_path, monkeypatch):
    """Children started some other way than fork (here: a process handed the descriptor) may keep
    a dead trainer's lock; after a short wait the lock file is replaced, with a note."""
    from duda.engine import workdir

    monkeypatch.setattr(workdir, "ORPHAN_WAIT_S", 0.3)
    work = tmp_path / "w"
    work.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    fd = os.open(work / LOCK_NAME, os.O_RDWR | os.O_CREAT)
    os.write(fd, json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": 1.0}).encode())
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX)
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=[fd])
    os.close(fd)  # only the orphan holds the lock now
    try:
        lock = WorkDirLock(work).acquire()
        assert lock.took_over["pid"] == dead.pid
        assert f"left by PID {dead.pid}" in lock.stale_note and "replaced that file" in lock.stale_note
        assert json.loads((work / LOCK_NAME).read_text())["pid"] == os.getpid()
        with pytest.raises(Exception, match=rf"in use by another training \(PID {os.getpid()}"):
            WorkDirLock(work).acquire()  # the new lock holds against others
        lock.release()
        # a living holder is never replaced, however long it holds
        fd = os.open(work / LOCK_NAME, os.O_RDWR | os.O_CREAT)
        os.write(fd, json.dumps({"pid": orphan.pid, "host": socket.gethostname(), "started": 2.0}).encode())
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(Exception, match=rf"in use by another training \(PID {orphan.pid}"):
            WorkDirLock(work).acquire()
        os.close(fd)
    finally:
        orphan.kill()
        orphan.wait()


# ------------------------------------------ 5b. --resume of a finished run with another architecture

ARCH_CHANGES = {  # every architecture field of the tiny model: a value other than the run's
    "embed_dims": [8, 16, 32, 32],
    "depths": [1, 1, 1, 2],
    "num_heads": [1, 1, 1, 4],
    "sr_ratios": [8, 4, 1, 1],
    "mlp_ratios": [4, 4, 4, 2],
    "patch_sizes": [7, 3, 3, 5],
    "strides": [4, 2, 2, 1],
    "drop_path_rate": 0.2,
    "head_channels": 32,
    "head_dilations": [1, 6, 12, 24],
    "dropout": 0.2,
}


def test_arch_changes_cover_every_field():
    from duda.models.factory import allowed_overrides

    assert set(ARCH_CHANGES) == set(allowed_overrides("daformer_mit_tiny"))


@pytest.fixture(scope="module")
def duda_ref_run(synth_root, tmp_path_factory) -> Path:
    """A finished tiny DUDA run (3 networks of 2 architectures)."""
    work = tmp_path_factory.mktemp("faults") / "duda_ref"
    over = {"train": {"iters": 3, "ckpt_every": 0, "eval_every": 0}}
    train(config_from_dict(tiny_config(synth_root, work, "duda", over)), progress=False)
    return work


def _expect_arch_refusal(capsys, work: Path, cfg: Path, key: str, field: str, value) -> None:
    from duda.models.factory import resolve_arch

    saved = load_checkpoint(list_checkpoints(work / "checkpoints")[-1][1])["config"]
    model = saved["model"] if key == "model" else saved["method"]["duda"]["large"]
    old = resolve_arch(model["name"], model.get("arch") or {})[field]
    old = list(old) if isinstance(old, tuple) else old
    before = snapshot(work)
    code, out, err = cli(
        capsys, "train", cfg, "--resume", "--no-progress", "--set", f"{key}.arch.{field}={json.dumps(value)}"
    )
    line = one_error_line(err, "train")
    assert code == 2, out
    assert f"({key}.arch.{field}: {old!r} in the checkpoint, {value!r} now)" in line, line
    assert "nothing was changed" in line
    assert snapshot(work) == before  # config.yaml, model/, eval.json, metrics untouched
    assert not (work / LOCK_NAME).exists()


@pytest.mark.parametrize("field", sorted(ARCH_CHANGES))
def test_resume_of_a_finished_run_with_another_arch_field_is_refused(
    ref_run, synth_root, tmp_path, capsys, field
):
    work = copy_run(ref_run, tmp_path / "run")
    assert (work / "model").is_dir() and (work / "eval.json").is_file()  # finished
    cfg = config_file(synth_root, tmp_path, work)
    _expect_arch_refusal(capsys, work, cfg, "model", field, ARCH_CHANGES[field])


@pytest.mark.parametrize("key,field", [("model", "head_channels"), ("method.duda.large", "head_channels"),
                                       ("method.duda.large", "depths")])  # fmt: skip
def test_resume_of_a_finished_duda_run_names_the_network_and_field(
    duda_ref_run, synth_root, tmp_path, capsys, key, field
):
    work = copy_run(duda_ref_run, tmp_path / "run")
    over = {"train": {"iters": 3, "ckpt_every": 0, "eval_every": 0}}
    cfg = write_config(tiny_config(synth_root, work, "duda", over), tmp_path / "run.yaml")
    _expect_arch_refusal(capsys, work, cfg, key, field, ARCH_CHANGES[field])


# ------------------------------------------------------------------ 6. messages, not tracebacks


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda(synth_root, tmp_path, capsys, ref_run):
    cfg = config_file(synth_root, tmp_path, tmp_path / "run")
    code, _, err = cli(capsys, "train", cfg, "--set", "train.device=cuda")
    assert code == 2 and "train.device 'cuda': CUDA is not available" in one_error_line(err, "train")
    assert not (tmp_path / "run").exists()
    code, _, err = cli(
        capsys, "predict", ref_run / "model", tmp_path, "--out", tmp_path / "p", "--device", "cuda"
    )
    assert code == 2 and "--device 'cuda': CUDA is not available" in one_error_line(err, "predict")
    code, _, err = cli(
        capsys, "predict", ref_run / "model", tmp_path, "--out", tmp_path / "p", "--device", "gpu0"
    )
    assert code == 2 and "--device 'gpu0': not a device" in one_error_line(err, "predict")


class DiskFullAfter(io.RawIOBase):
    """A file that takes ``limit`` bytes and then fails as a full disk does."""

    def __init__(self, fh, limit: int) -> None:
        self.fh, self.left = fh, limit

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:
        if len(b) > self.left:
            self.fh.write(bytes(b[: self.left]))
            self.left = 0
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.left -= len(b)
        return self.fh.write(b)


def test_disk_full_while_checkpointing(ref_run, synth_root, tmp_path, capsys, monkeypatch):
    real_save = torch.save

    def save(obj, f, *a, **kw):
        if isinstance(obj, dict) and obj.get("step") == 4:
            return real_save(obj, DiskFullAfter(f, 5000), *a, **kw)
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", save)
    work = tmp_path / "run"
    cfg = config_file(synth_root, tmp_path, work)
    code, _, err = cli(capsys, "train", cfg, "--no-progress")
    line = one_error_line(err, "train")
    assert code == 2
    assert f"cannot write checkpoint {work}/checkpoints/iter_0000004.pt: no space left on device" in line
    assert f"the last good checkpoint is {work}/checkpoints/iter_0000002.pt" in line
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["iter_0000002.pt"]  # no partial file
    assert not (work / LOCK_NAME).exists()
    monkeypatch.setattr(torch, "save", real_save)  # space freed: resume ends as if nothing happened
    code, out, _ = cli(capsys, "train", cfg, "--no-progress", "--resume")
    assert code == 0 and "(step 2)" in out
    assert_same_weights(final_state(work), final_state(ref_run))


def unprepared_copy(synth_root: Path, dst: Path) -> Path:
    return Path(
        shutil.copytree(
            synth_root / "source", dst, ignore=shutil.ignore_patterns("*_labelTrainIds.png", "*.json")
        )
    )


def test_prepare_on_a_read_only_dataset(synth_root, tmp_path, capsys, monkeypatch):
    root = unprepared_copy(synth_root, tmp_path / "ro")
    before = snapshot(root)
    read_only(monkeypatch, root)
    code, _, err = cli(capsys, "prepare", "gta", root, "--no-progress")
    line = one_error_line(err, "prepare")
    assert code == 2 and str(root) in line and "read-only file system" in line and "writable copy" in line
    assert snapshot(root) == before
    # an already prepared read-only dataset needs no write: fine
    monkeypatch.undo()
    ready = Path(shutil.copytree(synth_root / "source", tmp_path / "ready"))
    read_only(monkeypatch, ready)
    code, out, _ = cli(capsys, "prepare", "gta", ready, "--no-progress")
    assert code == 0 and "0 converted" in out


def test_read_only_work_dir_and_out_folders(ref_run, synth_root, tmp_path, capsys, monkeypatch):
    (tmp_path / "ro").mkdir()
    img = tmp_path / "img.png"
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(img)
    cfg = config_file(synth_root, tmp_path, tmp_path / "ro" / "run")
    read_only(monkeypatch, tmp_path / "ro")
    code, _, err = cli(capsys, "train", cfg, "--no-progress")
    line = one_error_line(err, "train")
    assert code == 2 and f"{tmp_path}/ro/run" in line and "read-only file system" in line
    code, _, err = cli(capsys, "predict", ref_run / "model", img, "--out", tmp_path / "ro" / "pred")
    line = one_error_line(err, "predict")
    assert code == 2 and f"--out {tmp_path}/ro/pred" in line and "read-only file system" in line
    monkeypatch.undo()
    assert list((tmp_path / "ro").iterdir()) == []


def test_out_that_is_a_file(ref_run, tmp_path, capsys):
    img = tmp_path / "img.png"
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(img)
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    code, _, err = cli(capsys, "predict", ref_run / "model", img, "--out", a_file)
    assert code == 2 and f"--out {a_file}: is a file" in one_error_line(err, "predict")
    code, _, err = cli(capsys, "predict", ref_run / "model", img, "--out", a_file / "sub")
    assert code == 2 and "a part of the path is a file" in one_error_line(err, "predict")
    code, _, err = cli(capsys, "export", ref_run / "model", "--out", tmp_path)
    assert code == 2 and "is a folder, expected a file name" in one_error_line(err, "export")
    code, _, err = cli(capsys, "eval", "--pred", tmp_path, "--gt", tmp_path, "--out", tmp_path)
    assert code == 2 and "is a folder, expected a JSON file" in one_error_line(err, "eval")
    assert a_file.read_text() == "x"


def test_image_thinner_than_the_kernel_is_padded(ref_run, tmp_path, capsys):
    for name, (h, w) in {"strip": (3, 500), "column": (500, 3), "dot": (1, 1)}.items():
        Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(tmp_path / f"{name}.png")
    code, out, err = cli(
        capsys, "predict", ref_run / "model", tmp_path, "--out", tmp_path / "p", "--no-resize"
    )
    assert code == 0, err
    assert np.asarray(Image.open(tmp_path / "p" / "strip_trainIds.png")).shape == (3, 500)
    assert np.asarray(Image.open(tmp_path / "p" / "column_trainIds.png")).shape == (500, 3)
    code, _, err = cli(capsys, "predict", ref_run / "model", tmp_path / "strip.png", "--out", tmp_path / "q",
                       "--mode", "slide", "--crop", "16", "16", "--stride", "8", "8")  # fmt: skip
    assert code == 0, err


# --------------------------------------------------- 7. one unreadable image in a predict folder


def test_predict_keeps_going_past_an_unreadable_image(ref_run, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(np.full((40, 60, 3), 60 * i, np.uint8)).save(src / f"ok{i}.png")
    (src / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    code, out, err = cli(capsys, "predict", ref_run / "model", src, "--out", tmp_path / "p")
    assert code == 1
    assert "wrote 9 files for 3 images" in out
    assert "1 of 4 images could not be predicted" in err and f"{src / 'broken.jpg'}: cannot read" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "p").glob("*_trainIds.png")) == [
        f"ok{i}_trainIds.png" for i in range(3)
    ]
    code, _, err = cli(capsys, "predict", ref_run / "model", src, "--out", tmp_path / "s", "--strict")
    assert code == 2 and f"{src / 'broken.jpg'}: cannot read" in one_error_line(err, "predict")


# ------------------------------------------------ 8. predictions with values outside the classes


def test_eval_refuses_predictions_outside_the_classes(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    gt = np.zeros((4, 4), np.uint8)
    pred = gt.copy()
    pred[0, :2] = 40
    Image.fromarray(gt).save(tmp_path / "gt" / "a.png")
    Image.fromarray(gt).save(tmp_path / "gt" / "b.png")
    Image.fromarray(pred).save(tmp_path / "pred" / "a.png")
    Image.fromarray(gt).save(tmp_path / "pred" / "b.png")
    code, _, err = cli(
        capsys, "eval", "--pred", tmp_path / "pred", "--gt", tmp_path / "gt", "--out", tmp_path / "r.json"
    )
    line = one_error_line(err, "eval")
    assert (
        code == 2 and "1 of 2 predictions" in line and f"{tmp_path / 'pred' / 'a.png'} (2 px: [40])" in line
    )
    assert not (tmp_path / "r.json").exists()


# ------------------------------------------------------------ 9. every float spelling is a float


def test_exponent_floats_are_numbers(synth_root, tmp_path):
    cfg = config_file(synth_root, tmp_path, tmp_path / "run")
    text = cfg.read_text().replace("lr: 0.001", "lr: 6e-4")
    assert "lr: 6e-4" in text
    cfg.write_text(text)
    assert load_config(str(cfg)).optim.lr == 6e-4
    loaded = load_config(str(cfg), ["optim.lr=1e-3", "optim.warmup_ratio=1E-6", "train.iters=4e4"])
    assert loaded.optim.lr == 1e-3 and loaded.optim.warmup_ratio == 1e-6 and loaded.train.iters == 40000
    assert load_config(str(cfg), ["optim.lr=+5.e-4"]).optim.lr == 5e-4


# --------------------------------------------------------------------- 10. model is required


def test_config_without_model_is_refused_before_anything_is_written(synth_root, tmp_path, capsys):
    data = tiny_config(synth_root, tmp_path / "run", "daformer")
    del data["model"]
    cfg = write_config(data, tmp_path / "nomodel.yaml")
    code, _, err = cli(capsys, "train", cfg)
    line = one_error_line(err, "train")
    assert code == 2 and "missing required section 'model'" in line and "nomodel.yaml" in line
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------------- 11. the umask's file mode


def test_written_files_follow_the_umask(ref_run, synth_root, tmp_path, capsys):
    old = os.umask(0o027)
    try:
        img = tmp_path / "img.png"
        Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(img)
        assert cli(capsys, "predict", ref_run / "model", img, "--out", tmp_path / "p")[0] == 0
        root = unprepared_copy(synth_root, tmp_path / "ds")
        assert cli(capsys, "prepare", "gta", root, "--no-progress")[0] == 0
        save_checkpoint(tmp_path / "ck", 1, {"step": 1})
        model = inference.load_inference_model(ref_run / "model")
        inference.save_deploy_model(tmp_path / "m", model.model, {
            "classes": model.classes, "palette": model.palette, "mean": model.mean, "std": model.std,
            "resize": model.resize,
        })  # fmt: skip
        written = [
            *(tmp_path / "p").glob("*.png"),
            *root.glob("labels/*_labelTrainIds.png"),
            root / "sample_class_stats.json",
            tmp_path / "ck" / "iter_0000001.pt",
            tmp_path / "m" / "model.safetensors",
            tmp_path / "m" / "model.json",
        ]
        assert len(written) > 6
        modes = {str(p.relative_to(tmp_path)): oct(p.stat().st_mode & 0o777) for p in written}
        assert set(modes.values()) == {"0o640"}, modes  # before: 0o600
    finally:
        os.umask(old)


# ------------------------------------------------------------------ 12. memory of large images


def test_large_images_are_labelled_in_bounded_pieces_with_identical_labels():
    from duda.inference.modes import argmax_upsampled, infer_slide, slide_labels, upsample_logits
    from duda.models import build_model

    torch.manual_seed(0)
    logits = torch.randn(1, 19, 17, 23)
    full = upsample_logits(logits, (600, 800)).argmax(1).to(torch.uint8)
    strips = argmax_upsampled(logits, (600, 800), max_bytes=1 << 18)  # ~20 rows at a time
    assert torch.equal(full, strips)
    model = build_model("segformer_mit_tiny", num_classes=19).eval()
    img = torch.randn(1, 3, 150, 90)
    whole = infer_slide(model, img, (64, 64), (40, 40)).argmax(1).to(torch.uint8)
    assert torch.equal(slide_labels(model, img, (64, 64), (40, 40)), whole)


def test_predict_switches_to_windows_above_max_pixels(ref_run, tmp_path, capsys):
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), np.uint8)).save(
        tmp_path / "big.png"
    )
    args = ["--no-resize", "--max-pixels", "10000", "--crop", "64", "64", "--stride", "48", "48"]
    code, out, _ = cli(
        capsys, "predict", ref_run / "model", tmp_path / "big.png", "--out", tmp_path / "p", *args
    )
    assert code == 0 and "1 image(s) above --max-pixels 10000 were predicted with sliding windows" in out
    assert np.asarray(Image.open(tmp_path / "p" / "big_trainIds.png")).shape == (300, 400)


# ------------------------------------------------ 13. a failed start leaves no half-made folder


def test_failed_start_leaves_no_work_dir_and_names_absolute_paths(synth_root, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config_file(synth_root, tmp_path, Path("rel_run"))
    code, _, err = cli(capsys, "train", cfg, "--set", "data.source.root=data/missing")
    assert code == 2 and f"folder not found: {tmp_path}/data/missing" in err
    code, _, err = cli(capsys, "train", cfg, "--set", "model.name=no_such_model")
    assert code == 2 and "no_such_model" in err
    assert not (tmp_path / "rel_run").exists()


# ------------------------------------------------- 14. where the model went; no bars in logs


def test_training_names_the_model_and_draws_no_bars_into_a_log(synth_root, tmp_path, capsys):
    cfg = config_file(synth_root, tmp_path, tmp_path / "run", {"train": {"iters": 2}})
    code, out, err = cli(capsys, "train", cfg)  # progress on, but stdout/stderr are not a terminal
    assert code == 0
    assert f"model {tmp_path}/run/model" in out
    assert "\r" not in out + err

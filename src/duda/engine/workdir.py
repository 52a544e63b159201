"""One run per work_dir: a lock that names its holder, and what counts as a run already there.

``WORK_DIR/.duda.lock`` is held with ``flock`` for the whole training and holds the holder's PID,
host and start time. The kernel drops the lock when its process dies however it dies (kill -9,
out of memory, node reboot), so a lock file whose lock is not held is stale: the next run takes
it over and says whose it was. A second training of the same work_dir meanwhile is refused with
the holder's PID and host. On file systems without ``flock`` the PID is checked instead (same
host only).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

from duda.errors import DudaError
from duda.files import ensure_dir, file_mode, write_error

LOCK_NAME = ".duda.lock"


class WorkDirBusyError(DudaError):
    """Another training holds the work_dir."""


class ExistingRunError(DudaError):
    """The work_dir holds a run and neither resume nor overwrite was asked for."""


def _holder_text(info: dict) -> str:
    if not info:
        return "an unknown process"
    started = info.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"PID {info.get('pid', '?')} on host {info.get('host', '?')}, started {when}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class WorkDirLock:
    """An exclusive lock on a work_dir; ``acquire`` raises :class:`WorkDirBusyError` naming the holder."""

    def __init__(self, work_dir: str | os.PathLike) -> None:
        self.work_dir = Path(work_dir)
        self.path = self.work_dir / LOCK_NAME
        self._fd: int | None = None
        self.took_over: dict | None = None  # the stale holder replaced, if any

    def _read(self, fd: int) -> dict:
        with contextlib.suppress(OSError, ValueError):
            os.lseek(fd, 0, os.SEEK_SET)
            data = os.read(fd, 4096).decode("utf-8", "replace").strip()
            return json.loads(data) if data else {}
        return {}

    def acquire(self) -> WorkDirLock:
        import fcntl

        ensure_dir(self.work_dir, "work_dir")
        for _ in range(10):  # retried only when a releasing holder unlinked the file meanwhile
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, file_mode())
            except OSError as exc:
                raise write_error(self.path, exc, "work_dir lock") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._read(fd)
                os.close(fd)
                raise WorkDirBusyError(
                    f"{self.work_dir} is in use by another training ({_holder_text(holder)}; lock file "
                    f"{self.path}); wait for it to end, stop it, or train into another work_dir"
                ) from None
            except OSError as exc:
                if exc.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                    os.close(fd)
                    raise write_error(self.path, exc, "work_dir lock") from None
                self._check_pid_lock(fd)  # no flock on this file system
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the previous holder removed the file between our open and flock
                os.close(fd)
                continue
            previous = self._read(fd)
            if previous and previous.get("pid") != os.getpid():
                self.took_over = previous
            record = {
                "pid": os.getpid(),
                "host": socket.gethostname(),
                "started": round(time.time(), 3),
                "command": " ".join(sys.argv),
            }
            try:
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, (json.dumps(record) + "\n").encode())
            except OSError as exc:
                os.close(fd)
                raise write_error(self.path, exc, "work_dir lock") from None
            self._fd = fd
            return self
        raise WorkDirBusyError(f"{self.work_dir}: could not take the lock {self.path} (it keeps changing)")

    def _check_pid_lock(self, fd: int) -> None:
        holder = self._read(fd)
        pid = holder.get("pid")
        if not holder or pid == os.getpid():
            return
        if holder.get("host") != socket.gethostname():
            os.close(fd)
            raise WorkDirBusyError(
                f"{self.work_dir} may be in use by {_holder_text(holder)} (this file system has no "
                f"locks, so it cannot be checked from here); if that run is over, delete {self.path}"
            )
        if isinstance(pid, int) and _pid_alive(pid):
            os.close(fd)
            raise WorkDirBusyError(
                f"{self.work_dir} is in use by another training ({_holder_text(holder)}; lock file "
                f"{self.path}); wait for it to end, stop it, or train into another work_dir"
            )

    @property
    def stale_note(self) -> str | None:
        if not self.took_over:
            return None
        return (
            f"note: took over the stale lock of {self.work_dir} left by {_holder_text(self.took_over)}, "
            "which is no longer running"
        )

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        with contextlib.suppress(OSError):
            os.unlink(self.path)  # before unlocking: a waiting opener then sees a new inode
        with contextlib.suppress(OSError):
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> WorkDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def run_contents(work_dir: str | os.PathLike) -> list[str]:
    """What in ``work_dir`` belongs to an earlier run (empty when it holds none): checkpoints,
    the shipped model, results, metrics, the config."""
    from duda.engine.checkpoint import list_checkpoints

    work_dir = Path(work_dir)
    found = []
    ckpts = list_checkpoints(work_dir / "checkpoints")
    if ckpts:
        found.append(f"{len(ckpts)} checkpoint(s) up to {ckpts[-1][1].name}")
    if (work_dir / "model").is_dir() and any((work_dir / "model").iterdir()):
        found.append("model/")
    for name in ("eval.json", "metrics.jsonl", "config.yaml"):
        if (work_dir / name).is_file():
            found.append(name)
    return found


def move_run_aside(work_dir: str | os.PathLike) -> Path:
    """Move everything in ``work_dir`` except the lock into a new sibling folder
    ``<work_dir>.replaced-<time>`` and return it (nothing is deleted)."""
    work_dir = Path(work_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    aside = work_dir.with_name(f"{work_dir.name}.replaced-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = work_dir.with_name(f"{work_dir.name}.replaced-{stamp}-{n}")
    try:
        aside.mkdir()
        for entry in sorted(work_dir.iterdir()):
            if entry.name != LOCK_NAME:
                os.replace(entry, aside / entry.name)
    except OSError as exc:
        raise write_error(aside, exc, "the previous run's new folder") from None
    return aside

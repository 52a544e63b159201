"""One run per work_dir: a lock that names its holder, and what counts as a run already there.

``WORK_DIR/.duda.lock`` is held with ``flock`` for the whole training and holds the holder's PID,
host and start time. The kernel drops the lock when its process dies however it dies (kill -9,
out of memory, node reboot), so a lock file whose lock is not held is stale: the next run takes
it over and says whose it was. A second training of the same work_dir meanwhile is refused with
the holder's PID and host. On file systems without ``flock`` the PID is checked instead (same
host only).

A ``flock`` belongs to the open file, not to the process: a child made with ``fork`` (a data
loader worker) shares it, and a child that outlives a killed trainer would keep the lock held.
So forked children close their copy of the descriptor at once (``os.register_at_fork``), and a
lock that is still held while its recorded holder is dead on this host (children forked some
other way) is taken over all the same, by replacing the lock file.
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

from duda.checkpoints import list_checkpoints
from duda.errors import DudaError
from duda.files import ensure_dir, file_mode, write_error

LOCK_NAME = ".duda.lock"
ORPHAN_WAIT_S = 6.0  # data-loader workers notice their parent's death within 5 s and exit

_HELD: dict[int, int] = {}  # fd -> PID of the process that took the lock through it


def _close_inherited_locks() -> None:
    """In a forked child: drop the copies of the parent's lock descriptors (the lock stays the
    parent's; the child cannot keep it alive past the parent's death)."""
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_inherited_locks)


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


def _dead_here(holder: dict) -> bool:
    """The recorded holder is a process of this host that no longer runs."""
    pid = holder.get("pid")
    return holder.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid)


class WorkDirLock:
    """An exclusive lock on a work_dir; ``acquire`` raises :class:`WorkDirBusyError` naming the holder."""

    def __init__(self, work_dir: str | os.PathLike) -> None:
        self.work_dir = Path(work_dir)
        self.path = self.work_dir / LOCK_NAME
        self._fd: int | None = None
        self.took_over: dict | None = None  # the stale holder replaced, if any
        self.orphans_held = False  # its lock file was still held by its children (replaced)

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
                if _dead_here(holder):  # only processes the dead trainer forked hold it
                    if not self._released_within(ORPHAN_WAIT_S):
                        self._replace_orphaned(holder)
                    continue
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
            _HELD[fd] = os.getpid()
            return self
        raise WorkDirBusyError(f"{self.work_dir}: could not take the lock {self.path} (it keeps changing)")

    def _released_within(self, seconds: float) -> bool:
        """Wait up to ``seconds`` for the lock file to be unlocked (or replaced)."""
        import fcntl

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                fd = os.open(self.path, os.O_RDWR)
            except FileNotFoundError:
                return True
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                time.sleep(0.1)
            except OSError:
                return True  # let the caller's own attempt report it
            finally:
                os.close(fd)  # (closing drops a lock just taken: the caller locks it again)
        return False

    def _replace_orphaned(self, holder: dict) -> None:
        """Remove the lock file that only a dead trainer's children hold, so that the caller's
        next try locks a new one. One replacer at a time (a ``flock`` on the work_dir folder
        itself), and only while the file still names the same dead holder: two runs resuming at
        once cannot both win."""
        import fcntl

        guard = os.open(self.work_dir, os.O_RDONLY)
        try:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return
            try:
                current = self._read(fd)
            finally:
                os.close(fd)
            if current.get("pid") == holder.get("pid") and current.get("started") == holder.get("started"):
                self.took_over, self.orphans_held = holder, True
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
        finally:
            os.close(guard)  # drops the guard lock

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
        note = (
            f"note: took over the stale lock of {self.work_dir} left by {_holder_text(self.took_over)}, "
            "which is no longer running"
        )
        if self.orphans_held:
            note += f" (processes it had started still held {self.path}; replaced that file)"
        return note

    def release(self) -> None:
        if self._fd is None:
            return
        import fcntl

        fd, self._fd = self._fd, None
        if _HELD.pop(fd, None) != os.getpid():
            return  # a forked copy of this object: the descriptor was closed at the fork
        with contextlib.suppress(OSError):
            os.unlink(self.path)  # before unlocking: a waiting opener then sees a new inode
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def __enter__(self) -> WorkDirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def run_contents(work_dir: str | os.PathLike) -> list[str]:
    """What in ``work_dir`` belongs to an earlier run (empty when it holds none): checkpoints,
    the shipped model, results, metrics, the config."""

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

"""Writing files safely: atomic replacement, the umask's permissions, errors that name the path.

Every file duda writes goes through :func:`atomic_path` (or :func:`write_text` / :func:`ensure_dir`):
the content is written to a temporary file beside the target and renamed over it, so a crash, a
full disk or a signal never leaves half a file; the finished file gets the mode ordinary file
creation would give it (``0o666`` minus the umask, so shared dataset and model folders stay
readable by colleagues; ``tempfile.mkstemp`` alone makes them ``0o600``); and an ``OSError`` (disk
full, read-only file system, permission denied, a path that is a file) becomes a
:class:`WriteError` with one line naming the path and the reason.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from duda.errors import DudaError


class WriteError(DudaError):
    """A file or folder cannot be written (disk full, read-only, no permission, not a folder)."""


_REASONS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "file too large for this file system or the process's file-size limit",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "is a folder, expected a file",
    errno.ENOENT: "no such file or folder",
    errno.EEXIST: "already exists",
    errno.ENAMETOOLONG: "file name too long",
}


def os_error_in(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind ``exc`` (itself, or one it was raised from or during); torch.save
    and some C++ writers wrap the real ``OSError`` in a ``RuntimeError``."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno is not None:
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return None


def reason(exc: BaseException) -> str:
    """A short lower-case reason for a failed write, e.g. ``no space left on device``."""
    os_exc = os_error_in(exc)
    if os_exc is not None:
        return _REASONS.get(os_exc.errno, (os_exc.strerror or str(os_exc)).lower())
    return str(exc) or type(exc).__name__


def write_error(path: str | os.PathLike, exc: BaseException, what: str = "") -> WriteError:
    """A one-line :class:`WriteError` for a failed write of ``path``."""
    return WriteError(f"cannot write {what + ' ' if what else ''}{path}: {reason(exc)}")


def current_umask() -> int:
    """The process umask, read without changing it where the system allows."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # no /proc: the classic set-and-restore
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a newly created regular file gets from ``open()``: ``0o666`` minus the umask."""
    return 0o666 & ~current_umask()


def ensure_dir(path: str | os.PathLike, what: str = "folder") -> Path:
    """Create folder ``path`` (and parents); :class:`WriteError` naming it if that is impossible
    (a file in the way, read-only, no permission)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WriteError(f"{what} {path} exists and is a file, expected a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise WriteError(f"{what} {path}: a part of the path is a file, not a folder") from None
    except OSError as exc:
        raise write_error(path, exc, what) from None
    return path


def check_writable_dir(path: str | os.PathLike, what: str = "folder") -> Path:
    """Make sure files can be created in folder ``path`` (creating it if missing) by creating and
    removing a probe file; works for root on read-only mounts too, where ``os.access`` says yes."""
    path = ensure_dir(path, what)
    try:
        fd, probe = tempfile.mkstemp(prefix=".duda-write-test.", dir=path)
    except OSError as exc:
        raise write_error(path, exc, what) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)
    return path


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Refuse an output file path that is an existing folder or lies below a file."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"{what} {path} is a folder, expected a file name")
    ensure_dir(path.parent, f"folder of {what} {path}")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp", what: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success give it :func:`file_mode` and
    rename it over ``path``. On any failure the temporary file is removed, ``path`` is left as it
    was, and an ``OSError`` (also one wrapped by the writer) is raised as :class:`WriteError`."""
    path = Path(path)
    ensure_dir(path.parent, "folder")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise write_error(path, exc, what) from None
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except DudaError:
        raise
    except Exception as exc:
        if os_error_in(exc) is None:
            raise
        raise write_error(path, exc, what) from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def write_text(path: str | os.PathLike, text: str, what: str = "") -> Path:
    """Write a text file atomically with the umask's mode."""
    path = Path(path)
    with atomic_path(path, what=what) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def write_with(path: str | os.PathLike, writer, suffix: str = ".tmp", what: str = "") -> Path:
    """``writer(file_object)`` into ``path`` atomically (flushed and fsynced before the rename)."""
    path = Path(path)
    with atomic_path(path, suffix=suffix, what=what) as tmp, open(tmp, "wb") as fh:
        writer(fh)
        fh.flush()
        os.fsync(fh.fileno())
    return path

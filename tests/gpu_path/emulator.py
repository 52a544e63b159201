"""Build and load the emulated CUDA device of ``cuda_emulator.cpp`` (see its header for what it
registers), and count the host syncs it reports.

Loading changes torch for the rest of the process (CUDA becomes available), and must happen
before ``import torch``: it is only ever done in a child process (``runner.py``). The build runs
in a child process of its own for the same reason: ``torch.utils.cpp_extension.load`` loads the
library it builds.

    python tests/gpu_path/emulator.py build DIR   # prints the path of the built library
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

SOURCE = Path(__file__).with_name("cuda_emulator.cpp")
NAME = "duda_cuda_emulator"

#: the emulator's counters, in the order of ``SyncKind`` in cuda_emulator.cpp
KINDS = ("item", "device_to_host", "host_to_device", "data_shape", "explicit", "async_copy", "ops")
#: the kinds that make the host wait for the device
SYNC_KINDS = KINDS[:5]


def missing_toolchain() -> str | None:
    """Why the emulator cannot be built here (no C++ compiler, no ninja), or None."""
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} not on PATH) to build the emulated CUDA device"
    if shutil.which("ninja") is None:
        return "no ninja (torch.utils.cpp_extension needs it) to build the emulated CUDA device"
    return None


def default_build_dir() -> Path:
    """A build folder kept between test sessions (the build takes a while), per user and torch."""
    import getpass
    from importlib.metadata import version

    where = os.environ.get("DUDA_GPU_PATH_BUILD_DIR")
    if where:
        return Path(where)
    return Path(tempfile.gettempdir()) / f"duda-gpu-path-{getpass.getuser()}-torch{version('torch')}"


def build_in_child(build_dir: Path, timeout: float = 600) -> Path:
    """Build (or find up to date) the library in a child process; its path."""
    build_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "build", str(build_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        why = f"exit {proc.returncode}"
        raise RuntimeError(f"building the emulated CUDA device failed ({why}):\n{proc.stdout}\n{proc.stderr}")
    return Path(lines[-1])


def _build(build_dir: Path) -> Path:
    import torch
    from torch.utils import cpp_extension

    build_dir.mkdir(parents=True, exist_ok=True)
    lib_dir = Path(torch.__file__).parent / "lib"
    path = cpp_extension.load(
        name=NAME,
        sources=[str(SOURCE)],
        build_directory=str(build_dir),
        extra_cflags=["-O1"],
        # found without LD_LIBRARY_PATH when it is loaded before torch
        extra_ldflags=[f"-Wl,-rpath,{lib_dir}"],
        is_python_module=False,
        verbose=False,
    )
    return Path(path)


# --------------------------------------------------------------------------- in the child
@dataclass
class Emulator:
    """The loaded emulator: counters of host syncs."""

    lib: ctypes.CDLL
    explicit_ops: int

    def counts(self) -> dict[str, int]:
        out = (ctypes.c_int64 * len(KINDS))()
        self.lib.duda_emu_counts(out)
        return dict(zip(KINDS, out, strict=True))

    def reset(self) -> None:
        self.lib.duda_emu_reset()

    def count_syncs(self, attribute: bool = True) -> SyncCount:
        return SyncCount(self, attribute)


@dataclass
class SyncCount:
    """``with emu.count_syncs() as c: ...``: the host syncs in the block (``c.counts``), each
    attributed to the innermost frame of duda's own code that caused it (``c.sites``)."""

    emulator: Emulator
    attribute: bool = True
    counts: dict[str, int] = field(default_factory=dict)
    sites: Counter = field(default_factory=Counter)

    def __enter__(self) -> SyncCount:
        self.emulator.reset()
        self.sites.clear()
        self._callback = _CALLBACK(self._note) if self.attribute else None
        if self._callback is not None:
            self.emulator.lib.duda_emu_set_callback(self._callback)
        return self

    def __exit__(self, *exc) -> None:
        if self._callback is not None:
            self.emulator.lib.duda_emu_set_callback(_CALLBACK())
        self.counts = self.emulator.counts()

    @property
    def total(self) -> int:
        return sum(self.counts.get(k, 0) for k in SYNC_KINDS)

    def _note(self, kind: int, what: bytes) -> None:
        site = "?"
        for frame in reversed(traceback.extract_stack()[:-1]):
            if f"{os.sep}duda{os.sep}" in frame.filename and f"{os.sep}tests{os.sep}" not in frame.filename:
                short = frame.filename.split(f"{os.sep}duda{os.sep}", 1)[1]
                site = f"{short}:{frame.lineno} {frame.name}"
                break
        self.sites[(KINDS[kind], what.decode(), site)] += 1


_CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_char_p)


class _Properties:
    """torch.cuda.get_device_properties() of the emulated device (an Ampere-class GPU)."""

    name = "duda emulated CUDA device"
    major, minor = 8, 0
    total_memory = 80 * 2**30
    multi_processor_count = 108
    is_integrated = False
    is_multi_gpu_board = False
    warp_size = 32

    def __repr__(self) -> str:
        return f"_Properties(name={self.name!r}, major={self.major}, minor={self.minor})"


def load(lib_path: Path) -> Emulator:
    """Load the emulator into this process (before torch!) and make torch.cuda report it."""
    if "torch" in sys.modules:
        raise RuntimeError("the emulated CUDA device must be loaded before torch is imported")
    lib = ctypes.CDLL(str(lib_path), mode=ctypes.RTLD_GLOBAL)
    lib.duda_emu_install.restype = ctypes.c_int64
    lib.duda_emu_counts.argtypes = [ctypes.POINTER(ctypes.c_int64)]
    lib.duda_emu_set_callback.argtypes = [_CALLBACK]
    lib.duda_emu_note_sync.argtypes = [ctypes.c_char_p]
    import torch

    if lib.duda_emu_has_cuda() != 1:
        raise RuntimeError("the emulated CUDA hooks were not picked up (was torch loaded before?)")
    explicit_ops = lib.duda_emu_install()
    _patch_torch_cuda(torch, lib)
    return Emulator(lib, explicit_ops)


def _patch_torch_cuda(torch, lib) -> None:
    """The Python side of torch.cuda, which a CPU build defines as 'not compiled with CUDA'."""
    import torch.cuda as tc

    def check(index: int) -> int:
        if index not in (0, -1):
            raise RuntimeError(
                f"CUDA error: invalid device ordinal {index} (the emulated machine has cuda:0)"
            )
        return 0

    def synchronize() -> None:
        lib.duda_emu_note_sync(b"torch.cuda.synchronize")

    props = _Properties()

    def get_properties(device: int) -> _Properties:
        check(device)
        return props

    c = torch._C
    c._cuda_getDeviceCount = lambda: 1
    c._cuda_getDevice = lambda: 0
    c._cuda_setDevice = check
    c._cuda_exchangeDevice = check
    c._cuda_maybeExchangeDevice = check
    c._cuda_synchronize = synchronize
    c._cuda_emptyCache = lambda: None
    c._cuda_getCurrentRawStream = lambda device: 0  # torch._dynamo asks when CUDA is compiled in
    tc._lazy_init = lambda: None  # nothing to initialise; torch.cuda stays "uninitialised"
    tc._exchange_device = lambda d: -1 if d < 0 else check(d)
    tc._maybe_exchange_device = lambda d: -1 if d < 0 else check(d)
    tc._get_device_properties = get_properties
    tc._cached_device_count = 1

    # torch.UntypedStorage(n, device="cuda") (deepcopy of a buffer, storage.cuda()) is built in
    # torch's Python bindings, which a CPU build compiles without CUDA: make it from a tensor.
    storage_new = torch.UntypedStorage.__new__

    def new_storage(cls, *args, **kwargs):
        device = kwargs.get("device")
        if device is not None and torch.device(device).type == "cuda":
            if cls is not torch.UntypedStorage or len(args) != 1 or set(kwargs) != {"device"}:
                raise RuntimeError(
                    "emulated CUDA: only torch.UntypedStorage(nbytes, device=...) is supported"
                )
            return torch.empty(args[0], dtype=torch.uint8, device=device).untyped_storage()
        return storage_new(cls, *args, **kwargs)

    torch.UntypedStorage.__new__ = new_storage


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "build":
        sys.exit("usage: emulator.py build DIR")
    print(_build(Path(sys.argv[2])))

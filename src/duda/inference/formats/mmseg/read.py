"""Reading a published mmseg (DAFormer / MIC / HRDA) checkpoint safely, and recognising it.

``torch.load(weights_only=True)``; numpy values in mmcv's ``meta`` are rebuilt through an
allowlist, anything else is refused with the command that strips it. See the package docstring.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from duda.errors import CheckpointError

# Networks of a UDA checkpoint and the names a user may give them.
NETWORKS = ("model", "ema_model", "imnet_model")
NETWORK_ALIASES = {
    "model": "model",
    "student": "model",
    "ema_model": "ema_model",
    "teacher": "ema_model",
    "ema": "ema_model",
    "imnet_model": "imnet_model",
    "imnet": "imnet_model",
}


# ----------------------------------------------------------------------------- reading the file


def strip_command(path: str | os.PathLike) -> str:
    """A one-line command that rewrites ``path`` keeping the weights and the classes/palette only.

    It loads with ``weights_only=False`` and so runs the file's pickled code: run it only on a
    file from a source you trust.
    """
    src = str(path)
    dst = str(Path(src).with_name(Path(src).stem + "_weights.pth"))
    return (
        "python -c \"import torch; c = torch.load('" + src + "', map_location='cpu', weights_only=False); "
        "m = c.get('meta') or {}; "
        "torch.save({'state_dict': c['state_dict'], 'meta': {k: [[int(x) for x in v] if k == 'PALETTE' "
        "else str(v) for v in m[k]] for k in ('CLASSES', 'PALETTE') if m.get(k) is not None}}, '"
        + dst
        + "')\""
    )


def _numpy_safe_globals(names: list[str]) -> list[tuple[Any, str]] | None:
    """``(object, pickled name)`` pairs when every name is a numpy array/scalar/dtype constructor.

    These rebuild plain arrays from bytes (object arrays unpickle their items through the same
    restricted unpickler), so they are as safe to allow as the tensors themselves. The pickled name
    is kept because files written with numpy 1 say ``numpy.core`` where numpy 2 has ``numpy._core``.
    None when any name is something else.
    """
    core = getattr(np, "_core", None) or np.core
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25; older numpy pickles dtypes as numpy.dtype
    out: list[tuple[Any, str]] = []
    for name in names:
        module, _, attr = name.rpartition(".")
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and attr in (
            "_reconstruct",
            "scalar",
        ):
            out.append((getattr(core.multiarray, attr), name))
        elif name in ("numpy.ndarray", "numpy.dtype"):
            out.append((getattr(np, attr), name))
        elif module == "numpy.dtypes" and isinstance(getattr(dtypes, attr, None), type):
            out.append((getattr(dtypes, attr), name))
        else:
            return None
    if out:  # a rebuilt dtype is an instance of its class (numpy.dtypes.Int64DType, ...)
        if dtypes is not None:
            classes = [t for t in vars(dtypes).values() if _is_dtype_class(t)]
        else:  # numpy < 1.25: the same classes, reachable only through their instances
            classes = sorted({type(np.dtype(t)) for t in set(np.sctypeDict.values())}, key=str)
        out += [(t, f"{t.__module__}.{t.__name__}") for t in classes]
    return out


def _is_dtype_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, np.dtype) and obj is not np.dtype


def read_reference_file(path: str | os.PathLike) -> dict:
    """Load a checkpoint with ``weights_only=True``.

    mmcv stores a ``meta`` entry next to the weights; plain data loads as is, numpy arrays and
    scalars are rebuilt through an allowlist, and anything else (pickled classes) is refused with
    an error that names the objects and gives the command that strips them once.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        data = _load_with_numpy(path)
    except Exception as exc:  # truncated file, not a torch file
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a dict (a checkpoint), got {type(data).__name__}")
    return data


def _load_with_numpy(path: Path) -> dict:
    try:
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    allowed = _numpy_safe_globals(names)
    if allowed is None:
        refused = [n for n in names if _numpy_safe_globals([n]) is None]
        raise CheckpointError(
            f"{path}: holds pickled Python objects ({', '.join(refused)}) that are not loaded without "
            "running their code (weights are read with torch.load(weights_only=True)). mmcv stores such "
            "objects in the checkpoint's 'meta' or 'optimizer' entries, not in the weights. If the file "
            "comes from a source you trust, strip them once and use the new file:\n  " + strip_command(path)
        )
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None


# ----------------------------------------------------------------------------- recognising it


def is_reference_checkpoint(ckpt: Any) -> bool:
    """True for an mmseg checkpoint: a ``state_dict`` of a UDA wrapper or of one segmentor."""
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        return False
    keys = ckpt["state_dict"].keys()
    return any(
        isinstance(k, str) and k.startswith(tuple(f"{n}.backbone." for n in NETWORKS) + ("backbone.",))
        for k in keys
    )


def reference_networks(state: dict[str, torch.Tensor]) -> list[str]:
    """Networks present in a reference state dict (``model`` for a bare segmentor)."""
    found = [n for n in NETWORKS if any(k.startswith(f"{n}.backbone.") for k in state)]
    if not found and any(k.startswith("backbone.") for k in state):
        found = ["model"]
    return found


def network_state(state: dict[str, torch.Tensor], which: str, source: str) -> dict[str, torch.Tensor]:
    """The ``backbone.*`` / ``decode_head.*`` weights of network ``which`` (an alias is accepted)."""
    name = NETWORK_ALIASES.get(which)
    have = reference_networks(state)
    if name is None or name not in have:
        aliases = ", ".join(f"{a} ({n})" for a, n in NETWORK_ALIASES.items() if n in have and a != n)
        raise CheckpointError(
            f"{source}: no network {which!r} in this mmseg checkpoint; it holds {have}"
            + (f" (also called {aliases})" if aliases else "")
        )
    if any(k.startswith(f"{name}.backbone.") for k in state):
        prefix = f"{name}."
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return {k: v for k, v in state.items() if k.startswith(("backbone.", "decode_head."))}


# ----------------------------------------------------------------------------- architecture

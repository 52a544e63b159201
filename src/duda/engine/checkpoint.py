"""Whether a training checkpoint fits a run: the method-aware compatibility check.

File I/O of checkpoints (atomic save, list, latest, load) is :mod:`duda.checkpoints`, a leaf
module.
"""

from __future__ import annotations

from typing import Any

from duda.config import MethodConfig
from duda.errors import DudaError
from duda.methods import config_from_dict, network_specs
from duda.methods.sections import MULTIRES_SECTION
from duda.models.factory import resolve_arch


def incompatibilities(old_cfg: dict, new_cfg: dict, old_classes: int | None, new_classes: int) -> list[str]:
    """What makes a checkpoint written under ``old_cfg`` unusable for a run of ``new_cfg``, as
    ``key: checkpoint value -> config value`` lines (empty when they fit): the method, the number
    of classes, and each network the method declares (:meth:`duda.methods.Method.network_specs`):
    its model name and architecture, multi-resolution settings and input scale."""
    out: list[str] = []

    def differ(key: str, a: Any, b: Any) -> None:
        line = f"{key}: {a!r} in the checkpoint, {b!r} now"
        if a != b and line not in out:
            out.append(line)

    default = MethodConfig().name
    old_method = (old_cfg.get("method") or {}).get("name", default)
    new_method = (new_cfg.get("method") or {}).get("name", default)
    differ("method.name", old_method, new_method)
    differ("number of classes", old_classes, new_classes)
    if old_method != new_method:
        return out
    try:
        old_specs = network_specs(config_from_dict(old_cfg))
    except DudaError as exc:
        return [*out, f"config: the checkpoint's config does not load in this version ({exc})"]
    new_specs = network_specs(config_from_dict(new_cfg))
    for name in [*new_specs, *(n for n in old_specs if n not in new_specs)]:
        if name not in old_specs or name not in new_specs:
            differ(f"network {name!r}", name in old_specs, name in new_specs)
            continue
        old, new = old_specs[name], new_specs[name]
        differ(f"{new.key}.name", old.config.name, new.config.name)
        if old.config.name == new.config.name:
            old_arch, new_arch = _full_arch(old.config), _full_arch(new.config)
            for field in [*new_arch, *(f for f in old_arch if f not in new_arch)]:
                differ(f"{new.key}.arch.{field}", old_arch.get(field), new_arch.get(field))
        old_mr, new_mr = old.multires or {}, new.multires or {}
        if bool(old.multires) != bool(new.multires):
            differ(f"{new.key} multi-resolution ({MULTIRES_SECTION})", old.multires, new.multires)
        for field in [*new_mr, *(f for f in old_mr if f not in new_mr)]:
            key = f"{MULTIRES_SECTION}.{field} (multi-resolution {new.key})"
            differ(key, old_mr.get(field), new_mr.get(field))
        differ(f"{new.key} input scale", old.input_scale, new.input_scale)
    return out


def _full_arch(model) -> dict[str, Any]:
    """Every architecture field of a model config, defaults filled in (lists, not tuples): a
    field left out in one config and written with its default in the other is no difference."""
    try:
        arch = resolve_arch(model.name, dict(model.arch))
    except DudaError:  # a model this version no longer knows: compare what was written
        arch = dict(model.arch)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in arch.items()}

"""The method registry: ``method.name`` → the class that implements it.

duda's own methods register themselves when their modules are imported (on the first lookup).
A method defined elsewhere registers the same way, with the decorator, and is made known by

- importing its module before the run: ``duda --import my_pkg.my_method train cfg.yaml``
  (or ``duda.train(cfg, ...)`` after ``import my_pkg.my_method`` in Python), or
- an entry point of an installed package, group ``duda.methods``::

      [project.entry-points."duda.methods"]
      my_method = "my_pkg.my_method"      # a module that registers its class, or "module:Class"

Example (one file is all a new method needs, plus a config with ``method.name: my_method``)::

    from duda.methods import Method, NetworkSpec, register_method

    @register_method
    class MyMethod(Method):
        name = "my_method"
        ...
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path

from duda.errors import ConfigError
from duda.log import info
from duda.methods.base import Method
from duda.methods.sections import section_names

ENTRY_POINT_GROUP = "duda.methods"
BUILTIN_MODULES = (
    "duda.methods.source_only",
    "duda.methods.daformer",
    "duda.methods.hrda",
    "duda.methods.duda",
)

_REGISTRY: dict[str, type[Method]] = {}
_loaded = False


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: make ``cls`` the method named ``cls.name``; the sections it reads
    (``cls.sections``) must be registered ones (:func:`duda.methods.sections.register_section`)
    or ``options``."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"register_method: {cls!r} is not a subclass of duda.methods.Method")
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"register_method: {cls.__qualname__}.name must be an identifier, got {name!r}")
    known = section_names()
    unknown = [s for s in getattr(cls, "sections", ()) if s != "options" and s not in known]
    if unknown:
        raise ValueError(
            f"register_method: {cls.__qualname__}.sections names {unknown}, which are not sections of "
            f"the method config (registered: {', '.join(known)}, options); declare a section with "
            "duda.methods.register_section"
        )
    held = _REGISTRY.get(name)
    if held is not None and (held.__module__, held.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(
            f"register_method: the name {name!r} is taken by {held.__module__}.{held.__qualname__}; "
            f"rename {cls.__module__}.{cls.__qualname__}"
        )
    _REGISTRY[name] = cls
    return cls


def import_method_modules(modules: list[str] | tuple[str, ...]) -> None:
    """Import modules that register methods (``--import``): a module name, found on the path
    or in the current folder, or a ``.py`` file. An error names the module."""
    for module in modules:
        try:
            if module.endswith(".py"):
                _import_file(module)
                continue
            if os.getcwd() not in sys.path and "" not in sys.path:  # `duda` is a script: add the cwd
                sys.path.append(os.getcwd())
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"--import {module}: cannot import it ({exc})") from None


def _import_file(path: str) -> None:
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"--import {path}: no such file")
    name = file.stem
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(file.resolve()):
        return
    spec = importlib.util.spec_from_file_location(name, file.resolve())
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plug-in must not stop duda's own methods
            info(f"warning: entry point {ep.name} = {ep.value} ({ENTRY_POINT_GROUP}) failed to load: {exc}")


def method_names() -> list[str]:
    """Every registered method's name."""
    _load()
    return sorted(_REGISTRY)


def method_class(name: str) -> type[Method]:
    """The class registered as ``name``; an unknown name is a ``ConfigError`` listing the known."""
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        error = ConfigError(
            f"method.name: unknown method {name!r}; known: {', '.join(sorted(_REGISTRY))}. A method "
            "defined in your own module is registered with @duda.methods.register_method and "
            "loaded with `duda --import MODULE ...` or a 'duda.methods' entry point"
        )
        error.key = "method.name"
        raise error from None

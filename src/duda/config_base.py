"""Typed configuration machinery: dataclasses built from plain dicts with validation.

Every section of an experiment config is a dataclass. ``from_dict`` builds one from a dict
(YAML), rejecting unknown keys and wrong types with an error that names the dotted key;
``to_dict`` turns it back into plain data (for checkpoints and logs); ``apply_overrides``
applies ``key.sub=value`` strings from the command line, parsing values as YAML.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import io
import os
import re
import textwrap
import tokenize
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal, TypeVar, Union, get_args, get_origin

import yaml

from duda.errors import ConfigError

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Check:
    """A condition on a value beyond its type, as metadata: ``Annotated[int, Check(...)]``."""

    test: Callable[[Any], bool]
    expected: str  # what the error says was expected, e.g. "a positive integer"


PositiveInt = Annotated[int, Check(lambda v: v > 0, "a positive integer")]


class ConfigLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading numbers as Python (and YAML 1.2) do.

    PyYAML follows YAML 1.1, where ``6e-4`` and ``1E3`` (an exponent without a dot) are strings,
    so ``lr: 6e-4`` or ``--set optim.lr=1e-3`` would be rejected as "not a number". Here every
    float spelling Python accepts is a float: ``6e-4``, ``6E-4``, ``+1e3``, ``1_000e-3``, ``.5``,
    ``5.``, ``6.0e-4``.
    """


_EXP_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$")
ConfigLoader.add_implicit_resolver("tag:yaml.org,2002:float", _EXP_FLOAT, list("-+0123456789"))


def yaml_load(text_or_stream: Any) -> Any:
    """``yaml.safe_load`` with :class:`ConfigLoader` (exponent floats are floats)."""
    return yaml.load(text_or_stream, Loader=ConfigLoader)  # noqa: S506 (a SafeLoader subclass)


_PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Annotated:
        return _type_name(get_args(tp)[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (lists -> tuples etc.)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Annotated:
        return _convert_annotated(value, tp, key)
    if origin in (Union, types.UnionType):
        return _convert_union(value, tp, key)
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{key}: expected one of {_type_name(tp)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=key)
    if origin in (list, tuple):
        return _convert_sequence(value, tp, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_convert(k, kt, key): _convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    if tp in _SCALARS:
        return _SCALARS[tp](value, key)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    return value


def _convert_annotated(value: Any, tp: Any, key: str) -> Any:
    value = _convert(value, get_args(tp)[0], key)
    for check in tp.__metadata__:
        if isinstance(check, Check) and not check.test(value):
            raise ConfigError(f"{key}: expected {check.expected}, got {value!r}")
    return value


def _convert_union(value: Any, tp: Any, key: str) -> Any:
    args = get_args(tp)
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:  # X | None: X's own error says more (e.g. which key of a section)
        return _convert(value, options[0], key)
    for arg in options:
        try:
            return _convert(value, arg, key)
        except ConfigError:
            continue
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _convert_sequence(value: Any, tp: Any, key: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if not isinstance(value, (list, tuple)):
        item = args[0] if args and (origin is list or args[-1] is Ellipsis) else None
        what = f"a list of {_PLURAL[item]}" if item in _PLURAL else f"a list ({_type_name(tp)})"
        raise ConfigError(f"{key}: expected {what}, got {value!r}")
    if origin is tuple and args and args[-1] is not Ellipsis:
        if len(args) != len(value):
            raise ConfigError(f"{key}: expected {len(args)} values ({_type_name(tp)}), got {value!r}")
        pairs = enumerate(zip(value, args, strict=True))
        return tuple(_convert(v, a, f"{key}[{i}]") for i, (v, a) in pairs)
    item = args[0] if args else Any
    out = [_convert(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
    return tuple(out) if origin is tuple else out


def _to_float(value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    return float(value)


def _to_int(value: Any, key: str) -> int:
    if isinstance(value, float) and value.is_integer():  # 4e4, 40000.0
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    return value


def _to_bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _to_str(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    return value


_SCALARS: dict[type, Callable[[Any, str], Any]] = {
    float: _to_float,
    int: _to_int,
    bool: _to_bool,
    str: _to_str,
}


# --------------------------------------------------------------------------- open sections


@dataclasses.dataclass(frozen=True)
class Extension:
    """A field that a layer above adds to an :class:`Extensible` config section."""

    name: str
    type: Any  # the annotation its values are checked against (a class, not a string)
    default_factory: Callable[[], Any]
    comment: str = ""  # its meaning, shown by ``duda config show``
    owner: str = ""  # the module that registered it (error messages name it)


class Extensible:
    """Base of a config dataclass that holds, beside its own fields, fields registered from the
    layers above it (:meth:`extend`): a section whose contents are declared by whoever reads them
    (e.g. the sections of the ``method`` config, declared by the methods).

    Registered fields are read, written, compared and shown like declared ones, placed before the
    declared field named by ``extensions_before`` (after all declared fields when empty). Build
    such a dataclass with ``@dataclass(eq=False, repr=False)`` so that equality and repr cover
    them. Each subclass has its own registry."""

    extensions_before: ClassVar[str] = ""
    _extensions: ClassVar[dict[str, Extension]] = {}
    _comments: ClassVar[dict[str, str]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._extensions = {}
        cls._comments = {}

    @classmethod
    def extend(
        cls, name: str, tp: Any, default_factory: Callable[[], Any], comment: str = "", owner: str = ""
    ) -> None:
        """Add field ``name`` (annotation ``tp``, default ``default_factory()``). Registering the
        same name again from the same owner replaces it; from another owner is an error."""
        declared = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
        held = cls._extensions.get(name)
        if name in declared or (held is not None and held.owner != owner):
            by = "the section itself" if name in declared else held.owner
            raise ValueError(f"{cls.__name__}.extend: the field {name!r} is already declared by {by}")
        cls._extensions[name] = Extension(name, tp, default_factory, comment, owner)

    @classmethod
    def describe(cls, name: str, comment: str) -> None:
        """Set the meaning ``duda config show`` prints for field ``name`` (declared or registered)."""
        cls._comments[name] = comment

    @classmethod
    def extensions(cls) -> dict[str, Extension]:
        """The registered fields, in registration order."""
        return dict(cls._extensions)

    def __post_init__(self) -> None:
        for ext in self._extensions.values():
            if ext.name not in self.__dict__:
                setattr(self, ext.name, ext.default_factory())

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in field_names(self))

    __hash__ = None  # type: ignore[assignment]  (mutable, like a dataclass with eq)

    def __repr__(self) -> str:
        items = ", ".join(f"{n}={getattr(self, n)!r}" for n in field_names(self))
        return f"{type(self).__qualname__}({items})"


def field_names(obj_or_cls: Any) -> list[str]:
    """The fields of a config dataclass in order, with the registered fields of an
    :class:`Extensible` one in their place."""
    names = [f.name for f in dataclasses.fields(obj_or_cls)]
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    if not issubclass(cls, Extensible) or not cls._extensions:
        return names
    at = names.index(cls.extensions_before) if cls.extensions_before in names else len(names)
    return [*names[:at], *cls._extensions, *names[at:]]


def field_comment(cls: type, name: str) -> str | None:
    """The meaning of field ``name`` of config dataclass ``cls``: its source comment, or the one
    registered for it (:meth:`Extensible.describe`, :meth:`Extensible.extend`)."""
    if isinstance(cls, type) and issubclass(cls, Extensible):
        if name in cls._comments:
            return _shorten(cls._comments[name]) or None
        if name in cls._extensions:
            return _shorten(cls._extensions[name].comment) or None
    return field_comments(cls).get(name)


def from_dict(cls: type[T], data: dict[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    extensions = cls.extensions() if issubclass(cls, Extensible) else {}
    unknown = sorted(set(data) - set(fields) - set(extensions))
    if unknown:
        keys = [f"{prefix}.{k}" if prefix else k for k in unknown]
        allowed = ", ".join(sorted([*fields, *extensions]))
        exc = ConfigError(f"unknown key {', '.join(map(repr, keys))}; allowed here: {allowed}")
        exc.key = keys[0]
        raise exc
    kwargs, extra = {}, {}
    for name in field_names(cls):
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            tp = extensions[name].type if name in extensions else hints[name]
            (extra if name in extensions else kwargs)[name] = _convert_field(data[name], tp, key)
        elif name in fields and _required(fields[name]):
            exc = ConfigError(f"missing required key '{key}'")
            exc.key = key
            raise exc
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{prefix or cls.__name__}: {exc}") from None
    for name, value in extra.items():
        setattr(obj, name, value)
    return obj


def _convert_field(value: Any, tp: Any, key: str) -> Any:
    try:
        return _convert(value, tp, key)
    except ConfigError as exc:
        if exc.key is None:  # the innermost key that knows it wins
            exc.key = key
        raise


def _required(field: dataclasses.Field) -> bool:
    return field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING


def to_dict(obj: Any) -> Any:
    """Plain (YAML/JSON-serialisable) data of a config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {name: to_dict(getattr(obj, name)) for name in field_names(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def apply_overrides(
    data: dict[str, Any], overrides: list[str], sources: dict[tuple[str, ...], str] | None = None
) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, in place.

    The value replaces what was there (a mapping too). ``sources`` (see :class:`Composed`) records
    the keys set as :data:`OVERRIDE`."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r}: expected KEY=VALUE, e.g. train.iters=1000")
        key, raw = item.split("=", 1)
        try:
            value = yaml_load(raw)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {key}: value {raw!r} is not valid YAML ({exc})") from None
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {key}: '{part}' is not a section")
            node = child
        node[parts[-1]] = value
        if sources is not None:
            _forget(sources, tuple(parts))
            _record(sources, tuple(parts), value, OVERRIDE)
    return data


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML mapping, with errors naming the file."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml_load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------- composed configs

BASE_KEY = "_base_"
OVERRIDE = "--set"  # the source recorded for keys set by apply_overrides(..., sources=...)
DEFAULT = "default"  # the source shown for keys that no file set


@dataclasses.dataclass
class Composed:
    """A config file merged with its ``_base_`` files, and which file set each key.

    ``sources`` maps the path of every value that was written (a scalar, a list, null or an empty
    mapping; never a section that only groups keys) to the file that wrote it last, or to
    :data:`OVERRIDE` for ``--set`` values.
    """

    data: dict[str, Any]
    sources: dict[tuple[str, ...], str]

    def source_of(self, key: str | tuple[str, ...]) -> str | None:
        """The file (or ``--set``) that set ``key`` (``"a.b[0].c"`` or a path tuple), or None."""
        parts = _key_parts(key) if isinstance(key, str) else tuple(key)
        for n in range(len(parts), 0, -1):
            if parts[:n] in self.sources:
                return self.sources[parts[:n]]
        return None

    def files_for(self, key: str) -> list[str]:
        """The files that wrote ``key`` or, for a section or a missing key, the values of the
        nearest section around it: where to look for the cause of an error about ``key``."""
        source = self.source_of(key)
        if source is not None:
            return [source]
        parts = _key_parts(key)
        for n in range(len(parts), 0, -1):
            found = {v: None for k, v in self.sources.items() if k[:n] == parts[:n]}
            if found:
                return list(found)
        return []


def _key_parts(key: str) -> tuple[str, ...]:
    """``"method.duda.teachers[0].weight"`` -> ``("method", "duda", "teachers", "weight")``."""
    return tuple(re.sub(r"\[[^\]]*\]", "", part) for part in key.split("."))


def _forget(sources: dict[tuple[str, ...], str], path: tuple[str, ...]) -> None:
    for key in [k for k in sources if k[: len(path)] == path]:
        del sources[key]


def _record(sources: dict[tuple[str, ...], str], path: tuple[str, ...], value: Any, source: str) -> None:
    """Attribute ``value`` written at ``path`` to ``source``: each value inside a mapping."""
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _record(sources, (*path, key), item, source)
    else:
        sources[path] = source


def merge_into(
    dst: dict[str, Any], src: dict[str, Any], source: str, sources: dict[tuple[str, ...], str],
    path: tuple[str, ...] = (), src_sources: dict[tuple[str, ...], str] | None = None,
) -> None:  # fmt: skip
    """Merge ``src`` into ``dst``: mappings key by key (recursively), anything else replaces.

    ``sources`` is updated: replaced values forget where their old contents came from; the new
    ones are attributed to ``src_sources[path]`` when given (``src`` was itself composed), else to
    ``source``."""
    for key, value in src.items():
        here = (*path, key)
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            merge_into(dst[key], value, source, sources, here, src_sources)
            continue
        _forget(sources, here)
        if isinstance(value, dict) and value:
            dst[key] = {}
            merge_into(dst[key], value, source, sources, here, src_sources)
            continue
        dst[key] = copy.deepcopy(value)
        if src_sources is None:
            sources[here] = source
        else:
            sources.update({k: v for k, v in src_sources.items() if k[: len(here)] == here})


def compose_yaml(path: str) -> Composed:
    """Read a YAML config with its ``_base_`` files merged in.

    ``_base_: FILE`` or ``_base_: [FILE, ...]`` names files relative to the file that names them;
    they may name bases of their own. The bases are merged in order, then the file itself: a
    mapping overrides key by key (recursively), any other value (a list included) replaces.
    A file that (indirectly) names itself is an error naming the chain of files.
    """
    return _compose(os.path.normpath(path), ())


def _compose(path: str, chain: tuple[str, ...]) -> Composed:
    reals = [os.path.realpath(p) for p in chain]
    if os.path.realpath(path) in reals:
        loop = " -> ".join((*chain[reals.index(os.path.realpath(path)) :], path))
        raise ConfigError(f"{chain[-1]}: {BASE_KEY} files name each other in a cycle: {loop}")
    data = load_yaml(path)
    bases = data.pop(BASE_KEY, None)
    if bases is None:
        bases = []
    elif isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(
            f"{path}: {BASE_KEY}: expected a file name or a list of file names "
            f"(relative to this file), got {bases!r}"
        )
    merged: dict[str, Any] = {}
    sources: dict[tuple[str, ...], str] = {}
    for base in bases:
        base_path = os.path.normpath(os.path.join(os.path.dirname(path), base))
        if not os.path.isfile(base_path):
            what = "is a folder" if os.path.isdir(base_path) else "not found"
            raise ConfigError(f"{path}: {BASE_KEY} file {base!r} {what} (looked for {base_path})")
        composed = _compose(base_path, (*chain, path))
        merge_into(merged, composed.data, base_path, sources, src_sources=composed.sources)
    merge_into(merged, data, path, sources)
    return Composed(merged, sources)


# --------------------------------------------------------------------------- annotated YAML


@functools.cache
def field_comments(cls: type) -> dict[str, str]:
    """The source comment of each field of dataclass ``cls``: the one after the field on its line,
    else the comment lines just above it (shortened); empty when the source is not available."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    above: list[str] = []
    names = {f.name for f in dataclasses.fields(cls)}
    for line in source.splitlines()[1:]:
        stripped = line.strip()
        if line.startswith("    #"):
            above.append(stripped.lstrip("#").strip())
            continue
        match = re.match(r"    (\w+)\s*:", line)
        if match and match.group(1) in names:
            comment = _shorten(_trailing_comment(line) or " ".join(above))
            if comment:
                out[match.group(1)] = comment
        above = []
    return out


def _shorten(comment: str) -> str:
    return comment[:117].rsplit(" ", 1)[0] + " ..." if len(comment) > 120 else comment


def _trailing_comment(line: str) -> str:
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(line.strip() + "\n").readline))
    except (tokenize.TokenError, SyntaxError):
        return ""
    return next((t.string.lstrip("#").strip() for t in tokens if t.type == tokenize.COMMENT), "")


def _flow(value: Any) -> str:
    """``value`` as one line of YAML (flow style)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30, sort_keys=False, allow_unicode=True)
    return text.strip().removesuffix("...").strip()


def annotated_yaml(obj: Any, composed: Composed, width: int = 44) -> str:
    """Config dataclass ``obj`` as YAML with a comment on every key: the file that set it (from
    ``composed``; :data:`DEFAULT` when none did), then the field's comment in its dataclass."""
    rows: list[tuple[str, str]] = []

    def note(path: tuple[str, ...], meaning: str | None) -> str:
        source = composed.source_of(path) or DEFAULT
        return f"{source} | {meaning}" if meaning else source

    def mapping(value: dict[str, Any], path: tuple[str, ...], indent: str) -> None:
        for key, item in value.items():
            here = (*path, str(key))
            if isinstance(item, dict) and item:
                rows.append((f"{indent}{key}:", ""))
                mapping(item, here, indent + "  ")
            else:
                rows.append((f"{indent}{key}: {_flow(to_dict(item))}", note(here, None)))

    def section(value: Any, path: tuple[str, ...], indent: str) -> None:
        for name in field_names(value):
            item, here = getattr(value, name), (*path, name)
            meaning = field_comment(type(value), name)
            if dataclasses.is_dataclass(item) or (isinstance(item, dict) and item):
                rows.append((f"{indent}{name}:", meaning or ""))
                if isinstance(item, dict):
                    mapping(item, here, indent + "  ")
                else:
                    section(item, here, indent + "  ")
            else:
                rows.append((f"{indent}{name}: {_flow(to_dict(item))}", note(here, meaning)))

    section(obj, (), "")
    lines = []
    for text, comment in rows:
        lines.append(f"{text.ljust(width)}  # {comment}".rstrip() if comment else text)
    return "\n".join(lines) + "\n"

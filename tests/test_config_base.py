from dataclasses import dataclass, field

import pytest

from duda.config_base import apply_overrides, from_dict, to_dict
from duda.errors import ConfigError


@dataclass
class Inner:
    size: tuple[int, int] = (512, 512)
    kind: str = "linear"


@dataclass
class Outer:
    lr: float = 6e-5
    iters: int = 10
    name: str | None = None
    inner: Inner = field(default_factory=Inner)
    tags: list[str] = field(default_factory=list)


def test_round_trip_and_conversion():
    cfg = from_dict(Outer, {"lr": 1, "inner": {"size": [256, 128]}, "tags": ["a"]})
    assert cfg.lr == 1.0 and isinstance(cfg.lr, float)
    assert cfg.inner.size == (256, 128)
    assert to_dict(cfg)["inner"]["size"] == [256, 128]


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match=r"inner\.sise"):
        from_dict(Outer, {"inner": {"sise": [1, 2]}})


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"iters: expected an integer"):
        from_dict(Outer, {"iters": "ten"})
    with pytest.raises(ConfigError, match=r"inner\.size"):
        from_dict(Outer, {"inner": {"size": [1, 2, 3]}})


def test_overrides_parse_yaml_values():
    data = apply_overrides({}, ["iters=20", "inner.kind=sigmoid", "name=null"])
    cfg = from_dict(Outer, data)
    assert cfg.iters == 20 and cfg.inner.kind == "sigmoid" and cfg.name is None
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["iters"])


def test_every_python_float_spelling_is_a_number():
    from duda.config_base import yaml_load

    for text, value in [("6e-4", 6e-4), ("6E-4", 6e-4), ("+1e3", 1e3), ("-1e-3", -1e-3), ("1_000e-3", 1.0),
                        ("1.0e4", 1e4), (".5", 0.5), ("5.", 5.0), ("6.0e-4", 6e-4)]:  # fmt: skip
        assert yaml_load(f"lr: {text}") == {"lr": value}, text
        assert from_dict(Outer, apply_overrides({}, [f"lr={text}"])).lr == value
    assert yaml_load("a: 12\nb: 1e\nc: e5\nd: abc") == {"a": 12, "b": "1e", "c": "e5", "d": "abc"}
    assert from_dict(Outer, {"iters": 4e4}).iters == 40000  # an integral float for an int key
    with pytest.raises(ConfigError, match="iters: expected an integer"):
        from_dict(Outer, {"iters": 2.5})


def test_an_extensible_section_takes_fields_registered_from_above():
    from typing import ClassVar

    from duda.config_base import Composed, Extensible, annotated_yaml, field_names

    @dataclass
    class Inner:
        k: int = 1  # an inner key

    @dataclass(eq=False, repr=False)
    class Open(Extensible):
        extensions_before: ClassVar[str] = "last"
        first: str = "a"  # declared first
        last: int = 0  # declared last

    Open.extend("extra", Inner, Inner, comment="registered from above", owner="tests")
    assert field_names(Open) == ["first", "extra", "last"]
    assert Open().extra == Inner() and Open() == Open() and Open() != from_dict(Open, {"extra": {"k": 2}})
    obj = from_dict(Open, {"first": "b", "extra": {"k": 3}})
    assert to_dict(obj) == {"first": "b", "extra": {"k": 3}, "last": 0}
    assert repr(obj).endswith("Open(first='b', extra=" + repr(Inner(3)) + ", last=0)")
    with pytest.raises(ConfigError, match=r"unknown key 'x.nope'; allowed here: extra, first, last"):
        from_dict(Open, {"nope": 1}, prefix="x")
    with pytest.raises(ConfigError, match=r"extra.k: expected an integer, got 'z'") as info:
        from_dict(Open, {"extra": {"k": "z"}})
    assert info.value.key == "extra.k"
    text = annotated_yaml(obj, Composed({}, {}))
    assert (
        text.splitlines()[1].rstrip()
        == "extra:                                        # registered from above"
    )
    assert "k: 3" in text and "# default | an inner key" in text
    Open.describe("first", "described from above")
    assert "# default | described from above" in annotated_yaml(obj, Composed({}, {})).splitlines()[0]
    with pytest.raises(ValueError, match="already declared by the section itself"):
        Open.extend("first", str, str)

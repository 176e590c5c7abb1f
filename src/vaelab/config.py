"""Typed configs: dataclasses that round-trip through JSON/TOML with strict checking.

A config read from a file or the command line is checked field by field: an unknown field or a
value of the wrong type is one clear error naming the field, the value and the expected type.
A field with a fixed set of values is a `typing.Literal` (`precision: Literal["fp32", "bf16"]`):
a value outside it is refused the same way, naming the choices, and `vaelab train --help`
lists them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Literal, TypeVar

from vaelab.errors import VaelabError

C = TypeVar("C")


def type_name(tp: Any) -> str:
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(tp)))
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is tuple:
        return f"a list of {type_name(typing.get_args(tp)[0])}"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def choices(tp: Any) -> tuple:
    """The values a Literal type (or a union holding Literals) allows; () for other types."""
    if typing.get_origin(tp) is Literal:
        return typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return tuple(c for arg in typing.get_args(tp) for c in choices(arg))
    return ()


def coerce(value: Any, tp: Any) -> Any:
    """Return `value` as type `tp`, or raise TypeError. Ints pass as floats; never the reverse."""
    origin = typing.get_origin(tp)
    if origin is Literal:  # of the choice's type too: True is not the choice 1
        for choice in typing.get_args(tp):
            if type(value) is type(choice) and value == choice:
                return choice
        raise TypeError
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            try:
                return coerce(value, arg)
            except TypeError:
                continue
        raise TypeError
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise TypeError
        return tuple(coerce(v, typing.get_args(tp)[0]) for v in value)
    if tp is type(None):
        if value is None:
            return None
        raise TypeError
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp in (str, bool) and isinstance(value, tp):
        return value
    raise TypeError


def field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def check_choices(config: Any) -> None:
    """Refuse a Literal field of dataclass `config` whose value is not one of its choices: what
    from_dict checks, for a config built in code (call it from the config's `validate`)."""
    for name, tp in field_types(type(config)).items():
        value = getattr(config, name)
        if not choices(tp):
            continue
        try:
            coerce(value, tp)
        except TypeError:
            raise VaelabError(f"{name} is {value!r}: expected {type_name(tp)}") from None


def from_dict(cls: type[C], data: dict[str, Any], where: str = "config") -> C:
    """Build dataclass `cls` from `data`, refusing unknown fields and wrong types."""
    if not isinstance(data, dict):
        raise VaelabError(f"{where} must be a table of fields, got {type(data).__name__}")
    types_ = field_types(cls)
    unknown = sorted(set(data) - set(types_))
    if unknown:
        raise VaelabError(
            f"{where} has unknown field(s) {', '.join(unknown)}: "
            f"expected some of {', '.join(types_)}"
        )
    values = {}
    for name, value in data.items():
        try:
            values[name] = coerce(value, types_[name])
        except TypeError:
            raise VaelabError(
                f"{where} field {name!r} is {value!r}: expected {type_name(types_[name])}"
            ) from None
    config = cls(**values)
    validate = getattr(config, "validate", None)
    if validate is not None:
        validate()
    return config


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict (tuples become lists)."""
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
    }

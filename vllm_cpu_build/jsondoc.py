"""Typed JSON documents: a dataclass to plain JSON values and back, checked field by field.

The documents the toolchain writes and reads back (the subcommand results
of ``results.py``, the provenance record of ``provenance.py``, the stamp
``patch`` leaves for ``build``) are dataclasses; this is their one converter.

* ``dump(obj)``: dataclasses become objects (fields in order), enums their
  value, tuples lists.  A field declared with ``omitted_when_none()`` is
  left out while it is None: a key the document only has sometimes.
* ``load(cls, doc, where)``: ``cls`` from a parsed document.  Each value is
  checked against its field's type (str, int, float, bool, enums,
  ``X | None``, ``list[X]``, ``tuple[X, ...]``, ``dict[str, X]``, nested
  dataclasses; ``Any`` takes anything); a missing required field, a wrong
  type or an unknown enum value raises ``error`` naming the path
  (``record.torch.pin: expected a string, got int``).  Keys the class does
  not know are ignored, so a reader can read a newer writer's document.

Stdlib only: the master imports it through ``results``.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")
_OMIT_NONE = "jsondoc.omit_none"
_SCALARS: dict[type, str] = {str: "a string", bool: "true or false", int: "an integer", float: "a number"}


class DocumentError(ValueError):
    """A JSON document that is not the typed document it should be; the message names the field."""


def omitted_when_none() -> Any:
    """A field (default None) that ``dump`` leaves out of the document while it is None."""
    return dataclasses.field(default=None, metadata={_OMIT_NONE: True})


def dump(value: object) -> Any:
    """``value`` as plain JSON values (dict, list, str, int, float, bool, None)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if item is None and f.metadata.get(_OMIT_NONE):
                continue
            out[f.name] = dump(item)
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [dump(v) for v in value]
    if isinstance(value, dict):
        return {(k.value if isinstance(k, enum.Enum) else k): dump(v) for k, v in value.items()}
    return value


def load(cls: type[T], doc: object, where: str, error: type[Exception] = DocumentError) -> T:
    """Build dataclass ``cls`` from ``doc``; raises ``error`` (a message naming the field) when it does not fit."""
    try:
        return typing.cast(T, _object(cls, doc, where))
    except DocumentError as exc:
        if error is DocumentError:
            raise
        raise error(str(exc)) from None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _object(cls: type, doc: object, where: str) -> object:
    if not isinstance(doc, dict):
        raise DocumentError(f"{where}: expected an object, got {_kind(doc)}")
    hints = _hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name not in doc:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise DocumentError(f"{where}: missing {f.name!r}")
            continue
        kwargs[f.name] = _value(hints[f.name], doc[f.name], f"{where}.{f.name}")
    return cls(**kwargs)


def _value(hint: Any, val: object, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any or hint is object:
        return val
    if origin in (typing.Union, types.UnionType):
        return _union(typing.get_args(hint), val, where)
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _object(hint, val, where)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return _enum(hint, val, where)
    if origin is list or hint is list:
        return [_value(_item(hint), v, f"{where}[{i}]") for i, v in enumerate(_expect(val, list, where))]
    if origin is tuple:
        return tuple(_value(_item(hint), v, f"{where}[{i}]") for i, v in enumerate(_expect(val, list, where)))
    if origin is dict or hint is dict:
        args = typing.get_args(hint) or (str, Any)
        return {_value(args[0], k, f"{where} key"): _value(args[1], v, f"{where}.{k}")
                for k, v in _expect(val, dict, where).items()}
    return _scalar(hint, val, where)


def _union(args: tuple[Any, ...], val: object, where: str) -> Any:
    if val is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    for i, option in enumerate(options):
        try:
            return _value(option, val, where)
        except DocumentError:
            if i == len(options) - 1:
                raise
    raise DocumentError(f"{where}: no type fits {val!r}")  # pragma: no cover - a Union has a member


def _enum(cls: type[enum.Enum], val: object, where: str) -> enum.Enum:
    try:
        return cls(val)
    except ValueError:
        known = ", ".join(repr(m.value) for m in cls)
        raise DocumentError(f"{where}: {val!r} is not one of {known}") from None


def _item(hint: Any) -> Any:
    args = typing.get_args(hint)
    return args[0] if args else Any


def _expect(val: object, kind: type[T], where: str) -> T:
    if not isinstance(val, kind):
        raise DocumentError(f"{where}: expected {'a list' if kind is list else 'an object'}, got {_kind(val)}")
    return val


def _scalar(hint: Any, val: object, where: str) -> Any:
    if hint not in _SCALARS:
        raise TypeError(f"{where}: jsondoc cannot read type {hint!r}")
    ok = isinstance(val, hint) and not (hint is int and isinstance(val, bool))
    if hint is float and isinstance(val, int) and not isinstance(val, bool):
        return float(val)
    if not ok:
        raise DocumentError(f"{where}: expected {_SCALARS[hint]}, got {_kind(val)}")
    return val


def _kind(val: object) -> str:
    return "null" if val is None else type(val).__name__

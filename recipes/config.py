"""Typed, frozen configs with one-line errors that name the key path (CONTRIBUTING.md, "Principles").

A config class is a frozen dataclass deriving from ``Config`` whose fields are declared with ``setting``
(default, documentation, bounds). ``Config.__post_init__`` checks every field against its annotation, so
a config is valid however it was built: from a recipe file (``recipes.files.load_config``), from plain
data such as the copy stored in a checkpoint (``config_from_dict``) or directly in Python.

Annotations understood: bool, int, float, str, Literal[...], X | None, tuple[X, ...], tuple[X, Y],
nested Config classes, and options tables (``setting(options=(kind, selector))``) whose class is looked
up with ``options_class(kind, <value of the sibling field selector>)``. Bools are never numbers,
integers are accepted as floats (and integral floats as integers). TOML has no null, so an optional
value is unset with the string ``"none"``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import json
import math
import operator
import re
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

from ..errors import UserError

NONE = "none"  # how TOML, which has no null, spells an unset optional value
Key = tuple  # a key path: field names, with int indices into lists, e.g. ("optim", "betas", 1)

# ---------------------------------------------------------------------------------------------------
# Errors

_REF = re.compile(r"\{\{|\}\}|\{([A-Za-z_][\w.]*)\}")


def format_key(key: Sequence[str | int]) -> str:
    """'optim.betas[1]' for ("optim", "betas", 1), quoted."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in key)
    return f"'{text.lstrip('.')}'"


class ConfigError(UserError, ValueError):
    """A bad config value. ``str(err)`` is the one line to show users: ``source: problem``.

    ``key`` is the full path of the offending key. In ``problem``, ``{key}`` stands for that path and
    ``{a.b}`` for the key ``a.b`` of the config that raised it (``root``), so a rule written inside one
    section reads right wherever the section sits; ``within`` re-roots an error raised by a sub-config."""

    def __init__(self, key: Iterable[str | int], problem: str, *, root: Iterable[str | int] = (), source: str = "",
                 related: Iterable[Key] = ()):
        self.key, self.problem, self.root, self.source = tuple(key), problem, tuple(root), source
        self.related = tuple(tuple(path) for path in related)  # other keys the error is about (for blaming)
        super().__init__(str(self))

    def within(self, prefix: Key) -> ConfigError:
        """The same error seen from a config that holds the raising one at ``prefix``."""
        return ConfigError(prefix + self.key, self.problem, root=prefix + self.root, source=self.source,
                           related=[prefix + path for path in self.related])

    def from_source(self, source: str) -> ConfigError:
        """The same error attributed to ``source`` (a file name or ``--set a.b=c``)."""
        return ConfigError(self.key, self.problem, root=self.root, source=source, related=self.related)

    def _path(self, ref: str) -> Key:
        return self.key if ref == "key" else self.root + tuple(ref.split("."))

    @property
    def paths(self) -> list[Key]:
        """Full paths of the offending key and of every other key the message refers to."""
        refs = [self._path(m.group(1)) for m in _REF.finditer(self.problem) if m.group(1)]
        return [self.key, *refs, *self.related]

    @property
    def message(self) -> str:
        """The problem with every key reference written out as a full, quoted path."""

        def render(match: re.Match) -> str:  # '{{' and '}}' escape literal braces
            return format_key(self._path(match.group(1))) if match.group(1) else match.group(0)[0]

        return _REF.sub(render, self.problem)

    def __str__(self) -> str:
        return f"{self.source}: {self.message}" if self.source else self.message


def toml_value(value: Any) -> str:
    """``value`` as a TOML value (None as ``"none"``, dicts as inline tables)."""
    if value is None:
        return f'"{NONE}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def show(value: Any) -> str:
    """A value for an error message: TOML spelling, one short line, braces escaped for ``ConfigError``."""
    text = toml_value(value).replace("\n", " ")
    text = text if len(text) <= 60 else text[:57] + "..."
    return text.replace("{", "{{").replace("}", "}}")


def _suggest(word: Any, candidates: Iterable[str]) -> str | None:
    close = difflib.get_close_matches(str(word), list(candidates), n=1)
    return close[0] if close else None


def _not_allowed(key: Key, expected: str, value: Any, candidates: Iterable[str] = ()) -> ConfigError:
    close = _suggest(value, candidates) if isinstance(value, str) else None
    hint = f"; did you mean {show(close)}?" if close else ""
    return ConfigError(key, f"{{key}} must be {expected}, got {show(value)}{hint}")


# ---------------------------------------------------------------------------------------------------
# Declaring configs

BOUNDS = {"gt": (operator.gt, ">"), "ge": (operator.ge, ">="), "lt": (operator.lt, "<"), "le": (operator.le, "<=")}


def setting(
    default: Any = dataclasses.MISSING,
    *,
    doc: str,
    factory: Callable[[], Any] | Any = dataclasses.MISSING,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
    choices: Collection[str] | Callable[[], Collection[str]] | None = None,
    options: tuple[str, str] | None = None,
) -> Any:
    """A dataclass field with its documentation and allowed values: bounds (each element of a tuple),
    ``choices`` (a collection, or a callable returning one for registries filled at import time) or,
    for an options table, ``options=(kind, selector)``."""
    bounds = {op: v for op, v in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le)) if v is not None}
    metadata = {"doc": doc, "bounds": bounds, "choices": choices, "options": options}
    return dataclasses.field(default=default, default_factory=factory, metadata=metadata)


def registered_options(kind: str) -> list[str]:
    """The registered names of ``kind`` (``polydiff.registry``), sorted."""
    from .. import registry

    return registry.names(kind)


def options_class(kind: str, name: str) -> type:
    """The options class that ``name`` registered under ``kind`` (``NoOptions`` when it takes none)."""
    from .. import registry

    return registry.get(kind, name).options or NoOptions


class Config:
    """Base of every config dataclass: checks each field when constructed, then the cross-field ``check``."""

    def __post_init__(self) -> None:
        hints, done = field_types(type(self)), {}
        for f in dataclasses.fields(self):
            done[f.name] = _coerce(hints[f.name], getattr(self, f.name), (f.name,), f.metadata, done)
            object.__setattr__(self, f.name, done[f.name])
        self.check()

    def check(self) -> None:
        """Rules tying fields together; raise ``ConfigError((field,), problem)`` naming the key to change."""


@dataclass(frozen=True)
class NoOptions(Config):
    """The options table of a component that takes none (an empty table)."""


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """The resolved annotations of a config class (cached)."""
    return typing.get_type_hints(cls)


# ---------------------------------------------------------------------------------------------------
# Checking values against annotations

_NAMES = {bool: ("true or false", "booleans"), int: ("an integer", "integers"), float: ("a number", "numbers"),
          str: ("a string", "strings")}  # fmt: skip


def optional_inner(tp: Any) -> Any | None:
    """X for ``X | None``, else None."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(inner) != 1 or len(typing.get_args(tp)) != 2:
            raise TypeError(f"only 'X | None' unions are supported, got {tp}")
        return inner[0]
    return None


def describe(tp: Any) -> str:
    """What a value of annotation ``tp`` must be, for error messages: 'a list of 2 numbers'."""
    inner, args = optional_inner(tp), typing.get_args(tp)
    if inner is not None:
        return f"{describe(inner)} or {show(NONE)}"
    if typing.get_origin(tp) is Literal:
        return "one of " + ", ".join(show(a) for a in args)
    if typing.get_origin(tp) is tuple:
        if args[-1] is Ellipsis:
            return "a list of tables" if dataclasses.is_dataclass(args[0]) else f"a list of {_NAMES[args[0]][1]}"
        if len(set(args)) == 1 and args[0] in _NAMES:
            return f"a list of {len(args)} {_NAMES[args[0]][1]}"
        return f"a list of {len(args)} values"
    if dataclasses.is_dataclass(tp):
        return "a table"
    if tp in _NAMES:
        return _NAMES[tp][0]
    raise TypeError(f"unsupported config annotation {tp!r}")


def _convert(tp: Any, value: Any, key: Key) -> Any:
    """``value`` checked against ``tp`` and normalized (int -> float, list -> tuple, table -> Config)."""
    inner = optional_inner(tp)
    if inner is not None:
        if value is None or (isinstance(value, str) and value == NONE):
            return None
        try:
            return _convert(inner, value, key)
        except ConfigError as err:
            raise (_not_allowed(key, describe(tp), value) if err.key == key else err) from None
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise _not_allowed(key, describe(tp), value, args)
    if origin is tuple:
        if isinstance(value, (list, tuple)):
            elem_types = [args[0]] * len(value) if args[-1] is Ellipsis else args
            if len(elem_types) == len(value):
                return tuple(_convert(t, v, key + (i,)) for i, (t, v) in enumerate(zip(elem_types, value)))
    elif dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return _build(tp, value, key)
    elif tp not in _NAMES:
        raise TypeError(f"unsupported config annotation {tp!r}")
    elif isinstance(value, bool) == (tp is bool):  # a bool is never a number, a number never a bool
        if tp is float and isinstance(value, (int, float)):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond any float
                number = math.inf
            return _finite(number, key, value)
        if tp is int and isinstance(value, float) and value.is_integer():
            return _int64(int(value), key, value)
        if tp is int and isinstance(value, int):
            return _int64(value, key, value)
        if isinstance(value, tp):
            return value
    raise _not_allowed(key, describe(tp), value)


def _finite(value: float, key: Key, raw: Any) -> float:
    """Every float setting is finite: nan and inf would pass no bound honestly and break training later."""
    if not math.isfinite(value):
        raise ConfigError(key, f"{{key}} must be a finite number, got {show(raw)}")
    return value


INT_LIMIT = 2**63  # settings are 64-bit integers (TOML's range); a field's own bounds narrow it further


def _int64(value: int, key: Key, raw: Any) -> int:
    if not -INT_LIMIT <= value < INT_LIMIT:
        raise ConfigError(key, f"{{key}} must fit in 64 bits, got {show(raw)}")
    return value


def _choices(meta: Mapping[str, Any]) -> Collection[str] | None:
    choices = meta.get("choices")
    return choices() if callable(choices) else choices


def _check_allowed(value: Any, raw: Any, key: Key, meta: Mapping[str, Any]) -> None:
    """Bounds (on a number or each element of a list) and choices declared with ``setting``; messages
    quote ``raw``, the value as written."""
    if isinstance(value, tuple):
        for i, (element, raw_element) in enumerate(zip(value, raw)):
            _check_allowed(element, raw_element, key + (i,), meta)
        return
    for op, bound in meta.get("bounds", {}).items():
        compare, sign = BOUNDS[op]
        if value is not None and not compare(value, bound):
            raise ConfigError(key, f"{{key}} must be {sign} {show(bound)}, got {show(raw)}")
    choices = _choices(meta)
    if choices is not None and value is not None and value not in choices:
        allowed = "one of " + ", ".join(show(c) for c in sorted(choices)) if choices else "registered (none are)"
        raise _not_allowed(key, allowed, raw, choices)


def _coerce(tp: Any, value: Any, key: Key, meta: Mapping[str, Any], siblings: Mapping[str, Any]) -> Any:
    """One field's value, checked and normalized; options tables follow their selector sibling."""
    if meta.get("options"):
        kind, selector = meta["options"]
        cls = options_class(kind, siblings[selector])
        value = {} if value is None else value
        if not isinstance(value, (cls, Mapping)):
            expected = f"a table of options for {kind} {show(siblings[selector])}"
            raise ConfigError(key, f"{{key}} must be {expected}, got {show(value)}")
        if isinstance(value, cls):
            return value
        try:
            return _build(cls, value, key)
        except ConfigError as err:
            if not err.problem.startswith("unknown key"):
                raise
            # name the selector too: its value decided which keys are allowed here
            chosen = key[:-1] + (selector,)
            note = f" (the options of {format_key(chosen)} = {show(siblings[selector])})"
            raise ConfigError(err.key, err.problem + note, root=err.root, source=err.source,
                              related=[*err.related, chosen]) from None
    converted = _convert(tp, value, key)
    _check_allowed(converted, value, key, meta)
    return converted


# ---------------------------------------------------------------------------------------------------
# dict <-> config


def _build(cls: type, data: Any, path: Key) -> Any:
    if not isinstance(data, Mapping):
        raise _not_allowed(path, "a table", data)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in data:
        if name not in fields:
            close = _suggest(name, fields)
            hint = f"did you mean {{{close}}}?" if close else (
                "allowed: " + ", ".join(fields) if fields else "this table takes no keys")
            raise ConfigError(path + (name,), "unknown key {key}; " + hint, root=path)
    hints, values = field_types(cls), {}
    for name, f in fields.items():
        if name in data:
            values[name] = _coerce(hints[name], data[name], path + (name,), f.metadata, values)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(path + (name,), "missing required key {key}")
    try:
        return cls(**values)
    except ConfigError as err:  # raised by cls.check (or a default), relative to cls
        raise err.within(path) from None


def config_from_dict(cls: type, data: Mapping[str, Any], source: str = "") -> Any:
    """Build and validate config class ``cls`` from plain data; errors name ``source`` and the key path."""
    try:
        return _build(cls, data, ())
    except ConfigError as err:
        raise (err.from_source(source) if source else err) from None


def config_to_dict(cfg: Any) -> Any:
    """Plain data (dicts, lists, scalars, None) that ``config_from_dict`` turns back into an equal config."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, tuple):
        return [config_to_dict(v) for v in cfg]
    return cfg

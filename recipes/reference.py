"""The Markdown reference of a config schema (recipes/README.md): every key, its type, default, allowed
values and meaning, generated from the dataclasses so that the documentation cannot drift from them."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from .config import BOUNDS, describe, field_types, optional_inner, options_class, registered_options, toml_value

Leaf = tuple  # (path, annotation, dataclasses.Field) of one setting
Section = tuple  # (path, leaves, doc) of one table


def table_type(tp: Any) -> tuple[type, str] | None:
    """(Config class, path suffix) when ``tp`` is a nested table ('') or an array of tables ('[]'), else None."""
    if dataclasses.is_dataclass(tp):
        return tp, ""
    args = typing.get_args(tp)
    if typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis and dataclasses.is_dataclass(args[0]):
        return args[0], "[]"
    return None


def _sections(cls: type, path: tuple[str, ...] = (), doc: str = "") -> Iterable[Section]:
    """(path, leaf settings, doc) of ``cls`` and, depth first, of every Config nested in it (an array of tables
    appears as ``name[]``)."""
    hints, fields = field_types(cls), dataclasses.fields(cls)
    nested = [f for f in fields if table_type(hints[f.name])]
    yield path, [(path + (f.name,), hints[f.name], f) for f in fields if f not in nested], doc
    for f in nested:
        sub, suffix = table_type(hints[f.name])
        yield from _sections(sub, path + (f.name + suffix,), f.metadata.get("doc", ""))


def _with_options(cls: type) -> Iterable[Section]:
    """``_sections`` plus, after each section, the table of every options class its options fields select."""
    for path, leaves, doc in _sections(cls):
        yield path, leaves, doc
        for leaf_path, _, f in leaves:
            if f.metadata.get("options"):
                kind, selector = f.metadata["options"]
                for name in registered_options(kind):
                    choice = f"when `{'.'.join(leaf_path[:-1] + (selector,))} = {toml_value(name)}`"
                    for sub_path, sub_leaves, _ in _sections(options_class(kind, name), leaf_path):
                        yield sub_path, sub_leaves, choice


def field_paths(cls: type) -> list[str]:
    """Every key path of ``cls``, including those of every registered options class (e.g. 'data.options.noise')."""
    return [".".join(p) for _, leaves, _ in _with_options(cls) for p, _, _ in leaves]


_TYPE_TEXT = {bool: "bool", int: "integer", float: "number", str: "string"}


def _type_text(tp: Any) -> str:
    inner = optional_inner(tp)
    if inner is not None:
        return _type_text(inner) + ' or `"none"`'
    if typing.get_origin(tp) is Literal:
        return "string"
    return _TYPE_TEXT.get(tp) or describe(tp).removeprefix("a ")  # 'a list of 2 numbers' -> 'list of 2 numbers'


def _allowed_text(tp: Any, meta: Mapping[str, Any]) -> str:
    base = optional_inner(tp) or tp
    choices = typing.get_args(base) if typing.get_origin(base) is Literal else meta.get("choices")
    if callable(choices):
        return "a registered name"
    if choices:
        return ", ".join(f"`{toml_value(c)}`" for c in choices)
    bounds = meta["bounds"]
    return ", ".join(f"{sign} {toml_value(bounds[op])}" for op, (_, sign) in BOUNDS.items() if op in bounds)


def _row(path: tuple[str, ...], tp: Any, f: dataclasses.Field) -> str:
    meta = f.metadata
    if "|" in meta["doc"]:
        raise ValueError(f"the doc of {'.'.join(path)} may not contain '|' (it breaks the Markdown table)")
    if meta.get("options"):
        kind_text, default, allowed = "table", "defaults", f"keys of the chosen `{meta['options'][1]}`, below"
    else:
        kind_text, allowed = _type_text(tp), _allowed_text(tp, meta)
        default = f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        default = "required" if default is dataclasses.MISSING else f"`{toml_value(default)}`"
    return f"| `{'.'.join(path)}` | {kind_text} | {default} | {allowed} | {meta['doc']} |"


def markdown_reference(cls: type) -> str:
    """A Markdown reference of every key of ``cls`` and of each registered options table, from the schema:
    one table per section, each row's key, type, default, allowed values and meaning."""
    lines: list[str] = []
    for path, leaves, doc in _with_options(cls):
        if not leaves:
            continue
        heading = f"`[{'.'.join(path)}]`" if path else "top level"
        lines += [f"### {heading}", "", *([doc, ""] if doc else [])]
        lines += ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        lines += [_row(*leaf) for leaf in leaves] + [""]
    return "\n".join(lines)

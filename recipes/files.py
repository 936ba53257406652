"""Recipe files: read a TOML recipe (or a saved JSON config), apply ``--set`` overrides, save the resolved config.

``--set a.b.c=value`` takes a TOML value (``optim.lr=3e-4``, ``train.mixed_precision="bf16"``,
``optim.betas=[0.9, 0.99]``); a value that is not valid TOML is a bare string (``sample.sampler=heun``).
Overrides are checked exactly like the file, and an error names the override that set the bad key.
The resolved config (every key, defaults included) is written with ``save_resolved`` and reads back
into an equal config with ``load_config`` / ``load_recipe``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .config import ConfigError, config_from_dict, config_to_dict, show, toml_value
from .schema import RecipeConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    try:
        import tomli as tomllib
    except ModuleNotFoundError:
        tomllib = None


def _toml(source: str) -> Any:
    if tomllib is None:
        raise ConfigError((), "reading TOML needs Python >= 3.11 or the 'tomli' package", source=source)
    return tomllib


def read_file(path: str | Path) -> dict[str, Any]:
    """The raw tables of a TOML recipe, or of a JSON resolved config ('.json')."""
    path, source = Path(path), str(path)
    if path.is_dir():
        raise ConfigError((), "is a folder, not a recipe file", source=source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError((), f"cannot read the file ({err.strerror or err})", source=source) from None
    except UnicodeDecodeError as err:
        raise ConfigError((), f"is not UTF-8 text (byte {err.start}: {err.reason})", source=source) from None
    kind, parse, error = ("JSON", json.loads, json.JSONDecodeError) if path.suffix == ".json" else (
        "TOML", _toml(source).loads, _toml(source).TOMLDecodeError)
    try:
        data = parse(text)
    except error as err:
        raise ConfigError((), f"invalid {kind}: {err}".replace("\n", " "), source=source) from None
    except RecursionError:
        raise ConfigError((), f"invalid {kind}: nested too deeply to be a recipe", source=source) from None
    if not isinstance(data, dict):
        raise ConfigError((), f"must hold a table of sections, got {type(data).__name__}", source=source)
    return data


def parse_override(text: str) -> tuple[tuple[str, ...], Any]:
    """'optim.lr=3e-4' -> (("optim", "lr"), 0.0003): the key path and the value in TOML syntax, where
    anything that is not a TOML value (``heun``, ``runs/x``) is a bare string."""
    source = f"--set {text}"
    name, sep, raw = text.partition("=")
    key = tuple(part.strip() for part in name.split("."))
    if not sep or not all(key):
        raise ConfigError((), "expected KEY=VALUE such as optim.lr=3e-4", source=source)
    toml, raw = _toml(source), raw.strip()
    try:
        return key, toml.loads(f"v = {raw}")["v"] if "\n" not in raw else raw
    except toml.TOMLDecodeError:
        return key, raw
    except RecursionError:
        raise ConfigError((), "the value is nested too deeply to be a recipe value", source=source) from None


def _assign(data: dict, key: tuple[str, ...], value: Any, source: str) -> None:
    """data[k0][k1]...[kn] = value, creating missing tables."""
    for i, part in enumerate(key[:-1]):
        data = data.setdefault(part, {})
        if not isinstance(data, dict):
            raise ConfigError(key[: i + 1], f"{{key}} is {show(data)}, not a table", source=source)
    data[key[-1]] = value


def _overlap(a: tuple, b: tuple) -> bool:
    """One key path holds the other (an override of a table, or of a key inside the bad one)."""
    n = min(len(a), len(b))
    return n > 0 and a[:n] == b[:n]


def load_config(cls: type, path: str | Path, overrides: Sequence[str] = ()) -> Any:
    """Config ``cls`` from a recipe file, then each ``--set a.b=value`` of ``overrides`` (the last wins).
    An error names the last override that touched a key it mentions, else the file."""
    data = read_file(path)
    sets = [(text, *parse_override(text)) for text in overrides]
    for text, key, value in sets:
        _assign(data, key, value, f"--set {text}")
    try:
        return config_from_dict(cls, data)
    except ConfigError as err:
        blamed = [text for text, key, _ in sets if any(_overlap(key, path) for path in err.paths)]
        raise err.from_source(f"--set {blamed[-1]}" if blamed else str(path)) from None


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> RecipeConfig:
    """The ``RecipeConfig`` of a recipe file (or of a saved resolved config) with ``--set`` overrides."""
    return load_config(RecipeConfig, path, overrides)


def to_json(cfg: Any) -> str:
    """The resolved config as JSON (None as null)."""
    return json.dumps(config_to_dict(cfg), indent=2) + "\n"


def to_toml(cfg: Any) -> str:
    """The resolved config as a TOML recipe with every key written (None as ``"none"``)."""
    lines: list[str] = []

    def table(data: Mapping[str, Any], path: tuple[str, ...]) -> None:
        if path:
            lines.extend(["", f"[{'.'.join(path)}]"])
        lines.extend(f"{k} = {toml_value(v)}" for k, v in data.items() if not isinstance(v, dict))
        for k, v in data.items():
            if isinstance(v, dict):
                table(v, path + (k,))

    table(config_to_dict(cfg), ())
    return "\n".join(lines) + "\n"


def save_resolved(cfg: Any, path: str | Path) -> Path:
    """Write the resolved config of a run or checkpoint: TOML, or JSON for a '.json' path."""
    path = Path(path)
    path.write_text(to_json(cfg) if path.suffix == ".json" else to_toml(cfg))
    return path

"""Recipe options for the core's own registries: training noise levels and loss weightings.

Their names are those of ``core.noise_levels.NOISE_LEVELS`` and ``core.objectives.WEIGHTINGS``; each option
table is generated from the fields of the core dataclass that carry a ``doc`` (with its bounds), so the recipe
keys, their defaults and their documentation cannot drift from the core. The remaining fields are filled in by
the engine from other sections (``ENGINE_SUPPLIED``).
"""

from __future__ import annotations

import dataclasses
import typing

from ..core.noise_levels import NOISE_LEVELS
from ..core.objectives import WEIGHTINGS
from ..registry import Component, add
from .config import Config, setting

ENGINE_SUPPLIED = {"schedule": "diffusion.schedule", "sigma_data": "diffusion.sigma_data"}
_BOUNDS = ("gt", "ge", "lt", "le")


def options_from_core(core_cls: type) -> type:
    """A frozen ``Config`` with one setting per documented field of the core dataclass ``core_cls``."""
    hints = typing.get_type_hints(core_cls)
    fields = []
    for f in dataclasses.fields(core_cls):
        if "doc" not in f.metadata:
            if f.name not in ENGINE_SUPPLIED:
                raise TypeError(f"{core_cls.__name__}.{f.name} needs a 'doc' in its field metadata to be a recipe key")
            continue
        bounds = {k: f.metadata[k] for k in _BOUNDS if k in f.metadata}
        fields.append((f.name, hints[f.name], setting(f.default, doc=f.metadata["doc"], **bounds)))
    cls = dataclasses.make_dataclass(f"{core_cls.__name__}Options", fields, bases=(Config,), frozen=True)
    cls.__module__ = __name__
    cls.__doc__ = f"Recipe options of ``{core_cls.__module__}.{core_cls.__name__}``."
    return cls


def core_keywords(core_cls: type, options, engine: dict) -> dict:
    """The keyword arguments that build ``core_cls``: the recipe's options plus what the engine supplies."""
    names = {f.name for f in dataclasses.fields(core_cls)}
    values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    return {**values, **{k: v for k, v in engine.items() if k in names}}


for _kind, _table in (("noise_levels", NOISE_LEVELS), ("weighting", WEIGHTINGS)):
    for _name, _cls in _table.items():
        add(Component(_kind, _name, _cls, options_from_core(_cls)))

"""Components register themselves where they are defined; nothing central lists them.

A component is a backbone, a data set, a batch transform, a sample writer (one per modality) or a CLI
command. Each module declares its own with a decorator next to its code, together with the typed options
dataclass that a recipe fills in (``polydiff.recipes.config.Config``):

    @register_backbone("mlp", MLPOptions)
    class MLPBackbone(nn.Module):
        def __init__(self, options: MLPOptions, spec: BackboneSpec): ...

    @register_dataset("swiss_roll", SwissRollOptions)
    def swiss_roll_dataset(options: SwissRollOptions, seed: int) -> Dataset: ...

``discover()`` imports every module of ``polydiff.modalities``, ``polydiff.data`` and ``polydiff.commands``
once, then the modules that installed packages name under the ``polydiff.plugins`` entry-point group, so a
modality shipped outside polydiff registers the same way. Lookups discover first. This module imports only
the standard library.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import pkgutil
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ENTRY_POINT_GROUP = "polydiff.plugins"
_PACKAGES = ("polydiff.commands", "polydiff.modalities", "polydiff.data", "polydiff.recipes.core_options")

# What each kind is, for messages ("unknown backbone 'x'").
KINDS = {
    "model": "backbone",
    "data": "data set",
    "transform": "batch transform",
    "writer": "modality (sample writer)",
    "command": "command",
    "demo": "demo part",
    "noise_levels": "noise-level distribution",
    "weighting": "loss weighting",
}


@dataclass(frozen=True)
class Component:
    """One registered thing: ``target`` is what is called (a builder, writer or command), ``options`` the typed
    options class of its recipe table (None: it takes none), ``info`` what its kind needs besides."""

    kind: str
    name: str
    target: Any
    options: type | None = None
    info: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone builder learns from the data and the recipe besides its own options: the shape of one
    example, channels first ((D,) vectors, (1, T) audio, (C, H, W) images, (C, F, H, W) video), and the output
    factor (2 when the backbone also predicts a variance, ``core.precond.Precond(learned_variance=True)``)."""

    example_shape: tuple[int, ...]
    out_factor: int = 1


@dataclass(frozen=True)
class WriteContext:
    """What a sample writer is told besides the samples: the recipe's ``data.range`` (how samples map to pixels
    or waveforms), the resolved recipe itself (e.g. a sample rate or frame rate in its data options), and
    optionally real examples to show next to the samples ((N, *S) tensor or None)."""

    value_range: tuple[float, float]
    config: Any = None
    reference: Any = None
    labels: Any = None  # (N,) class labels of the samples, when they have them (e.g. a grid with a row per class)


_REGISTRY: dict[str, dict[str, Component]] = {kind: {} for kind in KINDS}
_discovered = False


def add(component: Component) -> Component:
    """Register ``component``; registering the same target again is a no-op, a different one under a taken
    name an error (two plugins would silently shadow each other)."""
    table = _REGISTRY.setdefault(component.kind, {})
    old = table.get(component.name)
    if old is not None and _where(old.target) != _where(component.target):  # a re-imported module may re-register
        raise ValueError(f"{KINDS.get(component.kind, component.kind)} {component.name!r} registered twice "
                         f"({_where(old.target)} and {_where(component.target)})")
    table[component.name] = component
    return component


def _where(target: Any) -> str:
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"


def register(kind: str, name: str, options: type | None = None, **info: Any) -> Callable[[Any], Any]:
    """Decorator: register the decorated class or function as ``kind`` ``name``; returns it unchanged."""
    if options is not None and not dataclasses.is_dataclass(options):
        raise TypeError(f"options of {kind} {name!r} must be a Config dataclass, got {options!r}")

    def decorate(target: Any) -> Any:
        add(Component(kind, name, target, options, dict(info)))
        return target

    return decorate


def register_backbone(name: str, options: type | None = None, *, example_shape: tuple[int, ...],
                      conditional: Mapping[str, Any] | None = None, output: str = "denoiser") -> Callable[[Any], Any]:
    """A backbone ``F(x_in, c_noise, cond) -> out`` built as ``target(options, spec: BackboneSpec)``; it follows
    ``polydiff.core.denoiser.Backbone`` (``null_cond``, ``out_factor``). The contract tests build it on
    ``example_shape`` (a small shape it accepts) with its default options, and with ``conditional`` (option
    values that make it conditional, e.g. ``{"num_classes": 3}``) to check its null-condition path.
    ``output``: "denoiser" (an example-shaped prediction) or "logits" (a noise-aware classifier, (B, K))."""
    return register("model", name, options, example_shape=tuple(example_shape), conditional=dict(conditional or {}),
                    output=output)


def register_dataset(name: str, options: type | None = None) -> Callable[[Any], Any]:
    """A data set built as ``target(options, seed) -> Dataset`` whose items are ``{"x": (*S), "cond": {...}}``:
    map-style (``__len__`` / ``__getitem__``) or streaming (``polydiff.data.streaming.StreamingDataset``)."""
    return register("data", name, options)


def register_transform(name: str, options: type | None = None, at_sampling: bool = False) -> Callable[[Any], Any]:
    """A per-batch transform built as ``target(options)``; the built object is called as
    ``transform(batch, generators) -> batch`` with one generator per example (``polydiff.data.transforms``).
    ``at_sampling``: it also turns the user's conditions into the model's when sampling (a frozen text
    encoder), so it must be deterministic and read only ``cond``."""
    return register("transform", name, options, at_sampling=at_sampling)


def register_writer(modality: str, example_dims: int, export: Callable | None = None) -> Callable[[Any], Any]:
    """The sample writer of ``modality``, called as ``target(samples, context) -> Media``
    (``polydiff.media``). Registering it is what makes ``modality`` a valid recipe value;
    ``example_dims`` is the number of dimensions of one example the modality expects ((D,): 1, (C, H, W): 3).
    ``export(samples, context, folder) -> [paths]``, if given, also writes the samples in the files evaluation
    tools read (``polydiff sample`` calls it)."""
    return register("writer", modality, None, example_dims=example_dims, export=export)


def register_command(name: str, help: str, arguments: Callable[[Any], None] | None = None) -> Callable[[Any], Any]:
    """A ``polydiff NAME`` subcommand: ``arguments(parser)`` adds its options, the target runs as
    ``target(args) -> exit code``."""
    return register("command", name, None, help=help, arguments=arguments)


def register_demo(name: str, order: int, about: str) -> Callable[[Any], Any]:
    """A part of ``polydiff demo`` (each modality adds its own), run in ``order`` as ``target(out_dir, quick)``
    and returning the files it wrote; ``quick`` asks for a seconds-long version (tests)."""
    return register("demo", name, None, order=order, about=about)


def discover() -> None:
    """Import every built-in component module once, then the ``polydiff.plugins`` entry points."""
    global _discovered
    if _discovered:
        return
    _discovered = True  # before importing: modules that look things up while loading see what exists so far
    for package in _PACKAGES:
        _import_tree(package)
    for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            importlib.import_module(entry.value.split(":")[0])
        except Exception as err:  # a broken third-party plugin must not take the built-in commands down
            warnings.warn(f"polydiff plugin {entry.name!r} ({entry.value}) failed to load: {err}", stacklevel=2)


def _import_tree(name: str) -> None:
    module = importlib.import_module(name)
    for info in pkgutil.walk_packages(getattr(module, "__path__", []), prefix=f"{name}."):
        importlib.import_module(info.name)


def names(kind: str) -> list[str]:
    """The registered names of ``kind``, sorted."""
    discover()
    return sorted(_REGISTRY.get(kind, {}))


def get(kind: str, name: str) -> Component:
    """The component ``kind`` ``name``, or a KeyError naming the known ones."""
    discover()
    table = _REGISTRY.get(kind, {})
    if name not in table:
        known = ", ".join(sorted(table)) or "none"
        raise KeyError(f"unknown {KINDS.get(kind, kind)} {name!r}; known: {known}")
    return table[name]


def components(kind: str) -> list[Component]:
    """Every registered component of ``kind``, by name."""
    return [get(kind, name) for name in names(kind)]


def unregister(kind: str, name: str) -> None:
    """Remove a registration (tests that register throwaway components clean up with this)."""
    _REGISTRY.get(kind, {}).pop(name, None)

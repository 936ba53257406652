"""Checks that a saved state fits what it is loaded into, before loading it.

``load_state_dict`` of optimizers and schedulers trusts its input: a hand-edited or damaged checkpoint whose
learning rate is a string, whose betas lost an element or whose moments have the wrong shape loads without
complaint and crashes inside the first step. These checks compare the saved state with the live object's own
state (same keys, same kinds of values, tensors shaped like their parameters) and raise a ``CheckpointError``
naming the entry, so resume falls back to an older checkpoint instead.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ..storage.guards import CheckpointError

_NUMBER = (int, float)


def _kind(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return "tensor"
    if isinstance(value, bool) or value is None:
        return type(value).__name__
    if isinstance(value, _NUMBER):
        return "number"
    if isinstance(value, Mapping):
        return "table"
    if isinstance(value, (list, tuple)):
        return "list"
    return type(value).__name__


def check_like(reference: Any, saved: Any, where: str) -> None:
    """Raise unless ``saved`` has ``reference``'s structure: the same keys, lists of the same length, and values
    of the same kind (number, bool, None, string, tensor) all the way down."""
    if _kind(reference) != _kind(saved):
        raise CheckpointError(f"{where} should be a {_kind(reference)}, got {_kind(saved)} {str(saved)[:40]!r}")
    if isinstance(reference, Mapping):
        missing = [k for k in reference if k not in saved]
        if missing:
            raise CheckpointError(f"{where} lacks {', '.join(map(str, missing[:3]))}")
        for key, value in reference.items():
            check_like(value, saved[key], f"{where}.{key}")
    elif isinstance(reference, (list, tuple)):
        if len(reference) != len(saved):
            raise CheckpointError(f"{where} should have {len(reference)} entries, got {len(saved)}")
        for i, (a, b) in enumerate(zip(reference, saved)):
            check_like(a, b, f"{where}[{i}]")


def check_optimizer_state(live_groups: Sequence[Mapping[str, Any]], saved: Any, parameters: Mapping[Any, Any],
                          where: str) -> None:
    """The saved optimizer state against the live optimizer: its param groups' hyperparameters (``check_like``
    without the parameter lists) and its per-parameter tensors (a scalar such as Adam's step, or the shape of
    the parameter). ``parameters`` maps the saved state's keys (parameter ids or names) to live parameters."""
    if not isinstance(saved, Mapping) or not isinstance(saved.get("param_groups"), list) or not isinstance(
            saved.get("state"), Mapping):
        raise CheckpointError(f"{where} must hold 'state' and 'param_groups'")
    if len(saved["param_groups"]) != len(live_groups):
        raise CheckpointError(f"{where}.param_groups should have {len(live_groups)} entries")
    for i, (live, group) in enumerate(zip(live_groups, saved["param_groups"])):
        check_like({k: v for k, v in live.items() if k != "params"},
                   {k: v for k, v in group.items() if k != "params"} if isinstance(group, Mapping) else group,
                   f"{where}.param_groups[{i}]")
    for key, entry in saved["state"].items():
        param = parameters.get(key)
        if param is None or not isinstance(entry, Mapping):
            raise CheckpointError(f"{where}.state has an entry {key!r} for no parameter of the model")
        for name, value in entry.items():
            if isinstance(value, torch.Tensor) and value.ndim and tuple(value.shape) != tuple(param.shape):
                raise CheckpointError(f"{where}.state[{key!r}].{name} has shape {tuple(value.shape)}, its parameter "
                                      f"{tuple(param.shape)}")

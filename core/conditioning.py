"""The null-condition convention: how an "unconditional" cond is formed, for any cond dict.

Convention. A model that supports classifier-free guidance is trained with some conditions replaced by
a *null value* (Ho & Salimans 2022, sec. 3.2). Which keys are droppable, and what their null value is,
is one mapping

    null_cond: Mapping[str, Tensor]     key -> null value of ONE sample (shape broadcastable to cond[key][0])

Keys absent from ``null_cond`` are never dropped and reach the conditional and the unconditional
prediction unchanged (e.g. a cascade's ``"lowres"`` and ``"aug_level"``, CONTRIBUTING.md, "Principles").
Null values are broadcast per sample: ``null.expand(cond[key].shape)``. Typical null values:

- class labels: a dedicated null label; ``num_classes`` for an embedding table with ``num_classes + 1``
  rows (ADM / DiT), or ``-1`` for ``core.analytic.GaussianMixture``, which reads labels < 0 as
  "unconditional" (the tests use this);
- text / sequence embeddings (L, C): the embedding of the empty prompt, or zeros;
- images / audio used as conditions: zeros.

Per-sample selection between the real and the null value is a boolean ``keep`` of shape (B,):
``select_conditions(cond, null_cond, keep)``. Training-time dropout draws ``keep`` (``drop_conditions``);
guidance uses ``null_conditions`` (keep = False everywhere). One ``keep`` drops all keys of
``null_cond`` together; call ``drop_conditions`` once per group (each with its own ``null_cond``) to
drop groups independently.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from .denoiser import Cond
from .utils import Generator, append_dims, rand_like_batch


def _null_for(value: torch.Tensor, null: torch.Tensor | float | int) -> torch.Tensor:
    """The null value broadcast to ``value``'s (B, *S_k) shape, dtype and device."""
    return torch.as_tensor(null, dtype=value.dtype, device=value.device).expand(value.shape)


def _check_keys(cond: Mapping[str, torch.Tensor], null_cond: Mapping[str, object]) -> None:
    missing = [k for k in null_cond if k not in cond]
    if missing:
        raise KeyError(f"cond has no {missing}; null_cond names conditions the model must receive")


def select_conditions(cond: Cond, null_cond: Mapping[str, object], keep: torch.Tensor) -> dict:
    """Per sample, the real condition where ``keep`` (B,) is True and the null value where it is False.

    Keys outside ``null_cond`` pass through unchanged.
    """
    cond = dict(cond or {})
    _check_keys(cond, null_cond)
    for key, null in null_cond.items():
        value = cond[key]
        cond[key] = torch.where(append_dims(keep.to(value.device), value.ndim), value, _null_for(value, null))
    return cond


def null_conditions(cond: Cond, null_cond: Mapping[str, object]) -> dict:
    """The unconditional version of ``cond``: every key of ``null_cond`` set to its null value."""
    cond = dict(cond or {})
    _check_keys(cond, null_cond)
    return {**cond, **{key: _null_for(cond[key], null) for key, null in null_cond.items()}}


def with_null_defaults(
    cond: Cond, null_cond: Mapping[str, object], batch_size: int, device: torch.device | str = "cpu"
) -> dict:
    """``cond`` with every key of ``null_cond`` that it lacks set to the null value for all ``batch_size``
    samples ((B, *null.shape)); keys it has are kept. How a conditional model is asked for an unconditional
    prediction without naming the null value."""
    cond = dict(cond or {})
    for key, null in null_cond.items():
        if key not in cond:
            null = torch.as_tensor(null, device=device)
            cond[key] = null.expand(batch_size, *null.shape)
    return cond


def drop_conditions(
    cond: Cond, p: float, null_cond: Mapping[str, object], generator: Generator = None
) -> dict:
    """Training-time condition dropout (Ho & Salimans 2022, Algorithm 1: c <- null with probability p_uncond).

    Each sample is dropped independently with probability ``p``; ``generator`` is one
    ``torch.Generator`` or one per sample (then sample i's decision depends only on ``generator[i]``,
    as in ``core.utils.rand_like_batch``). Returns a new dict; ``cond`` is not modified.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"drop probability p must lie in [0, 1], got {p}")
    cond = dict(cond or {})
    _check_keys(cond, null_cond)
    if not null_cond:
        return cond
    first = cond[next(iter(null_cond))]
    proto = torch.empty(first.shape[0], dtype=torch.float64, device=first.device)  # (B,) for the draw
    keep = rand_like_batch(proto, generator) >= p  # (B,) True with probability 1 - p
    return select_conditions(cond, null_cond, keep)


def conditions_taken(backbone, cond: Mapping[str, torch.Tensor]) -> dict:
    """The conditions of ``cond`` that ``backbone`` takes: the keys of its ``null_cond`` and ``required_cond``
    (``core.denoiser.Backbone``); the rest belong to other models of a pipeline, or to a guiding classifier."""
    keys = set(getattr(backbone, "null_cond", {})) | set(getattr(backbone, "required_cond", ()))
    return {k: v for k, v in cond.items() if k in keys}

"""The denoiser contract every part of the core talks through (Karras et al. 2022, EDM, sec. 2).

    D(x, sigma, cond) -> x0_hat      x: (B, C, *S)   sigma: (B,)   cond: Mapping[str, Tensor]

``x`` is in sigma form, ``x = x0 + sigma * n``. Samplers, objectives, guidance and likelihood call only
``D``; the eps / x0 / v / EDM parameterizations are adapters in ``polydiff.core.precond``, which turn a
``Backbone`` (the network) into a denoiser.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch

from .utils import append_dims

Cond = Mapping[str, torch.Tensor] | None


@runtime_checkable
class Denoiser(Protocol):
    """Anything callable as ``D(x, sigma, cond) -> x0_hat``."""

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond = None) -> torch.Tensor: ...


@runtime_checkable
class VarianceDenoiser(Denoiser, Protocol):
    """A denoiser that also predicts the reverse-step variance (improved DDPM, Nichol & Dhariwal 2021).

    ``denoise_with_variance`` returns ``(x0_hat, v)`` where ``v`` in [0, 1] (shape of ``x``) interpolates
    the log of the DDPM posterior variance between beta_tilde (v=0) and beta (v=1), their eq. 15.
    """

    def denoise_with_variance(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


def to_d(x: torch.Tensor, sigma: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
    """The probability-flow ODE derivative dx/dsigma = (x - D(x, sigma)) / sigma (EDM eq. 3, sigma(t)=t)."""
    return (x - x0_hat) / append_dims(sigma, x.ndim)


@runtime_checkable
class Backbone(Protocol):
    """The network behind a denoiser: ``F(x_in, c_noise, cond) -> out`` (EDM eq. 7's F), never told the schedule.

    x_in      (B, C, *S), already scaled by c_in                 c_noise   (B,), e.g. ln(sigma) / 4
    out       (B, out_factor * C, *S): the parameterized prediction, then (out_factor 2) the variance head

    ``null_cond`` maps each condition the backbone can go without to its null value for one sample (the value
    condition dropout trains, ``core.conditioning``): ``{"class_labels": num_classes}`` for a learned null
    class, ``{}`` for an unconditional backbone. Classifier-free guidance and unconditional sampling use it.
    ``out_factor`` is 2 when the backbone also predicts the variance interpolation (improved DDPM), else 1.
    A backbone may also name ``required_cond``, conditions it always needs and that are never dropped (a
    super-resolution stage's ``lowres`` and ``aug_level``).
    """

    null_cond: Mapping[str, Any]
    out_factor: int

    def forward(self, x_in: torch.Tensor, c_noise: torch.Tensor, cond: Mapping[str, torch.Tensor]) -> torch.Tensor: ...

"""The denoiser contract every part of the core talks through (Karras et al. 2022, EDM, sec. 2).

    D(x, sigma, cond) -> x0_hat      x: (B, C, *S)   sigma: (B,)   cond: Mapping[str, Tensor]

``x`` is in sigma form, ``x = x0 + sigma * n``. Samplers, objectives, guidance and likelihood call only
``D``; the eps / x0 / v / EDM parameterizations are adapters in ``polydiff.core.precond``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

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

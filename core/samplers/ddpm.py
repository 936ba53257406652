"""Ancestral DDPM sampling (Ho et al. 2020, eqs. 6-7; learned variance: Nichol & Dhariwal 2021, eq. 15).

Between consecutive grid levels sigma > sigma_next the equivalent VP quantities are
abar_t = 1 / (1 + sigma^2), abar_s = 1 / (1 + sigma_next^2), beta_t = 1 - abar_t / abar_s, and the
reverse step samples q(z_s | z_t, x0_hat) = N(mu_tilde, var). Divided by sqrt(abar_s) (sigma form):

    mean     = x0_hat + (sigma_next / sigma)^2 (x - x0_hat)                 (mu_tilde / sqrt(abar_s))
    beta_tilde / abar_s = sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2   ('small', eq. 7)
    beta_t     / abar_s = (sigma^2 - sigma_next^2) (1 + sigma_next^2) / (1 + sigma^2)   ('large')

and 'learned' uses log var = v log beta + (1 - v) log beta_tilde with v from the model (eq. 15).
As Algorithm 2 of Ho et al. (z = 0 at t = 1), the last step to sigma = 0 adds no noise: x = x0_hat.
"""

from __future__ import annotations

import math

import torch

from ..utils import batch_sigma
from .common import add_noise, denoise, run_steps
from .registry import register

VARIANCES = ("small", "large", "learned")
_FIXED_V = {"small": 0.0, "large": 1.0}  # the eq. 15 interpolation weight each fixed choice amounts to


def log_variances(sigma: float, sigma_next: float) -> tuple[float, float]:
    """(log beta_t, log beta_tilde_t) in sigma form (each divided by abar_s), for sigma_next > 0."""
    gap = sigma**2 - sigma_next**2
    log_beta = math.log(gap) + math.log1p(sigma_next**2) - math.log1p(sigma**2)
    log_beta_tilde = math.log(gap) + 2 * math.log(sigma_next) - 2 * math.log(sigma)
    return log_beta, log_beta_tilde


def posterior_mean(x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """mu_tilde(x_t, x0_hat) of Ho et al. eq. 7 in sigma form: x0_hat + (sigma_next / sigma)^2 (x - x0_hat)
    (the same point as the eta = 1 ancestral / DDIM step's deterministic part)."""
    return denoised + (sigma_next / sigma) ** 2 * (x - denoised)


def _denoise_with_v(denoiser, x, sigma, cond, variance):
    """(x0_hat, v): v is the model's eq. 15 weight for 'learned', else the fixed 0 ('small') / 1 ('large')."""
    if variance != "learned":
        return denoise(denoiser, x, sigma, cond), _FIXED_V[variance]
    if not callable(getattr(denoiser, "denoise_with_variance", None)):
        raise TypeError("variance='learned' needs a denoiser with denoise_with_variance(x, sigma, cond) -> (x0_hat, v)")
    denoised, v = denoiser.denoise_with_variance(x, batch_sigma(sigma, x), cond)
    if v is None:
        raise ValueError("variance='learned' but the denoiser predicts no variance (v is None)")
    return denoised, v


@register("ddpm", stochastic=True)
def ddpm(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, variance="small") -> torch.Tensor:
    """DDPM ancestral sampling over the grid (Ho et al. 2020, Algorithm 2, eq. 6-7), one posterior draw
    per interval; ``variance`` is 'small' (beta_tilde), 'large' (beta) or 'learned' (improved DDPM eq. 15,
    via ``denoiser.denoise_with_variance``)."""
    if variance not in VARIANCES:
        raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")

    def step(i, x, sigma, sigma_next):
        denoised, v = _denoise_with_v(denoiser, x, sigma, cond, variance)
        if sigma_next == 0.0:
            return denoised, denoised
        log_beta, log_beta_tilde = log_variances(sigma, sigma_next)
        log_var = v * log_beta + (1 - v) * log_beta_tilde
        std = math.exp(0.5 * log_var) if isinstance(log_var, float) else (0.5 * log_var).exp()
        return add_noise(posterior_mean(x, denoised, sigma, sigma_next), std, generator), denoised

    return run_steps(x, sigmas, step, callback)

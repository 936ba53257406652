"""Ancestral DDPM sampling (Ho et al. 2020, eqs. 6-7; learned variance: Nichol & Dhariwal 2021, eq. 15).

Between consecutive grid levels sigma > sigma_next the reverse step samples the DDPM posterior at the
predicted x0, q(x_next | x, x0_hat), written once in sigma form in ``core.forward_process``: mean
x0_hat + (sigma_next / sigma)^2 (x - x0_hat) and variance 'small' (beta_tilde), 'large' (beta) or 'learned'
(eq. 15's interpolation with v from the model). As Algorithm 2 of Ho et al. (z = 0 at t = 1), the last step to
sigma = 0 adds no noise: x = x0_hat.
"""

from __future__ import annotations

import torch

from ..forward_process import VARIANCES, interpolate_log_variance, posterior_log_variances, posterior_mean
from ..utils import batch_sigma
from .common import add_noise, denoise, run_steps
from .registry import register

_FIXED_V = {"small": 0.0, "large": 1.0}  # the eq. 15 interpolation weight each fixed choice amounts to


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


def step_std(sigma: float, sigma_next: float, v) -> torch.Tensor | float:
    """Standard deviation of the reverse step sigma -> sigma_next > 0 for interpolation weight v (a float, or a
    tensor shaped like x for a learned variance)."""
    log_small, log_large = posterior_log_variances(torch.tensor(sigma, dtype=torch.float64),
                                                   torch.tensor(sigma_next, dtype=torch.float64))
    if isinstance(v, float):
        return float((0.5 * interpolate_log_variance(log_small, log_large, v)).exp())
    log_var = interpolate_log_variance(log_small.to(v.device), log_large.to(v.device), v.to(torch.float64))
    return (0.5 * log_var).exp().to(v.dtype)


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
        return add_noise(posterior_mean(x, denoised, sigma, sigma_next), step_std(sigma, sigma_next, v), generator), denoised

    return run_steps(x, sigmas, step, callback)

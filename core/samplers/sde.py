"""Reverse-SDE samplers in sigma form (Song et al. 2021, 'Score-Based Generative Modeling through SDEs').

In sigma the forward process is the VE SDE dx = sqrt(d sigma^2 / d sigma) dW = sqrt(2 sigma) dW and its
reverse (eq. 6) dx = -2 sigma grad log p_sigma(x) dsigma + sqrt(2 sigma) dW_bar, run from sigma_max
down. With s = (D - x) / sigma^2 the drift -2 sigma s = 2 (x - D) / sigma is twice the PF-ODE slope.

Both samplers end with the denoising jump x <- D(x, sigma_L) from the smallest nonzero level to sigma = 0
(the 'noise removal' / denoise-at-the-end of Song et al.'s code and NCSNv2): no noise is added there.
"""

from __future__ import annotations

import math

import torch

from ..forward_process import posterior_mean
from ..utils import randn_like
from .common import add_noise, denoise, derivative, euler_step, run_steps
from .langevin import langevin_update, score_and_denoised
from .registry import register


def euler_maruyama_step(x, denoised, sigma: float, sigma_next: float, generator) -> torch.Tensor:
    """One Euler-Maruyama step of the reverse SDE over h = sigma - sigma_next > 0:
    x_next = x + 2 (sigma_next - sigma) d + sqrt(2 sigma h) z,  d = (x - D) / sigma."""
    x_next = euler_step(x, 2 * derivative(x, denoised, sigma), sigma, sigma_next)
    return add_noise(x_next, math.sqrt(2 * sigma * (sigma - sigma_next)), generator)


def reverse_diffusion_step(x, denoised, sigma: float, sigma_next: float, generator) -> torch.Tensor:
    """The reverse-diffusion predictor for the VE SDE (Song et al. 2021, Algorithm 2, lines 3-5):
    x' = x + (sigma^2 - sigma_next^2) s(x, sigma) + sqrt(sigma^2 - sigma_next^2) z; its mean is the DDPM
    posterior mean x0_hat + (sigma_next / sigma)^2 (x - x0_hat)."""
    mean = posterior_mean(x, denoised, sigma, sigma_next)
    return add_noise(mean, math.sqrt(sigma**2 - sigma_next**2), generator)


PREDICTORS = {"reverse_diffusion": reverse_diffusion_step, "euler_maruyama": euler_maruyama_step}


@register("euler_maruyama", stochastic=True)
def euler_maruyama(denoiser, x, sigmas, *, cond=None, generator=None, callback=None) -> torch.Tensor:
    """Euler-Maruyama on the reverse VE SDE (Song et al. 2021, eq. 6) over the grid, then the denoising
    jump to sigma = 0."""

    def step(i, x, sigma, sigma_next):
        denoised = denoise(denoiser, x, sigma, cond)
        if sigma_next == 0.0:
            return denoised, denoised
        return euler_maruyama_step(x, denoised, sigma, sigma_next, generator), denoised

    return run_steps(x, sigmas, step, callback)


NORMS = ("sample", "batch")


def langevin_corrector(denoiser, x, sigma: float, snr: float, norms: str, cond, generator) -> torch.Tensor:
    """One corrector step (Song et al. 2021, Algorithm 4, the VE SDE's; Algorithm 5's alpha_i is 1 here):
    eps = 2 (r ||z|| / ||s||)^2, x <- x + eps s + sqrt(2 eps) z.

    norms='sample' takes ||z||, ||s|| per sample, as the algorithm is written, so a sample never depends
    on the rest of its batch. Because eps then grows where ||s|| is small, the chain's stationary law
    tilts from p towards p ||s||^2 (isotropic Gaussian: variance x (D + 2) / D). The effect fades with
    the dimension D: measured on a Gaussian, +10% variance at D = 64, +60% at D = 8, divergent at D = 2;
    negligible for images. norms='batch' averages both norms over the batch like the reference code
    (score_sde's LangevinCorrector): one eps per batch and no tilt (only ULA's ~r^2 variance excess),
    but rows are no longer independent of their batch."""
    score, _ = score_and_denoised(denoiser, x, sigma, cond)
    z = randn_like(x, generator)
    z_norm, s_norm = z.flatten(1).norm(dim=1), score.flatten(1).norm(dim=1)  # (B,) each, over (B, N)
    if norms == "batch":
        z_norm, s_norm = z_norm.mean().expand_as(z_norm), s_norm.mean().expand_as(s_norm)
    step_size = 2 * (snr * z_norm / s_norm.clamp_min(torch.finfo(x.dtype).tiny)) ** 2
    return langevin_update(x, score, step_size, z)


@register("pc", stochastic=True)
def pc(
    denoiser,
    x,
    sigmas,
    *,
    cond=None,
    generator=None,
    callback=None,
    predictor="reverse_diffusion",
    snr=0.16,
    corrector_steps=1,
    norms="sample",
) -> torch.Tensor:
    """Predictor-corrector sampling (Song et al. 2021, Algorithm 2: the VE SDE, which sigma form is): per
    interval a predictor step ('reverse_diffusion' or 'euler_maruyama') to sigma_next, then
    ``corrector_steps`` Langevin corrector steps at sigma_next with signal-to-noise ratio ``snr``
    (``norms``: see ``langevin_corrector``)."""
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {tuple(PREDICTORS)}, got {predictor!r}")
    if norms not in NORMS:
        raise ValueError(f"norms must be one of {NORMS}, got {norms!r}")
    predict = PREDICTORS[predictor]

    def step(i, x, sigma, sigma_next):
        denoised = denoise(denoiser, x, sigma, cond)
        if sigma_next == 0.0:
            return denoised, denoised
        x = predict(x, denoised, sigma, sigma_next, generator)
        for _ in range(corrector_steps):
            x = langevin_corrector(denoiser, x, sigma_next, snr, norms, cond, generator)
        return x, denoised

    return run_steps(x, sigmas, step, callback)

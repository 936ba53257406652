"""First- and second-order probability-flow samplers in sigma form (Karras et al. 2022, EDM, sec. 3).

With sigma(t) = t and s(t) = 1 the probability-flow ODE reads dx/dsigma = (x - D(x, sigma)) / sigma
(EDM eq. 3). 'euler' is EDM Algorithm 1, 'heun' Algorithm 2 with its stochastic churn, and
'euler_ancestral' k-diffusion's ancestral Euler step (the DDIM / DDPM posterior step of ``common``).
"""

from __future__ import annotations

import math

import torch

from .common import add_noise, denoise, derivative, euler_step, heun_step, run_steps, sample_ancestral
from .registry import register


@register("euler")
def euler(denoiser, x, sigmas, *, cond=None, generator=None, callback=None) -> torch.Tensor:
    """EDM Algorithm 1: x_{i+1} = x_i + (sigma_{i+1} - sigma_i) (x_i - D(x_i, sigma_i)) / sigma_i.
    ``generator`` is accepted for the shared signature and unused."""

    def step(i, x, sigma, sigma_next):
        denoised = denoise(denoiser, x, sigma, cond)
        return euler_step(x, derivative(x, denoised, sigma), sigma, sigma_next), denoised

    return run_steps(x, sigmas, step, callback)


@register("euler_ancestral", stochastic=True)
def euler_ancestral(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, eta=1.0) -> torch.Tensor:
    """Ancestral Euler (k-diffusion's ``sample_euler_ancestral``): an Euler step down to sigma_down, then
    fresh noise of std sigma_up (``common.ancestral_split``); eta = 1 samples the DDPM posterior."""
    return sample_ancestral(denoiser, x, sigmas, eta=eta, cond=cond, generator=generator, callback=callback)


def churn(
    x: torch.Tensor, sigma: float, gamma: float, s_noise: float, generator
) -> tuple[torch.Tensor, float]:
    """EDM Algorithm 2, lines 4-6: raise the noise level to sigma_hat = sigma (1 + gamma) by adding
    n ~ N(0, S_noise^2 I) scaled by sqrt(sigma_hat^2 - sigma^2). gamma = 0 returns x unchanged."""
    sigma_hat = sigma * (1.0 + gamma)
    return add_noise(x, s_noise * math.sqrt(sigma_hat**2 - sigma**2), generator), sigma_hat


@register("heun")
def heun(
    denoiser,
    x,
    sigmas,
    *,
    cond=None,
    generator=None,
    callback=None,
    S_churn=0.0,
    S_tmin=0.0,
    S_tmax=float("inf"),
    S_noise=1.0,
) -> torch.Tensor:
    """EDM Algorithm 2 (Heun's 2nd-order method with stochastic churn).

    gamma_i = min(S_churn / N, sqrt(2) - 1) for sigma_i in [S_tmin, S_tmax], else 0; with S_churn = 0
    (default) the sampler is deterministic and draws no noise. The final step to sigma = 0 is Euler.
    Costs 2N - 1 denoiser evaluations for N steps.
    """
    n_steps = len(sigmas) - 1
    gamma_max = min(S_churn / n_steps, math.sqrt(2.0) - 1.0)

    def step(i, x, sigma, sigma_next):
        gamma = gamma_max if S_tmin <= sigma <= S_tmax else 0.0
        x_hat, sigma_hat = churn(x, sigma, gamma, S_noise, generator)
        denoised = denoise(denoiser, x_hat, sigma_hat, cond)
        return heun_step(denoiser, x_hat, denoised, sigma_hat, sigma_next, cond), denoised

    return run_steps(x, sigmas, step, callback)

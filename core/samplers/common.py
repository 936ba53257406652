"""Step helpers shared by the samplers: the sigma loop, one denoiser call, Euler / Heun / ancestral steps.

Grid levels are handled as Python floats (``sigmas`` is a short descending 1-D tensor ending at 0), so
every coefficient is computed once in float64 and every tensor stays in ``x``'s dtype and device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import torch

from ..denoiser import Cond, to_d
from ..utils import Noise, batch_sigma, randn_like

StepFn = Callable[[int, torch.Tensor, float, float], tuple[torch.Tensor, torch.Tensor]]


def sigma_pairs(sigmas: torch.Tensor) -> Iterator[tuple[int, float, float]]:
    """(i, sigma_i, sigma_{i+1}) over a descending grid that must end at exactly 0."""
    levels = [float(s) for s in sigmas.reshape(-1).tolist()]
    if len(levels) < 2 or levels[-1] != 0.0:
        raise ValueError("sigmas must be a descending 1-D grid of >= 2 levels ending at 0")
    if any(b >= a for a, b in zip(levels, levels[1:])):
        raise ValueError("sigmas must be strictly decreasing")
    for i in range(len(levels) - 1):
        yield i, levels[i], levels[i + 1]


def run_steps(x: torch.Tensor, sigmas: torch.Tensor, step: StepFn, callback=None) -> torch.Tensor:
    """The loop every one-step sampler shares: ``x, x0_hat = step(i, x, sigma_i, sigma_{i+1})`` for each
    grid interval, then ``callback(dict(i, x, sigma, sigma_next, denoised))``."""
    for i, sigma, sigma_next in sigma_pairs(sigmas):
        x, denoised = step(i, x, sigma, sigma_next)
        report(callback, i, x, sigma, sigma_next, denoised)
    return x


def report(callback, i: int, x: torch.Tensor, sigma: float, sigma_next: float, denoised: torch.Tensor) -> None:
    """Send one step's state to ``callback`` (if any); sigma and sigma_next are floats."""
    if callback is not None:
        callback({"i": i, "x": x, "sigma": sigma, "sigma_next": sigma_next, "denoised": denoised})


def denoise(denoiser, x: torch.Tensor, sigma: float, cond: Cond = None) -> torch.Tensor:
    """x0_hat = D(x, sigma) with sigma broadcast to a (B,) tensor in x's dtype (never called at sigma = 0)."""
    return denoiser(x, batch_sigma(sigma, x), cond)


def derivative(x: torch.Tensor, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
    """PF-ODE slope d = dx/dsigma = (x - x0_hat) / sigma (EDM eq. 3 with sigma(t) = t)."""
    return to_d(x, batch_sigma(sigma, x), denoised)


def add_noise(x: torch.Tensor, std, generator: Noise = None) -> torch.Tensor:
    """x + std * n with n ~ N(0, I) from ``randn_like`` (per-sample generators or a noise function); ``std`` a float
    or a tensor broadcastable to x. A float std of 0 draws nothing."""
    if isinstance(std, float) and std == 0.0:
        return x
    return x + std * randn_like(x, generator)


def ancestral_split(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a step sigma -> sigma_next into a deterministic move to sigma_down and fresh noise sigma_up,
    sigma_down^2 + sigma_up^2 = sigma_next^2, with
    sigma_up = min(sigma_next, eta * sigma_next * sqrt(sigma^2 - sigma_next^2) / sigma).

    This is DDIM's sigma_t(eta) (Song et al. 2021, eq. 16) divided by sqrt(abar_{t-1}), i.e. in sigma form;
    eta = 1 is the DDPM posterior (Ho et al. 2020, eq. 7), eta = 0 the deterministic DDIM step."""
    if sigma_next == 0.0:
        return 0.0, 0.0
    sigma_up = min(sigma_next, eta * sigma_next * math.sqrt(sigma**2 - sigma_next**2) / sigma)
    return math.sqrt(sigma_next**2 - sigma_up**2), sigma_up


def ancestral_step(
    x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float, eta: float, generator: Noise
) -> torch.Tensor:
    """DDIM / ancestral step in sigma form (Song et al. 2021, eq. 12 divided by sqrt(abar_{t-1})):
    x_next = x0_hat + sigma_down * eps_hat + sigma_up * n, where eps_hat = (x - x0_hat) / sigma."""
    sigma_down, sigma_up = ancestral_split(sigma, sigma_next, eta)
    x_next = denoised + sigma_down * derivative(x, denoised, sigma)
    return add_noise(x_next, sigma_up, generator)


def sample_ancestral(denoiser, x, sigmas, *, eta, cond=None, generator=None, callback=None) -> torch.Tensor:
    """Run ``ancestral_step`` over the grid: the shared body of 'ddim' (eta = 0) and 'euler_ancestral'."""

    def step(i, x, sigma, sigma_next):
        denoised = denoise(denoiser, x, sigma, cond)
        return ancestral_step(x, denoised, sigma, sigma_next, eta, generator), denoised

    return run_steps(x, sigmas, step, callback)


def euler_step(x: torch.Tensor, d: torch.Tensor, sigma: float, sigma_next: float) -> torch.Tensor:
    """x_next = x + (sigma_next - sigma) d (EDM Algorithm 1, line 5)."""
    return x + (sigma_next - sigma) * d


def heun_step(
    denoiser, x: torch.Tensor, denoised: torch.Tensor, sigma: float, sigma_next: float, cond: Cond = None
) -> torch.Tensor:
    """EDM Algorithm 2, lines 7-11: an Euler predictor, then the trapezoidal corrector
    x_next = x + (sigma_next - sigma) (d + d') / 2 with d' evaluated at the prediction; the step to
    sigma_next = 0 stays Euler (D is never evaluated at sigma = 0)."""
    d = derivative(x, denoised, sigma)
    x_pred = euler_step(x, d, sigma, sigma_next)
    if sigma_next == 0.0:
        return x_pred
    d_next = derivative(x_pred, denoise(denoiser, x_pred, sigma_next, cond), sigma_next)
    return euler_step(x, (d + d_next) / 2, sigma, sigma_next)

"""The sampler benchmark's test problem: a Gaussian mixture with its exact denoiser, DDPM schedules,
a high-accuracy probability-flow ODE reference, and the three metrics.

The data are ``random_mixture(dim=32, components=10, std=0.3, spread=1.0)`` from ``core.analytic``:
means N(0, I) per coordinate (pairwise distances ~8), isotropic component stds 0.15-0.45, unequal
weights. The components never overlap (no true sample is nearer another mean), yet a coarse solver
can still carry a trajectory into the wrong basin while sigma is ~1-5, and the small stds make the
last steps near sigma_min stiff. Everything runs in float64 on the CPU.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from scipy.integrate import solve_ivp

from ..core.analytic import GaussianMixture, random_mixture
from ..core.schedules import DiscreteSchedule, linear_betas, scaled_linear_betas

# The two DDPM schedules, named as diffusers' ``beta_schedule`` with their (beta_start, beta_end).
SCHEDULES = {
    "linear": (linear_betas, 1e-4, 0.02),
    "scaled_linear": (scaled_linear_betas, 0.00085, 0.012),
}


@dataclass(frozen=True)
class Problem:
    """One schedule's instance: the mixture, the schedule, x_T = sigma_max n and the reference x_0."""

    mixture: GaussianMixture
    schedule_name: str
    schedule: DiscreteSchedule
    x_T: torch.Tensor  # (N, dim)
    reference: torch.Tensor  # (N, dim)
    reference_modes: torch.Tensor  # (N,)
    true_samples: torch.Tensor  # (N, dim), fresh draws from the mixture


def make_mixture(dim: int = 32, components: int = 10, std: float = 0.3, spread: float = 1.0) -> GaussianMixture:
    """The benchmark's data distribution (see the module docstring)."""
    return random_mixture(dim, components, rank=0, std=std, spread=spread, seed=0)


def make_schedule(name: str, num_steps: int = 1000) -> DiscreteSchedule:
    """DDPM's 'linear' (1e-4..0.02) or Latent Diffusion's 'scaled_linear' (0.00085..0.012), T = 1000."""
    betas_fn, start, end = SCHEDULES[name]
    return DiscreteSchedule.from_betas(betas_fn(num_steps, start, end))


def pf_ode_reference(mixture, x_T: torch.Tensor, sigma_max: float, rtol: float = 1e-9, sigma_end: float = 1e-4):
    """x(sigma = 0) of the PF ODE from x_T at sigma_max: DOP853 (adaptive 8th-order Runge-Kutta) on
    dx/dlambda = D(x, e^{-lambda}) - x for lambda = -log sigma up to sigma_end, then the last step
    (x + D) / 2, whose error O(sigma_end^4) ~ 1e-16 is below the tolerance."""
    shape = x_T.shape

    def rhs(lam, y):
        x = torch.from_numpy(y).reshape(shape)
        return (mixture(x, math.exp(-lam)) - x).reshape(-1).numpy()

    span = (-math.log(sigma_max), -math.log(sigma_end))
    sol = solve_ivp(rhs, span, x_T.reshape(-1).numpy(), method="DOP853", rtol=rtol, atol=rtol)
    if not sol.success:
        raise RuntimeError(f"reference ODE solve failed: {sol.message}")
    x_end = torch.from_numpy(sol.y[:, -1].copy()).reshape(shape)
    return 0.5 * (x_end + mixture(x_end, sigma_end))


def make_problem(schedule_name: str, n: int, seed: int = 0, mixture: GaussianMixture | None = None) -> Problem:
    """The instance for one schedule: x_T = sigma_max n with sigma_max the schedule's level at t = T - 1."""
    mixture = mixture if mixture is not None else make_mixture()
    schedule = make_schedule(schedule_name)
    g = torch.Generator().manual_seed(seed)
    x_T = schedule.sigma_max * torch.randn(n, mixture.dim, dtype=torch.float64, generator=g)
    reference = pf_ode_reference(mixture, x_T, schedule.sigma_max)
    true_samples, _ = mixture.sample(n, torch.Generator().manual_seed(seed + 1))
    modes = mixture.responsibilities(reference, 0.0).argmax(1)
    return Problem(mixture, schedule_name, schedule, x_T, reference, modes, true_samples)


# ---------------------------------------------------------------------------------------------------
# Metrics


def per_sample_error(x: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """||x - x_ref|| / sqrt(dim) per sample: (N,)."""
    return (x - reference).flatten(1).norm(dim=1) / math.sqrt(x[0].numel())


def mode_flip_share(mixture, x: torch.Tensor, reference_modes: torch.Tensor) -> float:
    """Share of samples whose most responsible component at sigma = 0 differs from the reference's."""
    return float((mixture.responsibilities(x, 0.0).argmax(1) != reference_modes).double().mean())


def sliced_w2(x: torch.Tensor, y: torch.Tensor, projections: int = 256, seed: int = 0) -> float:
    """Sliced Wasserstein-2 distance between two equal-size samples (Rabin et al. 2011):
    sqrt(mean over random unit directions u of W2^2(u.x, u.y)), each 1-D W2 from sorted projections."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(x[0].numel(), projections, dtype=torch.float64, generator=g)
    u = u / u.norm(dim=0, keepdim=True)  # (dim, P)
    px = (x.flatten(1).to(torch.float64) @ u).sort(0).values  # (N, P)
    py = (y.flatten(1).to(torch.float64) @ u).sort(0).values  # (N, P)
    return float(((px - py) ** 2).mean().sqrt())


def median_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    """Median per-sample error; inf if any sample diverged (NaN / inf)."""
    errors = per_sample_error(x, reference)
    return float(errors.median()) if bool(torch.isfinite(errors).all()) else math.inf


# ---------------------------------------------------------------------------------------------------
# NFE budget


def largest_steps_within(budget: int, calls_for) -> int | None:
    """The most steps whose denoiser calls fit ``budget``: bisection over ``calls_for(steps)`` (calls grow
    with steps; a raised exception counts as not fitting). None if not even one step fits."""
    lo, hi = 0, budget
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            fits = calls_for(mid) <= budget
        except Exception:  # e.g. fewer steps than a singlestep solver's order needs
            fits = False
        lo, hi = (mid, hi) if fits else (lo, mid - 1)
    return lo or None

"""Sampling grids: descending sigmas that always end at sigma = 0, so the last step lands on the data.

diffusers' default spacing stops short of t = 0 and leaves a final jump taken at first order, an error floor
for every high-order solver (compare the diffusers rows of BENCHMARKS.md); here every grid ends with an
explicit 0 and a sampler decides how to take that last step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .schedules import DiscreteSchedule, Schedule, alpha_bar_to_sigma
from .utils import lookup


def _append_zero(sigmas: torch.Tensor) -> torch.Tensor:
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM's grid sigma_i = (smax^(1/rho) + i/(n-1) (smin^(1/rho) - smax^(1/rho)))^rho (Karras et al. 2022,
    eq. 5), n levels plus the final 0: shape (n + 1,)."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return _append_zero((hi + ramp * (lo - hi)) ** rho)


def logsnr_uniform_sigmas(n: int, sigma_min: float, sigma_max: float) -> torch.Tensor:
    """Levels uniform in logSNR = -2 log sigma (DPM-Solver's 'logSNR' spacing, Lu et al. 2022), plus 0."""
    return _append_zero(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, dtype=torch.float64).exp())


def time_uniform_sigmas(schedule: Schedule, n: int, spacing: str = "linspace") -> torch.Tensor:
    """Levels uniform in the schedule's time, plus the final 0.

    For a discrete schedule of T levels, ``spacing`` picks the indices as in Lin et al. 2023, Table 2:
    'linspace' round(linspace(T-1, 0, n)); 'leading' (T//n) * [n-1, ..., 0] + 1 (DDIM / Stable Diffusion,
    never reaching the noisiest level); 'trailing' round(T - k T/n) - 1 for k = 0..n-1 (starts at T-1).
    A continuous schedule uses 'linspace' in t from 1 down to t(sigma_min).
    """
    if isinstance(schedule, DiscreteSchedule):
        T = schedule.num_steps
        if spacing == "linspace":
            idx = torch.linspace(T - 1, 0, n, dtype=torch.float64).round()
        elif spacing == "leading":
            idx = (torch.arange(n - 1, -1, -1, dtype=torch.float64) * (T // n)).round() + 1
        elif spacing == "trailing":
            idx = (T - torch.arange(n, dtype=torch.float64) * (T / n)).round() - 1
        else:
            raise ValueError(f"unknown spacing {spacing!r}; use 'linspace', 'leading' or 'trailing'")
        return _append_zero(schedule.index_to_sigma(idx.clamp(0, T - 1)))
    if spacing != "linspace":
        raise ValueError(f"spacing {spacing!r} needs a discrete schedule; continuous ones use 'linspace'")
    t_min = float(schedule.t(torch.tensor(schedule.sigma_min, dtype=torch.float64)))
    return _append_zero(schedule.sigma(torch.linspace(1, t_min, n, dtype=torch.float64)))


def warped_logsnr_sigmas(schedule: Schedule, n: int) -> torch.Tensor:
    """n levels plus 0 with lambda = -log sigma warped by a Kumaraswamy CDF (Kumaraswamy 1980):
    lambda_i = lambda_max + (lambda_lo - lambda_max) (1 - (1 - u_i^a)^b), u_i = i / (n - 1), a = 0.75, b = 0.95,
    so steps are longest at high noise (a < 1). The grid stops early at lambda_lo = lambda_max + f (lambda_min
    - lambda_max), f = min(0.55 + 0.085 ln n, 1), a share of the schedule's logSNR range that grows with n: the
    samplers' last step sigma_lo -> 0 is then the 'gaussian' rule of samplers/exponential.py, exact once the
    posterior is one Gaussian. a = 1, b = 1, f = 1 is 'logsnr'; the rule is in the spirit of Align Your Steps
    (Sabour et al. 2024), but fixed once, not fitted per model.

    (0.55, 0.085, 0.75, 0.95) are rounded Nelder-Mead fits of the mean log median error of UniPC, DPM-Solver++(2M)
    and UniPC-3 (angle) at n = 5, 10, 20 on random_mixture(32, 10, std=0.3, seed=1) under the DDPM linear and
    scaled_linear schedules (exact denoiser), validated on seed = 2 -- not on the benchmark's seed-0 mixture.
    """
    lam_max, lam_min = -math.log(schedule.sigma_max), -math.log(schedule.sigma_min)
    lam_lo = lam_max + min(0.55 + 0.085 * math.log(n), 1.0) * (lam_min - lam_max)
    u = torch.linspace(0, 1, n, dtype=torch.float64)
    warp = 1 - (1 - u**0.75) ** 0.95
    return _append_zero(torch.exp(-(lam_max + (lam_lo - lam_max) * warp)))


def betas_to_sigmas(betas) -> torch.Tensor:
    """The grid of an explicit few-step schedule beta_1 .. beta_N, the form WaveGrad gives its 6-iteration schedule
    in (Chen et al. 2021, sec. 4; lmnt-com/wavegrad inference.py): abar_n = prod_{i<=n} (1 - beta_i) (Ho et al.
    2020, eq. 4), sigma_n = sqrt(1 / abar_n - 1), descending, plus the final 0: shape (N + 1,), float64. The DDPM
    sampler over it is their N-step chain (Ho et al. 2020, Algorithm 2); any sampler may run on it."""
    betas = torch.as_tensor(betas, dtype=torch.float64)
    if betas.ndim != 1 or len(betas) == 0 or not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError(f"betas must be a non-empty 1-D sequence of numbers in (0, 1), got {betas.tolist()}")
    return _append_zero(alpha_bar_to_sigma(torch.cumprod(1 - betas, 0)).flip(0))


GRIDS: dict[str, Callable[[Schedule, int], torch.Tensor]] = {
    "linspace": lambda s, n: time_uniform_sigmas(s, n, "linspace"),
    "leading": lambda s, n: time_uniform_sigmas(s, n, "leading"),
    "trailing": lambda s, n: time_uniform_sigmas(s, n, "trailing"),
    "karras": lambda s, n: karras_sigmas(n, s.sigma_min, s.sigma_max),
    "logsnr": lambda s, n: logsnr_uniform_sigmas(n, s.sigma_min, s.sigma_max),
    "warped_logsnr": warped_logsnr_sigmas,
}


def sampling_sigmas(schedule: Schedule, steps: int, spacing: str = "karras") -> torch.Tensor:
    """``steps`` descending noise levels for ``schedule`` plus the final 0: shape (steps + 1,), float64.

    ``spacing`` is one of ``GRIDS``: 'linspace' / 'leading' / 'trailing' (uniform in time), 'karras'
    (EDM, rho = 7) or 'logsnr' (uniform in logSNR), the last two between the schedule's sigma_min and sigma_max,
    or 'warped_logsnr' (``warped_logsnr_sigmas``: logSNR warped, stopping above sigma_min at few steps).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return lookup(GRIDS, spacing, "spacing")(schedule, steps)

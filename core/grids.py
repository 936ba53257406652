"""Sampling grids: descending sigmas that always end at sigma = 0, so the last step lands on the data.

diffusers' default spacing stops short of t = 0 and leaves a final jump taken at first order
(DESIGN.md); here every grid ends with an explicit 0 and a sampler decides how to take that last step.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .schedules import DiscreteSchedule, Schedule
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


GRIDS: dict[str, Callable[[Schedule, int], torch.Tensor]] = {
    "linspace": lambda s, n: time_uniform_sigmas(s, n, "linspace"),
    "leading": lambda s, n: time_uniform_sigmas(s, n, "leading"),
    "trailing": lambda s, n: time_uniform_sigmas(s, n, "trailing"),
    "karras": lambda s, n: karras_sigmas(n, s.sigma_min, s.sigma_max),
    "logsnr": lambda s, n: logsnr_uniform_sigmas(n, s.sigma_min, s.sigma_max),
}


def sampling_sigmas(schedule: Schedule, steps: int, spacing: str = "karras") -> torch.Tensor:
    """``steps`` descending noise levels for ``schedule`` plus the final 0: shape (steps + 1,), float64.

    ``spacing`` is one of ``GRIDS``: 'linspace' / 'leading' / 'trailing' (uniform in time), 'karras'
    (EDM, rho = 7) or 'logsnr' (uniform in logSNR), the last two between the schedule's sigma_min and sigma_max.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return lookup(GRIDS, spacing, "spacing")(schedule, steps)

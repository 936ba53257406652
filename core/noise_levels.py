"""Training-time noise-level distributions: which sigma each training example is noised to.

Each distribution is a small frozen dataclass with

    sample(batch_size, generator=None, device="cpu", dtype=torch.float32) -> sigma   (B,)

``generator`` is None, one ``torch.Generator`` or a list with one per sample, exactly as in
``polydiff.core.utils.randn_like``: with a list, sigma_i depends only on generator[i], and each
sample draws its randomness in the same order whatever the batch it is in. Uniforms and normals are
drawn in float64 and the result cast to ``dtype`` at the end, so float32 training never sees a
uniform rounded up to 1 (which would give sigma = 0 or an out-of-range level).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from .schedules import DiscreteSchedule, Schedule, alpha_bar_to_sigma
from .utils import Generator, lookup, rand_like_batch, randn_like


class NoiseLevels(Protocol):
    """A distribution over training noise levels sigma."""

    def sample(
        self, batch_size: int, generator: Generator = None, device: torch.device | str = "cpu", dtype=torch.float32
    ) -> torch.Tensor: ...


def _uniform(batch_size: int, generator: Generator, device) -> torch.Tensor:
    """U[0, 1) in float64, one per sample, per-sample generators allowed: (B,)."""
    return rand_like_batch(torch.empty(batch_size, dtype=torch.float64, device=device), generator)


def _normal(batch_size: int, generator: Generator, device) -> torch.Tensor:
    """N(0, 1) in float64, one per sample, per-sample generators allowed: (B,)."""
    return randn_like(torch.empty(batch_size, dtype=torch.float64, device=device), generator)


@dataclass(frozen=True)
class DiscreteUniform:
    """t ~ Uniform{1, ..., T} over a discrete schedule's levels (Ho et al. 2020, Algorithm 1).

    Level index i = t - 1 in 0..T-1 gives sigma = schedule.sigmas[i].
    """

    schedule: DiscreteSchedule

    def __post_init__(self):
        if not isinstance(self.schedule, DiscreteSchedule):
            raise TypeError(f"schedule: DiscreteUniform needs a DiscreteSchedule, got {type(self.schedule).__name__}")

    def sample_indices(self, batch_size: int, generator: Generator = None, device="cpu") -> torch.Tensor:
        """Level indices i ~ Uniform{0, ..., T-1}: (B,) long."""
        T = self.schedule.num_steps
        return (_uniform(batch_size, generator, device) * T).floor().long().clamp(max=T - 1)

    def sample(self, batch_size: int, generator: Generator = None, device="cpu", dtype=torch.float32):
        index = self.sample_indices(batch_size, generator, device)
        return self.schedule.sigmas.to(device)[index].to(dtype)


@dataclass(frozen=True)
class ContinuousUniform:
    """t ~ U[t_min, 1], sigma = sigma(t), for any schedule (Song et al. 2021, eq. 7; Kingma et al. 2021, VDM).

    ``t_min`` keeps sigma away from 0 where SNR weights blow up (Song et al. use 1e-5 for the VP SDE).
    """

    schedule: Schedule
    t_min: float = field(default=1e-5, metadata={"doc": "smallest t drawn (keeps sigma away from 0)", "ge": 0, "lt": 1})

    def __post_init__(self):
        if not 0.0 <= self.t_min < 1.0:
            raise ValueError(f"t_min must lie in [0, 1), got {self.t_min}")

    def sample(self, batch_size: int, generator: Generator = None, device="cpu", dtype=torch.float32):
        t = self.t_min + (1.0 - self.t_min) * _uniform(batch_size, generator, device)
        return self.schedule.sigma(t).to(dtype)


@dataclass(frozen=True)
class LogNormal:
    """ln sigma ~ N(P_mean, P_std^2) (Karras et al. 2022, EDM, sec. 5 / Table 1: P_mean = -1.2, P_std = 1.2)."""

    p_mean: float = field(default=-1.2, metadata={"doc": "mean of ln(sigma) (EDM's P_mean)"})
    p_std: float = field(default=1.2, metadata={"doc": "standard deviation of ln(sigma) (EDM's P_std)", "gt": 0})

    def __post_init__(self):
        if not self.p_std > 0:
            raise ValueError(f"p_std must be positive, got {self.p_std}")

    def sample(self, batch_size: int, generator: Generator = None, device="cpu", dtype=torch.float32):
        return (self.p_mean + self.p_std * _normal(batch_size, generator, device)).exp().to(dtype)


@dataclass(frozen=True)
class WaveGradUniform:
    """WaveGrad's continuous noise level (Chen et al. 2021, Algorithm 1): pick a level s ~ Uniform{1..S},
    then sqrt(abar) ~ U(l_{s-1}, l_s) with l_0 = 1, l_s = sqrt(prod_{i<=s} (1 - beta_i)); returned as
    sigma = sqrt((1 - abar) / abar), capped at the schedule's sigma_max (zero-terminal-SNR schedules).

    One uniform u serves both draws: u T = i + f splits into a level index i ~ Uniform{0..T-1} and an
    independent f ~ U[0, 1), and sqrt(abar) = l_{i+1} + f (l_i - l_{i+1}) never reaches l_0 = 1 (sigma > 0).
    """

    schedule: DiscreteSchedule

    def __post_init__(self):
        if not isinstance(self.schedule, DiscreteSchedule):
            raise TypeError(f"schedule: WaveGradUniform needs a DiscreteSchedule, got {type(self.schedule).__name__}")

    def sample(self, batch_size: int, generator: Generator = None, device="cpu", dtype=torch.float32):
        T = self.schedule.num_steps
        levels = torch.cat([torch.ones(1, dtype=torch.float64), self.schedule.alphas_cumprod]).sqrt().to(device)
        u = _uniform(batch_size, generator, device) * T
        index = u.floor().long().clamp(max=T - 1)  # Ho's s - 1, in 0..T-1
        frac = u - index
        sqrt_alpha_bar = levels[index + 1] + frac * (levels[index] - levels[index + 1])
        sigma = alpha_bar_to_sigma(sqrt_alpha_bar**2).clamp(max=self.schedule.sigma_max)
        return sigma.to(dtype)


# name -> class. Fields with a "doc" are the options a recipe sets; ``schedule`` comes from the recipe's schedule.
NOISE_LEVELS: dict[str, Callable[..., NoiseLevels]] = {
    "discrete": DiscreteUniform,
    "continuous": ContinuousUniform,
    "lognormal": LogNormal,
    "wavegrad": WaveGradUniform,
}


def make_noise_levels(name: str, **kwargs) -> NoiseLevels:
    """Build a distribution from ``NOISE_LEVELS`` by name, e.g. ``make_noise_levels("lognormal", p_mean=-1.2)``."""
    return lookup(NOISE_LEVELS, name, "noise levels")(**kwargs)


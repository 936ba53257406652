"""Noise schedules in sigma form, with conversions among t, alpha_bar, sigma and logSNR.

A variance-preserving (VP) latent z_t = sqrt(abar) x0 + sqrt(1 - abar) n is the sigma-form point
x = z_t / sqrt(abar) = x0 + sigma n with sigma = sqrt((1 - abar) / abar) (Karras et al. 2022, sec. 2;
Kingma et al. 2021, VDM: logSNR = log(abar / (1 - abar)) = -2 log sigma).

Every schedule maps a time t in [0, 1] (0 = data, 1 = noise) to sigma and back. Discrete schedules
(T levels) map t = i / (T - 1) to their i-th level and interpolate log-sigma in between, like
k-diffusion's ``DiscreteSchedule``; ``Schedule.c_noise_index`` gives the index a DDPM network was trained on.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable

import torch

from .utils import lookup

# ---------------------------------------------------------------------------------------------------
# Conversions (all elementwise)


def sigma_to_alpha_bar(sigma: torch.Tensor) -> torch.Tensor:
    """abar = 1 / (1 + sigma^2)."""
    return 1.0 / (1.0 + sigma**2)


def alpha_bar_to_sigma(alpha_bar: torch.Tensor) -> torch.Tensor:
    """sigma = sqrt((1 - abar) / abar)."""
    return ((1.0 - alpha_bar) / alpha_bar).sqrt()


def sigma_to_logsnr(sigma: torch.Tensor) -> torch.Tensor:
    """logSNR = log(abar / (1 - abar)) = -2 log sigma (VDM, Kingma et al. 2021)."""
    return -2.0 * sigma.log()


def logsnr_to_sigma(logsnr: torch.Tensor) -> torch.Tensor:
    """sigma = exp(-logSNR / 2)."""
    return (-0.5 * logsnr).exp()


# ---------------------------------------------------------------------------------------------------
# Schedules


class Schedule(ABC):
    """A monotone map between time t in [0, 1] and noise level sigma (sigma form)."""

    sigma_min: float
    sigma_max: float

    @abstractmethod
    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        """sigma(t), increasing in t."""

    @abstractmethod
    def t(self, sigma: torch.Tensor) -> torch.Tensor:
        """Inverse of ``sigma``."""

    def alpha_bar(self, t: torch.Tensor) -> torch.Tensor:
        """Cumulative signal fraction abar(t) of the equivalent VP process."""
        return sigma_to_alpha_bar(self.sigma(t))

    def logsnr(self, t: torch.Tensor) -> torch.Tensor:
        """logSNR(t) = -2 log sigma(t)."""
        return sigma_to_logsnr(self.sigma(t))


class DiscreteSchedule(Schedule):
    """T discrete VP levels given by their cumulative products abar_1 > ... > abar_T (Ho et al. 2020).

    A zero-terminal-SNR schedule (abar_T = 0, Lin et al. 2023) has sigma_T = inf. Only that infinite level
    is replaced, by the geometric continuation of the two finite levels before it (and at least
    ``max_sigma``), so samplers start from a finite, pure-noise-dominated point and every level stays
    distinct in log-sigma (which ``sigma_to_index`` interpolates); finite levels are never capped.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, max_sigma: float = 1e4):
        abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        if abar.ndim != 1 or len(abar) < 2:
            raise ValueError("alphas_cumprod must be a 1-D tensor with at least 2 levels")
        if not bool((abar[1:] <= abar[:-1]).all()) or not bool((abar > 0).all() | (abar[-1] == 0)):
            raise ValueError("alphas_cumprod must decrease and stay positive (abar_T = 0 allowed)")
        self.alphas_cumprod = abar
        self.betas = 1.0 - abar / torch.cat([abar.new_ones(1), abar[:-1]])
        self.sigmas = _finite_terminal(alpha_bar_to_sigma(abar), max_sigma)
        self.log_sigmas = self.sigmas.log()
        self.num_steps = len(abar)
        self.sigma_min = float(self.sigmas[0])
        self.sigma_max = float(self.sigmas[-1])

    @classmethod
    def from_betas(cls, betas: torch.Tensor, **kwargs) -> DiscreteSchedule:
        """Build from per-step betas: abar_t = prod_{s<=t} (1 - beta_s)."""
        return cls(torch.cumprod(1.0 - torch.as_tensor(betas, dtype=torch.float64), 0), **kwargs)

    def index_to_sigma(self, index: torch.Tensor) -> torch.Tensor:
        """sigma at a (possibly fractional) level index in [0, T-1], log-linear in between."""
        index = index.to(torch.float64).clamp(0, self.num_steps - 1)
        lo = index.floor().long().clamp(max=self.num_steps - 2)
        w = index - lo
        log_sigma = (1 - w) * self.log_sigmas[lo] + w * self.log_sigmas[lo + 1]
        return log_sigma.exp()

    def sigma_to_index(self, sigma: torch.Tensor) -> torch.Tensor:
        """The fractional level index of sigma (inverse of ``index_to_sigma``), clamped to [0, T-1]."""
        shape, dtype = sigma.shape, sigma.dtype
        log_sigma = sigma.to(torch.float64).reshape(-1).clamp(min=1e-30).log()
        dists = log_sigma[:, None] - self.log_sigmas.to(log_sigma.device)[None, :]  # (N, T)
        lo = (dists >= 0).sum(1).sub(1).clamp(0, self.num_steps - 2)
        low, high = self.log_sigmas.to(log_sigma.device)[lo], self.log_sigmas.to(log_sigma.device)[lo + 1]
        gap = high - low
        w = torch.where(gap > 0, (log_sigma - low) / gap.clamp(min=1e-300), 0.0).clamp(0, 1)  # equal levels: w = 0
        return (lo + w).reshape(shape).to(dtype)

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.index_to_sigma(torch.as_tensor(t) * (self.num_steps - 1)).to(torch.as_tensor(t).dtype)

    def t(self, sigma: torch.Tensor) -> torch.Tensor:
        return self.sigma_to_index(sigma) / (self.num_steps - 1)


def _finite_terminal(sigmas: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """``sigmas`` with an infinite last level (abar_T = 0) replaced by max(max_sigma, s_{T-1}^2 / s_{T-2})."""
    if not math.isinf(float(sigmas[-1])):
        return sigmas
    before, last = sigmas[-3:-1].tolist() if len(sigmas) > 2 else (sigmas[0].item() / 2, sigmas[0].item())
    return torch.cat([sigmas[:-1], sigmas.new_tensor([max(max_sigma, last * last / before, 2 * last)])])


class ContinuousSchedule(Schedule):
    """A schedule given in closed form by sigma(t) and its inverse on t in [t_min, 1]."""

    def __init__(self, sigma_fn: Callable, t_fn: Callable, t_min: float = 0.0):
        self._sigma, self._t = sigma_fn, t_fn
        self.sigma_min = float(sigma_fn(torch.tensor(t_min, dtype=torch.float64)))
        self.sigma_max = float(sigma_fn(torch.tensor(1.0, dtype=torch.float64)))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self._sigma(torch.as_tensor(t))

    def t(self, sigma: torch.Tensor) -> torch.Tensor:
        return self._t(torch.as_tensor(sigma))


# ---------------------------------------------------------------------------------------------------
# Discrete beta schedules


DDPM_BETA_RANGE = (1e-4, 0.02)  # Ho et al. 2020, sec. 4, for T = 1000


def linear_betas(num_steps: int = 1000, beta_start: float | None = None, beta_end: float | None = None) -> torch.Tensor:
    """Betas linear from beta_1 = ``beta_start`` to beta_T = ``beta_end`` over T = ``num_steps`` levels.

    Without a range: DDPM's 1e-4 .. 0.02 (Ho et al. 2020, sec. 4), given for T = 1000 and scaled by 1000 / T for
    other T (improved DDPM's ``get_named_beta_schedule``), which keeps sum(beta) and so abar_T about the same. A
    range that is given is used as given, for any T: it names the betas themselves (WaveGrad trains on 1e-6 .. 0.01
    over T = 1000, Chen et al. 2021; lmnt-com/wavegrad params.py ``noise_schedule``)."""
    if (beta_start is None) != (beta_end is None):
        raise ValueError("give both beta_start and beta_end, or neither")
    if beta_start is None:
        scale = 1000 / num_steps
        beta_start, beta_end = scale * DDPM_BETA_RANGE[0], scale * DDPM_BETA_RANGE[1]
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


def scaled_linear_betas(num_steps: int = 1000, beta_start: float = 0.00085, beta_end: float = 0.012) -> torch.Tensor:
    """Latent Diffusion's 'scaled linear' betas: linear in sqrt(beta) (Rombach et al. 2022)."""
    return torch.linspace(beta_start**0.5, beta_end**0.5, num_steps, dtype=torch.float64) ** 2


def cosine_alphas_cumprod(num_steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Improved DDPM's cosine schedule, abar(t) = f(t)/f(0), f = cos^2(((t/T + s)/(1 + s)) pi/2),
    betas clipped at ``max_beta`` (Nichol & Dhariwal 2021, eq. 17)."""
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    betas = (1 - f[1:] / f[:-1]).clamp(max=max_beta)
    return torch.cumprod(1 - betas, 0)


def sigmoid_betas(num_steps: int = 1000, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> torch.Tensor:
    """Sigmoid schedule abar(t) from a scaled sigmoid (Jabri et al. 2022, 'Scalable Adaptive Computation',
    Algorithm 1), returned as betas clipped to [0, 0.999]."""
    t = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    v_start, v_end = torch.sigmoid(torch.tensor(start / tau)), torch.sigmoid(torch.tensor(end / tau))
    f = (-torch.sigmoid((t * (end - start) + start) / tau) + v_end) / (v_end - v_start)
    f = f.clamp(min=1e-9)
    return (1 - f[1:] / f[:-1]).clamp(0, 0.999)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(abar) so that abar_T = 0 while abar_1 is kept (Lin et al. 2023, Algorithm 1)."""
    sqrt_abar = torch.cumprod(1 - betas.to(torch.float64), 0).sqrt()
    first, last = sqrt_abar[0].clone(), sqrt_abar[-1].clone()
    sqrt_abar = (sqrt_abar - last) * first / (first - last)
    abar = sqrt_abar**2
    return 1 - torch.cat([abar[:1], abar[1:] / abar[:-1]])


# ---------------------------------------------------------------------------------------------------
# Continuous schedules


def vp_schedule(beta_min: float = 0.1, beta_max: float = 20.0, t_min: float = 1e-3) -> ContinuousSchedule:
    """Continuous VP SDE (Song et al. 2021, eq. 33): abar(t) = exp(-beta_min t - (beta_max - beta_min) t^2 / 2)."""
    d = beta_max - beta_min

    def sigma(t):
        return torch.expm1(beta_min * t + 0.5 * d * t**2).sqrt()

    def t_of(sigma):
        log1p = torch.log1p(sigma**2)  # = beta_min t + d t^2 / 2
        return (-beta_min + (beta_min**2 + 2 * d * log1p).sqrt()) / d

    return ContinuousSchedule(sigma, t_of, t_min)


def ve_schedule(sigma_min: float = 0.01, sigma_max: float = 50.0) -> ContinuousSchedule:
    """Continuous VE SDE (Song et al. 2021, eq. 31): sigma(t) = sigma_min (sigma_max / sigma_min)^t."""
    ratio = math.log(sigma_max / sigma_min)
    return ContinuousSchedule(lambda t: sigma_min * (ratio * t).exp(), lambda s: (s / sigma_min).log() / ratio)


def shifted_cosine_schedule(
    resolution: int = 64, base_resolution: int = 64, logsnr_min: float = -15.0, logsnr_max: float = 15.0
) -> ContinuousSchedule:
    """Cosine logSNR shifted for resolution (Hoogeboom et al. 2023, 'simple diffusion', sec. 3.1):
    logSNR(t) = -2 log tan(pi t / 2) + 2 log(base_resolution / resolution), with t clipped to the logSNR range."""
    shift = 2 * math.log(base_resolution / resolution)
    t_lo = math.atan(math.exp(-0.5 * (logsnr_max - shift))) * 2 / math.pi
    t_hi = math.atan(math.exp(-0.5 * (logsnr_min - shift))) * 2 / math.pi

    def sigma(t):
        tt = t_lo + t * (t_hi - t_lo)
        return logsnr_to_sigma(-2 * torch.tan(math.pi * tt / 2).log() + shift)

    def t_of(s):
        tt = torch.atan(s * math.exp(shift / 2)) * 2 / math.pi
        return (tt - t_lo) / (t_hi - t_lo)

    return ContinuousSchedule(sigma, t_of)


def edm_schedule(sigma_min: float = 0.002, sigma_max: float = 80.0) -> ContinuousSchedule:
    """EDM's sigma(t) = t over [sigma_min, sigma_max], rescaled to t in [0, 1] (Karras et al. 2022)."""
    span = sigma_max - sigma_min
    return ContinuousSchedule(lambda t: sigma_min + span * t, lambda s: (s - sigma_min) / span)


# ---------------------------------------------------------------------------------------------------
# Registry


def _discrete(betas_fn):
    def build(num_steps: int = 1000, zero_terminal_snr: bool = False, **kwargs) -> DiscreteSchedule:
        betas = betas_fn(num_steps, **kwargs)
        if zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        return DiscreteSchedule.from_betas(betas)

    build.__doc__ = f"Discrete VP schedule from ``{betas_fn.__name__}`` (optionally zero terminal SNR)."
    return build


def _cosine_betas(num_steps: int = 1000, **kwargs) -> torch.Tensor:
    abar = cosine_alphas_cumprod(num_steps, **kwargs)
    return 1 - torch.cat([abar[:1], abar[1:] / abar[:-1]])


_DISCRETE: dict[str, Callable[..., DiscreteSchedule]] = {
    "linear": _discrete(linear_betas),
    "scaled_linear": _discrete(scaled_linear_betas),
    "cosine": _discrete(_cosine_betas),
    "sigmoid": _discrete(sigmoid_betas),
}
SCHEDULES: dict[str, Callable[..., Schedule]] = {
    **_DISCRETE,
    "vp": vp_schedule,
    "ve": ve_schedule,
    "edm": edm_schedule,
    "shifted_cosine": shifted_cosine_schedule,
}
DISCRETE_SCHEDULES = frozenset(_DISCRETE)  # the names whose schedules have T levels (num_steps, zero_terminal_snr)


def make_schedule(name: str, **kwargs) -> Schedule:
    """Build a schedule from ``SCHEDULES`` by name, e.g. ``make_schedule("cosine", num_steps=1000)``."""
    return lookup(SCHEDULES, name, "schedule")(**kwargs)

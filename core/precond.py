"""Parameterizations: the one place that turns a backbone F(x_in, c_noise, cond) into a denoiser D.

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))      (Karras et al. 2022, eq. 7)

eps, x0 and v prediction of a variance-preserving model are EDM preconditioning with sigma_data = 1
and particular (c_skip, c_out); c_in = 1 / sqrt(1 + sigma^2) turns sigma form back into the VP latent
z = sqrt(abar) x. Table 1 of EDM gives eps (VP) and EDM; v (Salimans & Ho 2022, eq. 10 in sigma form):
x0 = abar x - sqrt(1 - abar) v  ->  c_skip = 1 / (1 + sigma^2), c_out = -sigma / sqrt(1 + sigma^2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .conditioning import with_null_defaults
from .denoiser import Cond
from .schedules import DiscreteSchedule
from .utils import append_dims, lookup

Coeffs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # c_skip, c_out, c_in, each (B,)


@dataclass(frozen=True)
class Parameterization:
    """What the backbone predicts, as EDM coefficients of sigma (each maps (B,) -> (B,))."""

    name: str
    coeffs: Callable[[torch.Tensor, float], Coeffs]


def _vp_c_in(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    return 1.0 / (sigma**2 + sigma_data**2).sqrt()


def _eps(sigma, sigma_data):
    return torch.ones_like(sigma), -sigma, _vp_c_in(sigma, 1.0)


def _x0(sigma, sigma_data):
    return torch.zeros_like(sigma), torch.ones_like(sigma), _vp_c_in(sigma, 1.0)


def _v(sigma, sigma_data):
    return 1.0 / (1.0 + sigma**2), -sigma / (1.0 + sigma**2).sqrt(), _vp_c_in(sigma, 1.0)


def _edm(sigma, sigma_data):
    total = sigma**2 + sigma_data**2
    return sigma_data**2 / total, sigma * sigma_data / total.sqrt(), 1.0 / total.sqrt()


PARAMETERIZATIONS: dict[str, Parameterization] = {
    p.name: p
    for p in (
        Parameterization("eps", _eps),
        Parameterization("x0", _x0),
        Parameterization("v", _v),
        Parameterization("edm", _edm),
    )
}

# ---------------------------------------------------------------------------------------------------
# Noise-level inputs for the backbone (c_noise). The backbone never sees the schedule itself.


def edm_c_noise(sigma: torch.Tensor) -> torch.Tensor:
    """EDM's c_noise = ln(sigma) / 4 (Table 1)."""
    return sigma.log() / 4


def discrete_c_noise(schedule: DiscreteSchedule) -> Callable[[torch.Tensor], torch.Tensor]:
    """The (fractional) DDPM time index 0..T-1 that a discrete-time network is trained on."""
    return schedule.sigma_to_index


def sqrt_alpha_bar_c_noise(sigma: torch.Tensor) -> torch.Tensor:
    """WaveGrad's noise-level input sqrt(abar) = 1 / sqrt(1 + sigma^2) (Chen et al. 2021, sec. 3)."""
    return (1.0 + sigma**2).rsqrt()


def logsnr_c_noise(sigma: torch.Tensor) -> torch.Tensor:
    """logSNR = -2 log sigma as the network input (VDM, simple diffusion)."""
    return -2.0 * sigma.log()


def _needs_discrete(schedule) -> DiscreteSchedule:
    if not isinstance(schedule, DiscreteSchedule):
        raise TypeError(f"c_noise 'discrete' needs a DiscreteSchedule, got {type(schedule).__name__}")
    return schedule


# name -> (schedule -> c_noise function): the noise inputs a recipe can choose.
C_NOISE: dict[str, Callable[..., Callable[[torch.Tensor], torch.Tensor]]] = {
    "edm": lambda schedule: edm_c_noise,
    "discrete": lambda schedule: discrete_c_noise(_needs_discrete(schedule)),
    "sqrt_alpha_bar": lambda schedule: sqrt_alpha_bar_c_noise,
    "logsnr": lambda schedule: logsnr_c_noise,
}


class Precond(nn.Module):
    """Wrap a backbone ``F(x_in, c_noise, cond) -> out`` into a denoiser ``D(x, sigma, cond) -> x0_hat``.

    ``learned_variance=True``: the backbone returns 2C channels along dim 1; the first C are the
    parameterized mean, the last C the improved-DDPM interpolation v (Nichol & Dhariwal 2021, eq. 15),
    mapped from [-1, 1] to [0, 1] as in their code.
    """

    def __init__(
        self,
        backbone: nn.Module,
        parameterization: str = "eps",
        c_noise: Callable[[torch.Tensor], torch.Tensor] = edm_c_noise,
        sigma_data: float = 1.0,
        learned_variance: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.parameterization = lookup(PARAMETERIZATIONS, parameterization, "parameterization")
        self.c_noise = c_noise
        self.sigma_data = float(sigma_data)
        self.learned_variance = learned_variance

    def coefficients(self, sigma: torch.Tensor, ndim: int) -> Coeffs:
        """(c_skip, c_out, c_in) broadcast to ``ndim`` dims."""
        return tuple(append_dims(c, ndim) for c in self.parameterization.coeffs(sigma, self.sigma_data))

    def raw(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond = None) -> torch.Tensor:
        """The backbone's own output F(c_in x, c_noise(sigma), cond). A condition the backbone can go without
        (a key of its ``null_cond``) that ``cond`` lacks is given its null value, the one the backbone was
        trained on for dropped conditions, so an "unconditional" call never reaches an untrained path."""
        _, _, c_in = self.coefficients(sigma, x.ndim)
        cond = with_null_defaults(cond, getattr(self.backbone, "null_cond", {}), x.shape[0], x.device)
        return self.backbone(c_in * x, self.c_noise(sigma), cond)

    def split_output(self, out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Backbone output -> (parameterized mean, v in [0, 1] or None)."""
        if not self.learned_variance:
            return out, None
        mean, v = out.chunk(2, dim=1)
        return mean, (v + 1) / 2

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond = None) -> torch.Tensor:
        return self.denoise_with_variance(x, sigma, cond)[0]

    def denoise_with_variance(self, x: torch.Tensor, sigma: torch.Tensor, cond: Cond = None):
        """(x0_hat, v) with v None unless the backbone learns the variance."""
        c_skip, c_out, _ = self.coefficients(sigma, x.ndim)
        out, v = self.split_output(self.raw(x, sigma, cond))
        return c_skip * x + c_out * out.to(x.dtype), v

    def target(self, x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """What F should output for D(x) = x0: (x0 - c_skip x) / c_out (EDM eq. 8). The F-space error
        times c_out equals the x0-space error, so losses can be taken where the network lives."""
        c_skip, c_out, _ = self.coefficients(sigma, x.ndim)
        return (x0 - c_skip * x) / c_out


# ---------------------------------------------------------------------------------------------------
# Conversions between predictions, in sigma form (x = x0 + sigma eps).


def eps_to_x0(eps: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x0 = x - sigma eps."""
    return x - append_dims(sigma, x.ndim) * eps


def x0_to_eps(x0: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """eps = (x - x0) / sigma."""
    return (x - x0) / append_dims(sigma, x.ndim)


def x0_to_v(x0: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """v = alpha eps - sigma_vp x0 with alpha = 1/sqrt(1+sigma^2), sigma_vp = sigma alpha (Salimans & Ho 2022)."""
    s = append_dims(sigma, x.ndim)
    alpha = (1 + s**2).rsqrt()
    return alpha * (x - x0) / s - s * alpha * x0


def v_to_x0(v: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x0 = alpha z - sigma_vp v with z = alpha x, i.e. x0 = x / (1 + sigma^2) - sigma v / sqrt(1 + sigma^2)."""
    s = append_dims(sigma, x.ndim)
    return x / (1 + s**2) - s * v / (1 + s**2).sqrt()


def x0_to_score(x0: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Tweedie: grad_x log p_sigma(x) = (x0_hat - x) / sigma^2 (Efron 2011; EDM eq. 3)."""
    return (x0 - x) / append_dims(sigma, x.ndim) ** 2


def score_to_x0(score: torch.Tensor, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x0 = x + sigma^2 score."""
    return x + append_dims(sigma, x.ndim) ** 2 * score


def vp_latent(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The VP latent z = sqrt(abar) x = x / sqrt(1 + sigma^2) of a sigma-form point."""
    return x * append_dims((1 + sigma**2).rsqrt(), x.ndim)


def sigma_form(z: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Inverse of ``vp_latent``: x = z sqrt(1 + sigma^2)."""
    return z * append_dims((1 + sigma**2).sqrt(), z.ndim)



"""DDIM (Song, Meng & Ermon 2021, 'Denoising Diffusion Implicit Models') in sigma form, and slerp.

Their eq. 12, x_{t-1} = sqrt(abar_{t-1}) x0_hat + sqrt(1 - abar_{t-1} - sigma_t^2) eps_hat + sigma_t n,
divided by sqrt(abar_{t-1}) becomes x_next = x0_hat + sigma_down eps_hat + sigma_up n in sigma form
(``common.ancestral_split``). With eta = 0 that is exactly the Euler step of the PF ODE in sigma
(x0_hat + sigma_next eps_hat = x + (sigma_next - sigma) d), with eta = 1 the DDPM posterior.
"""

from __future__ import annotations

import torch

from ..utils import append_dims
from .common import sample_ancestral
from .registry import register


@register("ddim")
def ddim(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, eta=0.0) -> torch.Tensor:
    """DDIM sampling (eq. 12) with sigma_t(eta) of eq. 16; deterministic for eta = 0 (the default),
    stochastic through ``generator`` for eta > 0."""
    return sample_ancestral(denoiser, x, sigmas, eta=eta, cond=cond, generator=generator, callback=callback)


def slerp(z0: torch.Tensor, z1: torch.Tensor, alpha) -> torch.Tensor:
    """Spherical interpolation between noise tensors (DDIM sec. 4.3 / 5.4, after Shoemake 1985):
    z = sin((1 - alpha) theta) / sin(theta) z0 + sin(alpha theta) / sin(theta) z1,
    theta = arccos(<z0, z1> / (|z0| |z1|)) per sample.

    z0, z1: (B, *S) (B may be 1 and broadcast); alpha: a float or a (B,) / (M,) tensor, so
    ``slerp(a[None], b[None], torch.linspace(0, 1, M))`` gives an (M, *S) path. Falls back to linear
    interpolation where z0 and z1 are (anti)parallel (sin theta ~ 0).
    """
    alpha = torch.as_tensor(alpha, dtype=z0.dtype, device=z0.device)
    a, b = z0.flatten(1), z1.flatten(1)  # (B, N)
    cos = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))  # (B,)
    theta = cos.clamp(-1.0, 1.0).acos()
    sin = theta.sin()
    parallel = sin.abs() < 1e-6
    safe_sin = torch.where(parallel, torch.ones_like(sin), sin)
    w0 = torch.where(parallel, 1 - alpha, ((1 - alpha) * theta).sin() / safe_sin)
    w1 = torch.where(parallel, alpha, (alpha * theta).sin() / safe_sin)
    return append_dims(w0, z0.ndim) * z0 + append_dims(w1, z1.ndim) * z1

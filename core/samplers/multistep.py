"""Linear multistep samplers on the PF ODE dx/dsigma = d(x, sigma) = (x - D(x, sigma)) / sigma.

'lms' (k-diffusion's ``sample_lms``): x_{i+1} = x_i + sum_j c_ij d_{i-j}, with c_ij the integral over
[sigma_i, sigma_{i+1}] of the Lagrange basis polynomial through the last ``order`` levels, so the
coefficients follow the actual (non-uniform) grid; integrals by Gauss-Legendre quadrature.

'plms' (PNDM's pseudo linear multistep, Liu et al. 2022, 'Pseudo Numerical Methods for Diffusion Models
on Manifolds'): e'_t = (55 e_t - 59 e_{t-delta} + 37 e_{t-2 delta} - 9 e_{t-3 delta}) / 24 combines the last
eps predictions with equal-step Adams-Bashforth weights, and x_{t+delta} = phi(x_t, e'_t, t, t + delta)
with phi the DDIM transfer.
In sigma form eps_hat = d and the DDIM transfer is exactly the Euler step, so
x_{i+1} = x_i + (sigma_{i+1} - sigma_i) sum_j b_j d_{i-j}. Warm-up: a Heun step first (the 'pseudo
improved Euler' of diffusers' PLMS), then AB2, AB3 until ``order`` derivatives exist. Because the
b_j assume equal steps, PLMS is second order on a smoothly graded grid such as Karras'.
Neither evaluates D at sigma = 0: the last step extrapolates the stored derivatives.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch

from .common import denoise, derivative, heun_step, run_steps
from .registry import register

# Adams-Bashforth coefficients b_j for equal steps, newest derivative first (Butcher 2016, sec. 24).
ADAMS_BASHFORTH = {
    1: (1.0,),
    2: (3 / 2, -1 / 2),
    3: (23 / 12, -16 / 12, 5 / 12),
    4: (55 / 24, -59 / 24, 37 / 24, -9 / 24),
}


@functools.lru_cache(maxsize=None)
def gauss_legendre(n: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """n-point Gauss-Legendre nodes and weights on [-1, 1] (Golub & Welsch 1969): the nodes are the
    eigenvalues of the symmetric Jacobi matrix with off-diagonal k / sqrt(4k^2 - 1), the weights twice the
    squared first components of its eigenvectors. Exact for polynomials of degree <= 2n - 1."""
    k = torch.arange(1, n, dtype=torch.float64)
    off = k / (4 * k**2 - 1).sqrt()  # (n - 1,)
    nodes, vectors = torch.linalg.eigh(torch.diag(off, 1) + torch.diag(off, -1))  # (n,), (n, n)
    return tuple(nodes.tolist()), tuple((2 * vectors[0] ** 2).tolist())


def lagrange_integral(nodes: Sequence[float], j: int, a: float, b: float) -> float:
    """int_a^b l_j(s) ds, l_j(s) = prod_{k != j} (s - s_k) / (s_j - s_k) the Lagrange basis polynomial
    through ``nodes`` (degree len(nodes) - 1, integrated exactly by ceil(len(nodes) / 2) Gauss points)."""
    points, weights = gauss_legendre(max(1, (len(nodes) + 1) // 2))
    mid, half = (a + b) / 2, (b - a) / 2
    total = 0.0
    for t, w in zip(points, weights):
        s = mid + half * t
        total += w * math.prod((s - sk) / (nodes[j] - sk) for k, sk in enumerate(nodes) if k != j)
    return half * total


def lms_weights(nodes: Sequence[float], sigma_next: float) -> list[float]:
    """c_j = int_{sigma_i}^{sigma_next} l_j(s) ds over nodes (sigma_i, sigma_{i-1}, ...), newest first."""
    return [lagrange_integral(nodes, j, nodes[0], sigma_next) for j in range(len(nodes))]


def plms_weights(nodes: Sequence[float], sigma_next: float) -> list[float]:
    """(sigma_next - sigma_i) b_j with the equal-step Adams-Bashforth b_j of order len(nodes)."""
    return [(sigma_next - nodes[0]) * b for b in ADAMS_BASHFORTH[len(nodes)]]


def _check_order(order: int, highest: int) -> None:
    if not 1 <= order <= highest:
        raise ValueError(f"order must be in 1..{highest}, got {order}")


def _linear_multistep(
    denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    weights: Callable[[Sequence[float], float], list[float]],
    order: int,
    cond,
    callback,
    heun_warmup: bool = False,
) -> torch.Tensor:
    """x_{i+1} = x_i + sum_j w_j d_{i-j} over the last min(order, i + 1) derivatives (newest first);
    with ``heun_warmup`` the first step is a Heun step instead of Euler."""
    levels: list[float] = []  # sigma_{i-j}, newest first
    slopes: list[torch.Tensor] = []  # d_{i-j}, newest first

    def step(i, x, sigma, sigma_next):
        denoised = denoise(denoiser, x, sigma, cond)
        levels.insert(0, sigma)
        slopes.insert(0, derivative(x, denoised, sigma))
        del levels[order:], slopes[order:]
        if heun_warmup and i == 0:
            return heun_step(denoiser, x, denoised, sigma, sigma_next, cond), denoised
        x_next = x
        for w, d in zip(weights(levels, sigma_next), slopes):
            x_next = x_next + w * d
        return x_next, denoised

    return run_steps(x, sigmas, step, callback)


@register("lms")
def lms(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, order=4) -> torch.Tensor:
    """Linear multistep with grid-exact Lagrange coefficients (k-diffusion ``sample_lms``); the first
    order - 1 steps use the lower orders available. ``generator`` unused."""
    _check_order(order, 8)
    return _linear_multistep(denoiser, x, sigmas, lms_weights, order, cond, callback)


@register("plms")
def plms(denoiser, x, sigmas, *, cond=None, generator=None, callback=None, order=4) -> torch.Tensor:
    """PNDM's pseudo linear multistep (Liu et al. 2022, with phi = DDIM) in sigma form: a Heun
    warm-up step, then Adams-Bashforth of growing order up to ``order`` (<= 4). ``generator`` unused."""
    _check_order(order, 4)
    return _linear_multistep(denoiser, x, sigmas, plms_weights, order, cond, callback, heun_warmup=True)

"""Log-likelihood through the probability-flow ODE (Song et al. 2021, "Score-based generative modeling
through SDEs", sec. 4.3 and app. D.2), with FFJORD's instantaneous change of variables (Grathwohl et
al. 2019, eq. 4; Chen et al. 2018, theorem 1).

In sigma form the PF-ODE is dx/dsigma = f(x, sigma) = (x - D(x, sigma)) / sigma (EDM eq. 3), and along a
trajectory d log p_sigma(x(sigma)) / dsigma = -div f. Integrating both from sigma_min to sigma_max,

    log p_{sigma_min}(x) = log p_{sigma_max}(x(sigma_max)) + int_{sigma_min}^{sigma_max} div f(x(s), s) ds,

with the prior log N(x; 0, sigma_max^2 I) standing in for log p_{sigma_max} (exact as sigma_max -> inf).
div f = (N - tr dD/dx) / sigma is computed exactly (N vector-Jacobian products: small N only) or by
Hutchinson's estimator E_v[v^T (df/dx) v] with Rademacher or Gaussian probes drawn once per solve, so
the ODE stays deterministic for the adaptive solver (FFJORD, sec. 3.1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .denoiser import Cond, Denoiser, to_d
from .ode import rk45
from .utils import Generator, randn_like

VectorField = Callable[[torch.Tensor], torch.Tensor]


def _quadratic_forms(fn: VectorField, x: torch.Tensor, probes: torch.Tensor):
    """f(x) and sum_m v_m^T (df/dx) v_m per sample, one vector-Jacobian product per probe v_m (B, *S)."""
    with torch.enable_grad():
        x_in = x.detach().requires_grad_(True)
        fx = fn(x_in)
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for v in probes:
            (vjp,) = torch.autograd.grad(fx, x_in, grad_outputs=v, retain_graph=True)  # v^T J: (B, *S)
            total = total + (vjp * v).flatten(1).sum(1)  # (B, N) -> (B,)
    return fx.detach(), total.detach()


def exact_divergence(fn: VectorField, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f(x) and div f(x) = sum_i e_i^T (df/dx) e_i per sample, with N backward passes (N = numel per sample)."""
    n = x[0].numel()
    basis = torch.eye(n, dtype=x.dtype, device=x.device).reshape(n, 1, *x.shape[1:])  # (N, 1, *S)
    return _quadratic_forms(fn, x, basis.expand(n, *x.shape))  # probes (N, B, *S)


def draw_probes(x: torch.Tensor, num: int = 1, kind: str = "rademacher", generator: Generator = None):
    """``num`` Hutchinson probes shaped like x: (num, B, *S), with E[v v^T] = I.

    kind 'rademacher' (entries +-1, the lower-variance choice) or 'gaussian'; ``generator`` may hold
    one generator per sample, as in ``core.utils.randn_like``.
    """
    if kind not in ("rademacher", "gaussian"):
        raise ValueError(f"unknown probe kind {kind!r}; use 'rademacher' or 'gaussian'")
    probes = torch.stack([randn_like(x, generator) for _ in range(num)])  # (num, B, *S)
    return probes.sign() if kind == "rademacher" else probes


def hutchinson_divergence(fn: VectorField, x: torch.Tensor, probes: torch.Tensor):
    """f(x) and the unbiased estimate mean_m v_m^T (df/dx) v_m of div f (Hutchinson 1990); probes (M, B, *S)."""
    fx, total = _quadratic_forms(fn, x, probes)
    return fx, total / probes.shape[0]


def gaussian_log_prob(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """log N(x; 0, sigma^2 I) per sample: -|x|^2 / (2 sigma^2) - N/2 log(2 pi sigma^2), (B, *S) -> (B,)."""
    n = x[0].numel()
    return -0.5 * x.flatten(1).square().sum(1) / sigma**2 - 0.5 * n * math.log(2 * math.pi * sigma**2)


def nll_bits_per_dim(log_likelihood: torch.Tensor, dim: int) -> torch.Tensor:
    """Continuous bits/dim of a per-sample log-likelihood (B,) in nats: -log p / (N ln 2). (``vlb.bits_per_dim``
    averages per-element nats instead.)"""
    return -log_likelihood / (dim * math.log(2))


def discrete_bits_per_dim(log_likelihood: torch.Tensor, dim: int, bin_width: float = 2 / 255) -> torch.Tensor:
    """Bits/dim of the discrete data under uniform dequantization (Theis et al. 2016, "A note on the
    evaluation of generative models", sec. 3.1): P(bin) >= p(x) bin_width^N, so

        bpd = (-log p(x) / N - log(bin_width)) / ln 2.

    8-bit data k in {0..255} scaled to [-1, 1] by x = 2k/255 - 1 has bin_width = 2/255 and the offset
    -log(2/255) = log 127.5, i.e. +6.994 bits. (Song et al. 2021 dequantize as (k + u)/256 before
    scaling, bin_width = 2/256 and exactly +7 bits.) ``log_likelihood`` should be of dequantized data
    x + u, u ~ U(-bin_width/2, bin_width/2)^N, for the bound to hold in expectation.
    """
    return nll_bits_per_dim(log_likelihood, dim) - math.log2(bin_width)


@dataclass(frozen=True)
class Likelihood:
    """Result of ``ode_log_likelihood``; all per-sample (B,) except ``latent`` (B, *S) and ``nfe``."""

    log_likelihood: torch.Tensor  # log p_{sigma_min}(x) in nats
    bits_per_dim: torch.Tensor  # -log_likelihood / (N ln 2)
    prior_log_prob: torch.Tensor  # log prior(x(sigma_max))
    delta_log_prob: torch.Tensor  # int_{sigma_min}^{sigma_max} div f dsigma
    latent: torch.Tensor  # x(sigma_max)
    nfe: int  # batched denoiser evaluations (each with its divergence)


def ode_log_likelihood(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigma_min: float,
    sigma_max: float,
    *,
    cond: Cond = None,
    divergence: str = "exact",
    probe: str = "rademacher",
    num_probes: int = 1,
    generator: Generator = None,
    prior_log_prob: Callable[[torch.Tensor], torch.Tensor] | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 10_000,
) -> Likelihood:
    """log p_{sigma_min}(x) by the probability-flow ODE (Song et al. 2021, app. D.2; module docstring).

    x: (B, *S) data (dequantized for discrete data); works in x's dtype (pass float64 for tight
    tolerances). ``divergence`` 'exact' (N backward passes per evaluation) or 'hutchinson' (``num_probes``
    probes of kind ``probe`` from ``generator``, fixed over the solve). ``prior_log_prob(x_T) -> (B,)``
    replaces the default log N(x_T; 0, sigma_max^2 I). ``rtol`` / ``atol`` go to the RK45 solver.
    """
    if divergence not in ("exact", "hutchinson"):
        raise ValueError(f"unknown divergence {divergence!r}; use 'exact' or 'hutchinson'")
    shape, n = x.shape, x[0].numel()
    probes = draw_probes(x, num_probes, probe, generator) if divergence == "hutchinson" else None

    def dynamics(sigma: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        def drift(z: torch.Tensor) -> torch.Tensor:
            return to_d(z, sigma, denoiser(z, sigma, cond))

        z = state[:, :n].reshape(shape)  # (B, N + 1) -> (B, *S)
        fz, div = exact_divergence(drift, z) if probes is None else hutchinson_divergence(drift, z, probes)
        return torch.cat([fz.flatten(1), div[:, None]], 1)  # (B, N + 1)

    state0 = torch.cat([x.flatten(1), x.new_zeros(shape[0], 1)], 1)  # (B, N + 1): x and the running integral
    with torch.no_grad():
        solution = rk45(dynamics, state0, sigma_min, sigma_max, rtol=rtol, atol=atol, max_steps=max_steps)
    latent = solution.y[:, :n].reshape(shape)  # (B, *S)
    delta = solution.y[:, n]
    prior = prior_log_prob(latent) if prior_log_prob is not None else gaussian_log_prob(latent, sigma_max)
    log_likelihood = prior + delta
    return Likelihood(log_likelihood, nll_bits_per_dim(log_likelihood, n), prior, delta, latent, solution.nfe)

"""The variational bound of a discrete-time diffusion model, in bits per dimension.

    -log p(x0) <= L_T + sum_{t=2}^T L_{t-1} + L_0                                     (Ho et al. 2020, eq. 5)
    L_T     = KL(q(z_T | x0) || N(0, I))
    L_{t-1} = KL(q(z_{t-1} | z_t, x0) || p_theta(z_{t-1} | z_t))     p_theta = N(mu_theta, Sigma_theta)
    L_0     = -log p_theta(x0 | z_1)

each expectation over z_t ~ q(z_t | x0), in VP-latent terms (``polydiff.core.forward_process``). The
reverse mean is the posterior mean at the predicted x0, mu_theta = mu_tilde(z_t, D(x_t, sigma_t)); the
reverse variance is fixed (beta_tilde_t or beta_t, Ho et al. sec. 3.2) or learned (Nichol & Dhariwal 2021,
eq. 15). For 8-bit data scaled to [-1, 1], L_0 is the discretized Gaussian decoder (Ho et al. sec. 3.3);
for continuous data, the Gaussian density at x0, so the bound is comparable to an exact log-density.

Levels are indexed i = t - 1 in 0..T-1 as in ``DiscreteSchedule``: index 0 carries L_0, index i >= 1 the
KL L_{t-1}. Bits per dimension: the sum over data dimensions divided by D ln 2.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .denoiser import Cond, Denoiser
from .forward_process import VARIANCES, interpolate_log_variance, posterior_log_variances, q_marginal, q_posterior
from .noise_levels import DiscreteUniform
from .schedules import DiscreteSchedule, alpha_bar_to_sigma
from .utils import Generator, append_dims, randn_like

LN2 = math.log(2.0)


def bits_per_dim(nats: torch.Tensor) -> torch.Tensor:
    """Per-element nats (B, *S) -> bits per dimension (B,): mean over non-batch dims / ln 2."""
    return nats.flatten(1).mean(1) / LN2  # (B, D) -> (B,)


def normal_kl(mean1: torch.Tensor, log_var1: torch.Tensor, mean2: torch.Tensor, log_var2: torch.Tensor):
    """Elementwise KL(N(mean1, e^log_var1) || N(mean2, e^log_var2)) in nats (Ho et al. 2020, eq. 5 terms)."""
    return 0.5 * (log_var2 - log_var1 + (log_var1 - log_var2).exp() + (mean1 - mean2) ** 2 * (-log_var2).exp() - 1.0)


def gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """Elementwise log N(x; mean, e^log_var) in nats: the decoder for continuous data."""
    return -0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 * (-log_var).exp())


def _log_normal_mass(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log(Phi(b) - Phi(a)) for a < b, stably: mirror intervals to the lower tail, then
    log Phi(b) + log(1 - Phi(a) / Phi(b))."""
    upper = (a + b) > 0
    a, b = torch.where(upper, -b, a), torch.where(upper, -a, b)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return log_b + torch.log(-torch.expm1(log_a - log_b))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor, bins: int = 256
) -> torch.Tensor:
    """Elementwise log-probability of x's bin under N(mean, e^log_var) (Ho et al. 2020, eq. 13).

    Data are ``bins`` levels scaled to [-1, 1] (spacing 2 / (bins - 1)); the bin of x is
    [x - delta, x + delta] with delta = 1 / (bins - 1), widened to (-inf, ...] at -1 and [..., inf) at 1,
    so the probabilities of all bins sum to 1.
    """
    delta = 1.0 / (bins - 1)
    inv_std = (-0.5 * log_var).exp()
    lower = torch.where(x < -1 + delta, -math.inf, (x - delta - mean) * inv_std)
    upper = torch.where(x > 1 - delta, math.inf, (x + delta - mean) * inv_std)
    return _log_normal_mass(lower, upper)


DECODERS: dict[str, Callable[..., torch.Tensor]] = {
    "discrete": discretized_gaussian_log_likelihood,
    "continuous": gaussian_log_likelihood,
}


# ---------------------------------------------------------------------------------------------------
# Levels and reverse variances


def level_alpha_bars(schedule: DiscreteSchedule, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(abar_t, abar_{t-1}) at level indices (B,) long, float64, with abar before the first level = 1."""
    abar = torch.cat([torch.ones(1, dtype=torch.float64), schedule.alphas_cumprod]).to(index.device)
    return abar[index + 1], abar[index]


def _vp_log_variances(schedule: DiscreteSchedule, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log beta_tilde_t, log beta_t) of the step t -> t-1 in VP units (the sigma-form variances times abar_{t-1}),
    (B,) float64, from the one posterior implementation in ``forward_process``."""
    abar_t, abar_s = level_alpha_bars(schedule, index)
    log_small, log_large = posterior_log_variances(alpha_bar_to_sigma(abar_t), alpha_bar_to_sigma(abar_s))
    return log_small + abar_s.log(), log_large + abar_s.log()


def reverse_log_variance(
    schedule: DiscreteSchedule, index: torch.Tensor, variance: str = "small", v: torch.Tensor | None = None
) -> torch.Tensor:
    """log Sigma_theta in VP units at level indices (B,): (B,) for fixed choices, v's shape for the learned one.

    'small': beta_tilde_t, with the first level's 0 replaced by the second's (Nichol & Dhariwal's
    'posterior_log_variance_clipped'); 'large': beta_t (Ho et al. 2020, sec. 3.2: sigma_t^2 = beta_t, including
    sigma_1^2 = beta_1 for the decoder); 'learned': eq. 15's interpolation between them with v in [0, 1] from
    the network (Nichol & Dhariwal 2021).
    """
    if variance not in VARIANCES:
        raise ValueError(f"unknown variance {variance!r}; use one of {', '.join(VARIANCES)}")
    log_small = _vp_log_variances(schedule, index.clamp(min=1))[0]
    log_large = _vp_log_variances(schedule, index)[1]
    if variance == "small":
        return log_small
    if variance == "large":
        return log_large
    if v is None:
        raise ValueError("variance='learned' needs the network's interpolation v")
    return interpolate_log_variance(append_dims(log_small, v.ndim), append_dims(log_large, v.ndim), v.to(torch.float64))


# ---------------------------------------------------------------------------------------------------
# Terms of the bound


def prior_bpd(x0: torch.Tensor, schedule: DiscreteSchedule) -> torch.Tensor:
    """L_T = KL(q(z_T | x0) || N(0, I)) in bits/dim: (B,)."""
    alpha_bar_T = schedule.alphas_cumprod[-1].to(x0.device).expand(x0.shape[0])  # float64 (B,)
    mean, variance = q_marginal(x0, alpha_bar_T)
    log_var = append_dims(variance.log().to(x0.dtype), x0.ndim).expand_as(x0)
    return bits_per_dim(normal_kl(mean, log_var, torch.zeros_like(x0), torch.zeros_like(x0)))


def vlb_term(
    x0: torch.Tensor,
    x: torch.Tensor,
    x0_hat: torch.Tensor,
    log_var: torch.Tensor,
    schedule: DiscreteSchedule,
    index: torch.Tensor,
    decoder: str = "discrete",
) -> torch.Tensor:
    """The bound's term at level indices (B,) in bits/dim, (B,): L_0 where index = 0, else L_{t-1}.

    ``x`` is the sigma-form point x0 + sigma_t n at sigma_t = schedule.sigmas[index]; ``x0_hat`` the
    prediction that sets mu_theta; ``log_var`` the reverse log-variance, (B,) or x's shape.
    """
    abar_t, abar_s = level_alpha_bars(schedule, index)  # float64 (B,)
    z_t = x * append_dims(abar_t.sqrt().to(x.dtype), x.ndim)
    mean_q, var_q = q_posterior(z_t, x0, abar_t, abar_s)
    mean_p, _ = q_posterior(z_t, x0_hat, abar_t, abar_s)
    log_var = append_dims(log_var.to(x.dtype), x.ndim)
    # var_q = 0 at index 0, where the decoder is used instead; clamp keeps that unused branch finite.
    log_var_q = append_dims(var_q.clamp(min=1e-30).log().to(x.dtype), x.ndim)
    kl = bits_per_dim(normal_kl(mean_q, log_var_q, mean_p, log_var))
    decoder_nll = -bits_per_dim(DECODERS[decoder](x0, mean_p, log_var.expand_as(x0)))
    return torch.where(index == 0, decoder_nll, kl)


def _denoise(denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor, cond: Cond, learned: bool):
    if learned:
        return denoiser.denoise_with_variance(x, sigma, cond)
    return denoiser(x, sigma, cond), None


def vlb_term_for(
    denoiser: Denoiser,
    x0: torch.Tensor,
    schedule: DiscreteSchedule,
    index: torch.Tensor,
    *,
    variance: str = "small",
    decoder: str = "discrete",
    cond: Cond = None,
    generator: Generator = None,
) -> torch.Tensor:
    """One draw of the bound's term at level indices (B,) for a denoiser: z_t ~ q(z_t | x0), then
    ``vlb_term``. ``variance='learned'`` calls ``denoiser.denoise_with_variance``. Returns (B,) bits/dim."""
    sigma = schedule.sigmas.to(x0.device)[index].to(x0.dtype)
    x = x0 + append_dims(sigma, x0.ndim) * randn_like(x0, generator)
    x0_hat, v = _denoise(denoiser, x, sigma, cond, variance == "learned")
    log_var = reverse_log_variance(schedule, index, variance, v)
    return vlb_term(x0, x, x0_hat, log_var, schedule, index, decoder)


@dataclass(frozen=True)
class VariationalBound:
    """The bound per sample in bits/dim: ``total`` (B,) = ``prior`` (B,) + ``terms`` (B, T).sum(1)."""

    total: torch.Tensor
    prior: torch.Tensor
    terms: torch.Tensor


@torch.no_grad()
def variational_bound(
    denoiser: Denoiser,
    x0: torch.Tensor,
    schedule: DiscreteSchedule,
    *,
    variance: str = "small",
    decoder: str = "discrete",
    cond: Cond = None,
    generator: Generator = None,
) -> VariationalBound:
    """The full bound (Ho et al. 2020, eq. 5; Nichol & Dhariwal 2021, sec. 2), every level evaluated once
    with one draw of z_t each (T denoiser calls on the batch). ``decoder`` 'discrete' for 8-bit data in
    [-1, 1], 'continuous' for real-valued data (then comparable to -log2 p(x0) / D)."""
    B, T = x0.shape[0], schedule.num_steps
    terms = torch.stack(
        [
            vlb_term_for(
                denoiser, x0, schedule, torch.full((B,), i, dtype=torch.long, device=x0.device),
                variance=variance, decoder=decoder, cond=cond, generator=generator,
            )
            for i in range(T)
        ],
        dim=1,
    )  # (B, T)
    prior = prior_bpd(x0, schedule)
    return VariationalBound(prior + terms.sum(1), prior, terms)


def variational_bound_estimate(
    denoiser: Denoiser,
    x0: torch.Tensor,
    schedule: DiscreteSchedule,
    *,
    variance: str = "small",
    decoder: str = "discrete",
    cond: Cond = None,
    generator: Generator = None,
) -> torch.Tensor:
    """Unbiased one-level estimate L_T + T L_i with i ~ Uniform{0..T-1} per sample (Ho et al. 2020, sec. 3;
    the L_vlb training objective of Nichol & Dhariwal 2021 with uniform t). Returns (B,) bits/dim."""
    index = DiscreteUniform(schedule).sample_indices(x0.shape[0], generator, x0.device)
    term = vlb_term_for(
        denoiser, x0, schedule, index, variance=variance, decoder=decoder, cond=cond, generator=generator
    )
    return prior_bpd(x0, schedule) + schedule.num_steps * term

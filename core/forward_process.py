"""The DDPM forward process q and its Gaussian posterior (Ho et al. 2020, eqs. 4, 6, 7): the one implementation
that the DDPM sampler, the variational bound and the hybrid loss share.

In VP-latent form, with abar the cumulative signal fraction of a level,

    q(z_t | x0)        = N(sqrt(abar_t) x0, (1 - abar_t) I)                                  (Ho eq. 4)
    q(z_s | z_t, x0)   = N(mu_tilde, beta_tilde I),   s < t (less noise at s)                (Ho eqs. 6-7)

Ho et al. state the posterior for adjacent levels s = t - 1; the same conditioning holds for any pair of
levels (Kingma et al. 2021, VDM, eq. 28), which is what a sampler on a coarse grid needs. The level "before"
the first is the data itself: abar_0 = 1 (sigma_s = 0) gives mu_tilde = x0, beta_tilde = 0.

The posterior is written once, in sigma form (x = z / sqrt(abar) = x0 + sigma n, sigma^2 = (1 - abar) / abar),
where it is the variance-exploding bridge:

    mean      = x0 + (sigma_s / sigma_t)^2 (x_t - x0)
    small     = beta_tilde_t / abar_s = sigma_s^2 (sigma_t^2 - sigma_s^2) / sigma_t^2          (Ho eq. 7)
    large     = beta_t       / abar_s = (sigma_t^2 - sigma_s^2) (1 + sigma_s^2) / (1 + sigma_t^2)  (Ho sec. 3.2)
    learned   = exp(v log large + (1 - v) log small), v in [0, 1]              (Nichol & Dhariwal 2021, eq. 15)

The VP-latent view (``q_posterior``) scales the mean by sqrt(abar_s) and the variances by abar_s.
"""

from __future__ import annotations

import torch

from .precond import sigma_form, vp_latent
from .schedules import alpha_bar_to_sigma
from .utils import append_dims

VARIANCES = ("small", "large", "learned")  # the reverse-step variances of a DDPM (Ho et al. sec. 3.2; iDDPM)


def q_marginal(x0: torch.Tensor, alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean sqrt(abar) x0 (shape of x0) and variance 1 - abar ((B,)) of q(z_t | x0) (Ho eq. 4)."""
    return append_dims(alpha_bar.sqrt().to(x0.dtype), x0.ndim) * x0, 1.0 - alpha_bar


def q_sample(x0: torch.Tensor, alpha_bar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """z_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) n (Ho eq. 4, reparameterized)."""
    mean, variance = q_marginal(x0, alpha_bar)
    return mean + append_dims(variance.sqrt().to(x0.dtype), x0.ndim) * noise


def _per_sample(value: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor | float:
    """A float stays a float; a (B,) tensor broadcasts against ``like`` (B, *S) in its dtype."""
    return value if isinstance(value, float) else append_dims(value.to(like.dtype), like.ndim)


def posterior_mean(x_t: torch.Tensor, x0: torch.Tensor, sigma_t, sigma_s) -> torch.Tensor:
    """Mean of x_s given x_t and x0 in sigma form, x0 + (sigma_s / sigma_t)^2 (x_t - x0) (Ho eq. 7); the
    sigmas are floats or (B,) tensors. Pass a prediction x0_hat for x0 to get DDPM's reverse mean (Ho eq. 11)."""
    ratio = (sigma_s / sigma_t) ** 2
    return x0 + _per_sample(ratio, x_t) * (x_t - x0)


def posterior_log_variances(sigma_t: torch.Tensor, sigma_s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(log small, log large) of the step sigma_t -> sigma_s in sigma form (Ho eq. 7 and sec. 3.2, divided by
    abar_s), elementwise; small is -inf at the data level sigma_s = 0. Pass float64 for accuracy near the data."""
    log_gap = (sigma_t**2 - sigma_s**2).log()
    log_small = log_gap + 2 * sigma_s.log() - 2 * sigma_t.log()
    log_large = log_gap + torch.log1p(sigma_s**2) - torch.log1p(sigma_t**2)
    return log_small, log_large


def interpolate_log_variance(log_small: torch.Tensor, log_large: torch.Tensor, v) -> torch.Tensor:
    """Improved DDPM's learned variance, log Sigma = v log large + (1 - v) log small (Nichol & Dhariwal 2021,
    eq. 15); v = 0 is 'small', v = 1 'large'. ``v`` is a float or a tensor broadcastable against the logs."""
    return v * log_large + (1 - v) * log_small


def sigma_form_posterior(
    x_t: torch.Tensor, x0: torch.Tensor, sigma_t: torch.Tensor, sigma_s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The posterior of x_s given x_t and x0 in sigma form: mean (shape of x_t) and variance ((B,)),
    sigma_s < sigma_t; the VE bridge (k-diffusion's ancestral step)."""
    log_small, _ = posterior_log_variances(sigma_t, sigma_s)
    return posterior_mean(x_t, x0, sigma_t, sigma_s), log_small.exp()


def q_posterior_variance(alpha_bar_t: torch.Tensor, alpha_bar_s: torch.Tensor) -> torch.Tensor:
    """beta_tilde = (1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s) (Ho eq. 7; s = t - 1 gives beta_t's
    tilde): the sigma-form 'small' variance times abar_s."""
    log_small, _ = posterior_log_variances(alpha_bar_to_sigma(alpha_bar_t), alpha_bar_to_sigma(alpha_bar_s))
    return log_small.exp() * alpha_bar_s


def q_posterior(
    z_t: torch.Tensor, x0: torch.Tensor, alpha_bar_t: torch.Tensor, alpha_bar_s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean mu_tilde(z_t, x0) (shape of z_t) and variance beta_tilde ((B,)) of q(z_s | z_t, x0) (Ho eqs. 6-7),
    the VP-latent view of ``posterior_mean`` / ``posterior_log_variances``.

    ``alpha_bar_t`` < ``alpha_bar_s`` are (B,); ``alpha_bar_s = 1`` is the data level (mu_tilde = x0). Pass
    float64 tables (1 - abar near the data loses digits in float32); the mean is returned in the data's dtype.
    """
    sigma_t, sigma_s = alpha_bar_to_sigma(alpha_bar_t), alpha_bar_to_sigma(alpha_bar_s)
    mean_x = posterior_mean(sigma_form(z_t, sigma_t.to(z_t.dtype)), x0, sigma_t, sigma_s)
    return vp_latent(mean_x, sigma_s.to(z_t.dtype)), q_posterior_variance(alpha_bar_t, alpha_bar_s)


"""The DDPM forward process q and its Gaussian posteriors (Ho et al. 2020, eqs. 4, 6, 7).

In VP-latent form, with abar the cumulative signal fraction of a level,

    q(z_t | x0)        = N(sqrt(abar_t) x0, (1 - abar_t) I)                                  (Ho eq. 4)
    q(z_s | z_t, x0)   = N(mu_tilde, beta_tilde I),   s < t (less noise at s), alpha_{t|s} = abar_t / abar_s:
        mu_tilde   = sqrt(abar_s) beta_{t|s} / (1 - abar_t) x0 + sqrt(alpha_{t|s}) (1 - abar_s) / (1 - abar_t) z_t
        beta_tilde = (1 - abar_s) / (1 - abar_t) beta_{t|s},      beta_{t|s} = 1 - alpha_{t|s}   (Ho eqs. 6-7)

Ho et al. state it for adjacent levels s = t - 1 (beta_{t|s} = beta_t); the same conditioning holds for any
pair of levels (Kingma et al. 2021, VDM, eq. 28), which is what a sampler on a coarse grid needs. The
level "before" the first is the data itself: abar_0 = 1 gives mu_tilde = x0, beta_tilde = 0.

The sigma-form point x = z / sqrt(abar) = x0 + sigma n carries the same information
(``polydiff.core.precond.vp_latent`` / ``sigma_form``); ``sigma_form_posterior`` gives the posterior there.
"""

from __future__ import annotations

import torch

from .precond import sigma_form, vp_latent
from .schedules import sigma_to_alpha_bar
from .utils import append_dims


def q_marginal(x0: torch.Tensor, alpha_bar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean sqrt(abar) x0 (shape of x0) and variance 1 - abar ((B,)) of q(z_t | x0) (Ho eq. 4)."""
    return append_dims(alpha_bar.sqrt().to(x0.dtype), x0.ndim) * x0, 1.0 - alpha_bar


def q_sample(x0: torch.Tensor, alpha_bar: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """z_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) n (Ho eq. 4, reparameterized)."""
    mean, variance = q_marginal(x0, alpha_bar)
    return mean + append_dims(variance.sqrt().to(x0.dtype), x0.ndim) * noise


def q_posterior_variance(alpha_bar_t: torch.Tensor, alpha_bar_s: torch.Tensor) -> torch.Tensor:
    """beta_tilde = (1 - abar_s) / (1 - abar_t) * (1 - abar_t / abar_s) (Ho eq. 7; s = t - 1 gives beta_t)."""
    beta_ts = 1.0 - alpha_bar_t / alpha_bar_s
    return (1.0 - alpha_bar_s) / (1.0 - alpha_bar_t) * beta_ts


def q_posterior(
    z_t: torch.Tensor, x0: torch.Tensor, alpha_bar_t: torch.Tensor, alpha_bar_s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean mu_tilde(z_t, x0) (shape of z_t) and variance beta_tilde ((B,)) of q(z_s | z_t, x0) (Ho eqs. 6-7).

    ``alpha_bar_t`` < ``alpha_bar_s`` are (B,); ``alpha_bar_s = 1`` is the data level (mu_tilde = x0).
    The coefficients are computed in the dtype of the alpha_bars (pass float64 tables: 1 - abar near the
    data loses digits in float32) and applied in the data's dtype.
    Pass a prediction x0_hat for x0 to get the DDPM reverse mean mu_theta (Ho eq. 11 in x0 form).
    """
    beta_ts = 1.0 - alpha_bar_t / alpha_bar_s
    coef_x0 = alpha_bar_s.sqrt() * beta_ts / (1.0 - alpha_bar_t)
    coef_zt = (1.0 - beta_ts).sqrt() * (1.0 - alpha_bar_s) / (1.0 - alpha_bar_t)
    mean = append_dims(coef_x0.to(x0.dtype), x0.ndim) * x0 + append_dims(coef_zt.to(z_t.dtype), z_t.ndim) * z_t
    return mean, q_posterior_variance(alpha_bar_t, alpha_bar_s)


def sigma_form_posterior(
    x_t: torch.Tensor, x0: torch.Tensor, sigma_t: torch.Tensor, sigma_s: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``q_posterior`` for sigma-form points x = x0 + sigma n: mean of x_s (shape of x_t) and variance ((B,)),
    sigma_s < sigma_t. Equals (sigma_s^2 / sigma_t^2) x_t + (1 - sigma_s^2 / sigma_t^2) x0 and
    sigma_s^2 (sigma_t^2 - sigma_s^2) / sigma_t^2 (the VE posterior; k-diffusion's ancestral step)."""
    mean_z, variance_z = q_posterior(
        vp_latent(x_t, sigma_t), x0, sigma_to_alpha_bar(sigma_t), sigma_to_alpha_bar(sigma_s)
    )
    return sigma_form(mean_z, sigma_s), variance_z * (1.0 + sigma_s**2)

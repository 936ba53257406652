"""The DDPM forward process and its posteriors against Gaussian algebra done independently here."""

import math

import pytest
import torch

from polydiff.core.forward_process import (
    posterior_log_variances,
    q_marginal,
    q_posterior,
    q_posterior_variance,
    q_sample,
    sigma_form_posterior,
)
from polydiff.core.precond import vp_latent
from polydiff.core.schedules import alpha_bar_to_sigma, make_schedule


pytestmark = pytest.mark.usefixtures("float64")


def test_q_sample_has_the_marginal_moments():
    """z_t = sqrt(abar) x0 + sqrt(1 - abar) n: empirical mean / variance over N = 50k draws within 5 standard
    errors (mean SE = sqrt((1-abar)/N), variance SE = (1-abar) sqrt(2/N))."""
    g = torch.Generator().manual_seed(0)
    N, x0_value = 50_000, torch.tensor([0.7, -1.3, 0.0])
    alpha_bar = torch.tensor([0.9, 0.3, 0.01])
    x0 = x0_value.expand(N, 3)
    z = torch.stack([q_sample(x0, a.expand(N), torch.randn(N, 3, generator=g)) for a in alpha_bar])  # (L, N, 3)
    mean_true = alpha_bar.sqrt()[:, None] * x0_value  # (L, 3)
    var_true = (1 - alpha_bar)[:, None].expand(3, 3)
    assert ((z.mean(1) - mean_true).abs() < 5 * (var_true / N).sqrt()).all()
    assert ((z.var(1) - var_true).abs() < 5 * var_true * math.sqrt(2 / N)).all()
    mean, var = q_marginal(x0[:3], alpha_bar)
    torch.testing.assert_close(mean, mean_true)
    torch.testing.assert_close(var, 1 - alpha_bar)


def test_vp_latent_and_sigma_form_are_the_same_point():
    """vp_latent(x0 + sigma n, sigma) = sqrt(abar) x0 + sqrt(1 - abar) n with sigma = sqrt((1 - abar) / abar)."""
    g = torch.Generator().manual_seed(1)
    alpha_bar = torch.rand(16, generator=g) * 0.98 + 0.01
    x0, n = torch.randn(16, 2, 5, generator=g), torch.randn(16, 2, 5, generator=g)
    sigma = alpha_bar_to_sigma(alpha_bar)
    torch.testing.assert_close(vp_latent(x0 + sigma[:, None, None] * n, sigma), q_sample(x0, alpha_bar, n))


def _conditional_from_joint(z_t, x0, abar_t, abar_s):
    """q(z_s | z_t, x0) by conditioning the 2x2 joint of (z_s, z_t) given x0, per coordinate:
    means m = sqrt(abar) x0, Var z_s = 1 - abar_s, Var z_t = 1 - abar_t,
    Cov(z_s, z_t) = sqrt(abar_t / abar_s) (1 - abar_s)  (z_t = sqrt(alpha_{t|s}) z_s + independent noise)."""
    c_ss, c_tt = 1 - abar_s, 1 - abar_t
    c_st = (abar_t / abar_s).sqrt() * (1 - abar_s)
    m_s, m_t = abar_s.sqrt()[:, None] * x0, abar_t.sqrt()[:, None] * x0
    mean = m_s + (c_st / c_tt)[:, None] * (z_t - m_t)
    return mean, c_ss - c_st**2 / c_tt


@pytest.mark.parametrize("adjacent", [True, False])
def test_posterior_matches_gaussian_conditioning(adjacent):
    """Ho et al. eqs. 6-7 (and the any-pair generalization) equal the conditional of the joint Gaussian."""
    g = torch.Generator().manual_seed(2)
    schedule = make_schedule("cosine", num_steps=1000)
    abar = schedule.alphas_cumprod
    t = torch.randint(1, 1000, (64,), generator=g)
    s = t - 1 if adjacent else (torch.rand(64, generator=g) * t).long()
    abar_t, abar_s = abar[t], abar[s]
    x0, z_t = torch.randn(64, 4, generator=g), torch.randn(64, 4, generator=g)
    mean, var = q_posterior(z_t, x0, abar_t, abar_s)
    mean_ref, var_ref = _conditional_from_joint(z_t, x0, abar_t, abar_s)
    torch.testing.assert_close(mean, mean_ref)
    torch.testing.assert_close(var, var_ref)
    if adjacent:  # beta_tilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t with the schedule's own betas
        torch.testing.assert_close(var, (1 - abar_s) / (1 - abar_t) * schedule.betas[t])


def test_posterior_at_the_data_level_is_the_data():
    """abar_s = 1 (the level before the first): mu_tilde = x0 exactly and beta_tilde = 0."""
    x0, z = torch.randn(3, 4), torch.randn(3, 4)
    mean, var = q_posterior(z, x0, torch.full((3,), 0.9999), torch.ones(3))
    assert torch.equal(mean, x0) and torch.equal(var, torch.zeros(3))
    assert torch.equal(q_posterior_variance(torch.full((2,), 0.5), torch.ones(2)), torch.zeros(2))


def test_sigma_form_posterior_is_the_ve_posterior():
    """In sigma form the posterior of x_s given x_t and x0 is the VE bridge:
    mean x0 + (sigma_s / sigma_t)^2 (x_t - x0), variance sigma_s^2 (1 - sigma_s^2 / sigma_t^2)."""
    g = torch.Generator().manual_seed(3)
    sigma_t = torch.rand(8, generator=g) * 10 + 0.1
    sigma_s = sigma_t * torch.rand(8, generator=g)
    sigma_s[0] = 0.0
    x_t, x0 = torch.randn(8, 3, generator=g), torch.randn(8, 3, generator=g)
    mean, var = sigma_form_posterior(x_t, x0, sigma_t, sigma_s)
    r = (sigma_s / sigma_t) ** 2
    torch.testing.assert_close(mean, x0 + r[:, None] * (x_t - x0))
    torch.testing.assert_close(var, sigma_s**2 * (1 - r))


def test_sampler_and_bound_share_one_posterior():
    """The DDPM sampler's step variance (sigma form) times abar_{t-1} is the bound's reverse variance (VP units),
    for 'small' and 'large', at every level of a discrete schedule: one implementation serves both."""
    from polydiff.core.samplers.ddpm import step_std
    from polydiff.core.vlb import reverse_log_variance

    schedule = make_schedule("linear", num_steps=50)
    index = torch.arange(1, 50)
    abar_s = schedule.alphas_cumprod[index - 1]
    for variance, v in (("small", 0.0), ("large", 1.0)):
        sampler = torch.tensor([step_std(float(schedule.sigmas[i]), float(schedule.sigmas[i - 1]), v) ** 2
                                for i in index.tolist()], dtype=torch.float64)
        torch.testing.assert_close(sampler * abar_s, reverse_log_variance(schedule, index, variance).exp())
    small, large = posterior_log_variances(schedule.sigmas[1:], schedule.sigmas[:-1])
    assert bool((small < large).all())  # beta_tilde < beta (Ho et al. sec. 3.2)

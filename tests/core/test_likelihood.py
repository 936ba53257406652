"""RK45 on ODEs with known solutions, and the probability-flow ODE likelihood against the Gaussian
mixture's exact noisy log-density log p_sigma(x)."""

import math

import pytest
import torch

from polydiff.core.analytic import random_mixture
from polydiff.core.denoiser import to_d
from polydiff.core.likelihood import (
    discrete_bits_per_dim,
    draw_probes,
    exact_divergence,
    gaussian_log_prob,
    hutchinson_divergence,
    ode_log_likelihood,
)
from polydiff.core.ode import rk45
from polydiff.core.utils import seeded_generators

F64 = torch.float64
SIGMA_MIN, SIGMA_MAX = 0.01, 100.0


# --- the integrator -----------------------------------------------------------------------------------


def _oscillator(omega):
    """y = (q, p), dq/dt = p, dp/dt = -omega^2 q, one frequency per sample: q(t) = cos(omega t) from (1, 0)."""
    return lambda t, y: torch.stack([y[:, 1], -(omega**2) * y[:, 0]], 1)


@pytest.mark.parametrize("tol", [1e-5, 1e-8])
def test_rk45_gaussian_decay_to_tolerance(tol):
    """dy/dt = -t y, y(t) = y0 exp(-t^2 / 2); y is (B, 2, 2) to exercise a multi-dim state."""
    y0 = torch.randn(3, 2, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    result = rk45(lambda t, y: -t.reshape(-1, 1, 1) * y, y0, 0.0, 3.0, rtol=tol, atol=tol)
    error = (result.y - y0 * math.exp(-4.5)).abs().max().item()
    assert error < 10 * tol
    assert result.y.dtype == F64 and result.accepted.min() > 3


@pytest.mark.parametrize("tol", [1e-6, 1e-9])
def test_rk45_backwards_oscillator_per_sample(tol):
    """Integrates from t = 2 down to t = -1 (negative direction); each sample has its own frequency and
    its own step sizes, so solving the samples one at a time gives the same numbers."""
    omega = torch.tensor([0.5, 1.0, 3.0], dtype=F64)
    y0 = torch.stack([torch.cos(2 * omega), -omega * torch.sin(2 * omega)], 1)  # the solution at t = 2
    result = rk45(_oscillator(omega), y0, 2.0, -1.0, rtol=tol, atol=tol)
    exact = torch.stack([torch.cos(-omega), -omega * torch.sin(-omega)], 1)
    assert (result.y - exact).abs().max() < 20 * tol
    assert result.accepted[2] > result.accepted[0]  # the fast sample took more steps
    for i in range(3):
        alone = rk45(_oscillator(omega[i : i + 1]), y0[i : i + 1], 2.0, -1.0, rtol=tol, atol=tol)
        torch.testing.assert_close(alone.y, result.y[i : i + 1], rtol=0, atol=1e-14)


def test_rk45_transports_a_gaussian_like_the_closed_form_pf_ode():
    """dx/dsigma = (x - D(x, sigma)) / sigma with the exact denoiser of one Gaussian vs its closed-form map."""
    gm = random_mixture(6, 1, rank=2, std=0.5, shape=(2, 3), seed=3)
    x = gm.prior(4, 5.0, torch.Generator().manual_seed(0))
    result = rk45(lambda s, y: to_d(y, s, gm(y, s)), x, 5.0, 0.05, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(result.y, gm.ode_solution(x, 5.0, 0.05), rtol=0, atol=1e-7)


# --- divergence ---------------------------------------------------------------------------------------


def _drift(gm, sigma):
    return lambda z: to_d(z, sigma, gm(z, sigma))


def test_exact_divergence_matches_the_jacobian_trace():
    gm = random_mixture(4, 3, rank=1, shape=(2, 2), seed=1)
    x = gm.sample(3, torch.Generator().manual_seed(0))[0]
    sigma = torch.tensor([0.1, 0.5, 2.0], dtype=F64)
    _, div = exact_divergence(_drift(gm, sigma), x)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(_drift(gm, sigma[i : i + 1]), x[i : i + 1])  # (1,2,2,1,2,2)
        torch.testing.assert_close(div[i], jac.reshape(4, 4).trace(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased(kind):
    """The mean of v^T J v over many probes is the exact divergence, within 5 standard errors."""
    gm = random_mixture(3, 3, rank=1, shape=(3,), seed=2)
    m = 4000
    x = gm.sample(1, torch.Generator().manual_seed(0))[0].expand(m, 3)  # one point, one probe per row
    sigma = torch.full((m,), 0.4, dtype=F64)
    probes = draw_probes(x, 1, kind, torch.Generator().manual_seed(1))  # (1, m, 3)
    _, estimates = hutchinson_divergence(_drift(gm, sigma), x, probes)
    _, exact = exact_divergence(_drift(gm, sigma[:1]), x[:1])
    assert estimates.std() > 0
    assert abs(estimates.mean() - exact[0]) < 5 * estimates.std() / math.sqrt(m)
    if kind == "rademacher":
        assert set(probes.unique().tolist()) == {-1.0, 1.0}


# --- likelihood ---------------------------------------------------------------------------------------

MIXTURES = {
    "one isotropic gaussian, dim 3": dict(dim=3, components=1, rank=0),
    "3 components, dim 2": dict(dim=2, components=3, rank=0),
    "2 low-rank components, dim 4": dict(dim=4, components=2, rank=1),
}


def _data(spec, n=4):
    gm = random_mixture(**spec, std=0.5, spread=1.0, seed=1)
    return gm, gm.sample(n, torch.Generator().manual_seed(0))[0]


@pytest.mark.parametrize("spec", MIXTURES.values(), ids=MIXTURES.keys())
def test_ode_likelihood_with_the_exact_prior_is_exact(spec):
    """With log p_{sigma_max} as the prior, only the solver error remains: measured < 4e-7 nats at
    rtol = atol = 1e-8 (the bound asserted is 2e-6)."""
    gm, x = _data(spec)
    result = ode_log_likelihood(
        gm, x, SIGMA_MIN, SIGMA_MAX, rtol=1e-8, atol=1e-8, prior_log_prob=lambda z: gm.log_prob(z, SIGMA_MAX)
    )
    torch.testing.assert_close(result.log_likelihood, gm.log_prob(x, SIGMA_MIN), rtol=0, atol=2e-6)
    torch.testing.assert_close(result.bits_per_dim, -result.log_likelihood / (spec["dim"] * math.log(2)))


@pytest.mark.parametrize("spec", MIXTURES.values(), ids=MIXTURES.keys())
def test_ode_likelihood_with_the_gaussian_prior(spec):
    """With the default N(0, sigma_max^2 I) prior the whole error is the prior mismatch
    log p_{sigma_max}(x_T) - log N(x_T; 0, sigma_max^2 I), dominated by x_T . mu / sigma_max^2 =
    O(|mu| / sigma_max): measured < 0.01 nats at sigma_max = 100 (asserted < 0.03)."""
    gm, x = _data(spec)
    result = ode_log_likelihood(gm, x, SIGMA_MIN, SIGMA_MAX, rtol=1e-6, atol=1e-6)
    truth = gm.log_prob(x, SIGMA_MIN)
    mismatch = gm.log_prob(result.latent, SIGMA_MAX) - gaussian_log_prob(result.latent, SIGMA_MAX)
    torch.testing.assert_close(result.log_likelihood - truth, -mismatch, rtol=0, atol=5e-5)
    assert (result.log_likelihood - truth).abs().max() < 0.03


def test_hutchinson_likelihood_is_unbiased_and_seeded_per_sample():
    """The x-trajectory ignores the probes, so with probes fixed per solve the Hutchinson estimate of the
    integral is unbiased: its mean over 256 probe seeds matches the exact-divergence likelihood."""
    gm, x = _data(MIXTURES["2 low-rank components, dim 4"], n=1)
    n = 256
    exact = ode_log_likelihood(gm, x, SIGMA_MIN, SIGMA_MAX)
    seeds = list(range(n))
    est = ode_log_likelihood(
        gm, x.expand(n, 4), SIGMA_MIN, SIGMA_MAX, divergence="hutchinson", generator=seeded_generators(seeds)
    )
    ll = est.log_likelihood
    assert ll.std() > 0
    assert abs(ll.mean() - exact.log_likelihood[0]) < 5 * ll.std() / math.sqrt(n)
    alone = ode_log_likelihood(
        gm, x, SIGMA_MIN, SIGMA_MAX, divergence="hutchinson", generator=seeded_generators([seeds[7]])
    )
    torch.testing.assert_close(alone.log_likelihood, ll[7:8], rtol=0, atol=1e-10)


def test_likelihood_keeps_float32():
    gm, x = _data(MIXTURES["3 components, dim 2"])
    result = ode_log_likelihood(gm, x.float(), SIGMA_MIN, SIGMA_MAX, rtol=1e-4, atol=1e-4)
    assert result.log_likelihood.dtype == torch.float32
    prior = lambda z: gm.log_prob(z, SIGMA_MAX).float()  # noqa: E731
    exact_prior = ode_log_likelihood(gm, x.float(), SIGMA_MIN, SIGMA_MAX, rtol=1e-4, atol=1e-4, prior_log_prob=prior)
    assert (exact_prior.log_likelihood.double() - gm.log_prob(x, SIGMA_MIN)).abs().max() < 5e-3


def test_discrete_bits_per_dim_of_uniform_8bit_data_is_8():
    """Uniform over the 256 levels of x = 2k/255 - 1: the dequantized density is uniform on the union of
    the bins, [-1 - 1/255, 1 + 1/255]^N of side 256 * 2/255, i.e. p = (255/512)^N. That is 8 bits/dim."""
    dim = 12
    log_p = torch.tensor([dim * math.log(255 / 512)], dtype=F64)
    torch.testing.assert_close(discrete_bits_per_dim(log_p, dim), torch.tensor([8.0], dtype=F64))
    assert math.isclose(discrete_bits_per_dim(torch.zeros(1), 1).item(), math.log2(127.5), rel_tol=1e-6)

"""The analytic mixture is the ground truth for everything else, so it is checked against brute force."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from polydiff.core.analytic import random_mixture


def dense_log_prob(mixture, x, sigma, cond_mask=None):
    """log p_sigma(x) from dense covariances (no Woodbury): the independent reference."""
    eye = torch.eye(mixture.dim, dtype=torch.float64)
    terms = torch.stack(
        [
            MultivariateNormal(mixture.means[k], mixture.covariance(k) + sigma**2 * eye).log_prob(x)
            + mixture.log_weights[k]
            for k in range(mixture.num_components)
        ],
        -1,
    )
    return torch.logsumexp(terms, -1)


@pytest.mark.parametrize("rank", [0, 2])
def test_log_prob_matches_dense_gaussians(rank):
    mixture = random_mixture(5, 4, rank=rank)
    x, _ = mixture.sample(16, torch.Generator().manual_seed(0))
    for sigma in (0.0, 0.5, 3.0):
        torch.testing.assert_close(mixture.log_prob(x, sigma), dense_log_prob(mixture, x, sigma))


@pytest.mark.parametrize("shape", [(6,), (2, 3), (1, 2, 3), (1, 1, 2, 3)])
def test_denoiser_is_tweedie(shape):
    """E[x0 | x] = x + sigma^2 grad log p_sigma(x) (Tweedie's formula), checked with autograd."""
    mixture = random_mixture(6, 3, rank=2, shape=shape)
    g = torch.Generator().manual_seed(1)
    x0, _ = mixture.sample(8, g)
    sigma = torch.linspace(0.05, 4.0, 8, dtype=torch.float64)
    x = (x0 + sigma.reshape(-1, *[1] * len(shape)) * torch.randn(x0.shape, generator=g, dtype=torch.float64))
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(mixture.log_prob(x, sigma).sum(), x)
    want = x.detach() + sigma.reshape(-1, *[1] * len(shape)) ** 2 * grad
    torch.testing.assert_close(mixture(x.detach(), sigma), want)


def test_samples_have_the_mixture_moments():
    mixture = random_mixture(3, 2, rank=1, std=0.4)
    x, comp = mixture.sample(40000, torch.Generator().manual_seed(2))
    weights = mixture.log_weights.exp()
    for k in range(2):
        share = (comp == k).double().mean()
        assert abs(float(share - weights[k])) < 4 * math.sqrt(float(weights[k] * (1 - weights[k])) / 40000)
        xk = x[comp == k]
        torch.testing.assert_close(xk.mean(0), mixture.means[k], atol=0.03, rtol=0)
        torch.testing.assert_close(torch.cov(xk.T), mixture.covariance(k), atol=0.03, rtol=0)


def test_class_conditional_restricts_to_the_class():
    mixture = random_mixture(2, 4, classes=2, spread=4.0)
    x = torch.randn(6, 2, dtype=torch.float64)
    labels = torch.tensor([0, 1, -1, 0, 1, -1])
    r = mixture.responsibilities(x, 1.0, {"class_labels": labels})
    for row, y in enumerate(labels.tolist()):
        allowed = mixture.labels == y if y >= 0 else torch.ones(4, dtype=torch.bool)
        assert float(r[row][~allowed].sum()) == 0.0
        assert float(r[row].sum()) == pytest.approx(1.0)
    # p(x | y) integrates the class's renormalised weights: the class-average of densities is p(x).
    log_py = torch.stack([mixture.log_weights[mixture.labels == y].logsumexp(0) for y in (0, 1)])
    cond_lp = torch.stack([mixture.log_prob(x, 1.0, {"class_labels": torch.full((6,), y)}) for y in (0, 1)])
    torch.testing.assert_close(torch.logsumexp(cond_lp + log_py[:, None], 0), mixture.log_prob(x, 1.0))


def test_single_gaussian_ode_solution_solves_the_ode():
    """d x / d sigma = (x - D(x, sigma)) / sigma along the closed-form path (finite differences)."""
    mixture = random_mixture(4, 1, rank=2)
    x_start = 10.0 * torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for sigma in (0.3, 1.0, 4.0):
        h = 1e-5
        x_plus, x_minus, x_mid = (mixture.ode_solution(x_start, 10.0, s) for s in (sigma + h, sigma - h, sigma))
        derivative = (x_plus - x_minus) / (2 * h)
        torch.testing.assert_close(derivative, (x_mid - mixture(x_mid, sigma)) / sigma, atol=1e-6, rtol=1e-6)


def test_exact_prediction_in_every_parameterization():
    """eps, v and score of the exact model satisfy their defining identities with the exact x0."""
    mixture = random_mixture(4, 3, rank=1, shape=(2, 2))
    g = torch.Generator().manual_seed(4)
    x = 2.0 * torch.randn(5, 2, 2, generator=g, dtype=torch.float64)
    sigma = torch.tensor([0.1, 0.5, 1.0, 2.0, 8.0], dtype=torch.float64)
    s = sigma.reshape(-1, 1, 1)
    x0 = mixture.prediction(x, sigma, "x0")
    torch.testing.assert_close(x0, mixture(x, sigma))
    eps = mixture.prediction(x, sigma, "eps")
    torch.testing.assert_close(x0 + s * eps, x)  # x = x0 + sigma eps
    alpha, sigma_vp = (1 + s**2).rsqrt(), s * (1 + s**2).rsqrt()
    torch.testing.assert_close(mixture.prediction(x, sigma, "v"), alpha * eps - sigma_vp * x0)
    torch.testing.assert_close(mixture.prediction(x, sigma, "score"), mixture.score(x, sigma))
    with pytest.raises(KeyError, match="known"):
        mixture.prediction(x, sigma, "flow")

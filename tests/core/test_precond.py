"""Parameterizations: each (c_skip, c_out, c_in) set turns an ideal backbone into the exact denoiser."""

import pytest
import torch
from torch import nn

from polydiff.core import precond as P
from polydiff.core.analytic import random_mixture
from polydiff.core.schedules import make_schedule

SIGMAS = torch.tensor([0.01, 0.3, 1.0, 5.0, 80.0], dtype=torch.float64)


class OracleBackbone(nn.Module):
    """Returns whatever F must output for the wrapped denoiser to equal the mixture's exact denoiser."""

    def __init__(self, mixture, precond_ref):
        super().__init__()
        self.mixture, self.ref = mixture, precond_ref
        self.seen = {}

    def forward(self, x_in, c_noise, cond):
        self.seen = {"x_in": x_in, "c_noise": c_noise}
        x, sigma = self.ref.current
        return self.ref.target(x, self.mixture(x, sigma, cond), sigma)


@pytest.mark.parametrize("name", sorted(P.PARAMETERIZATIONS))
def test_oracle_backbone_gives_exact_denoiser(name):
    mixture = random_mixture(6, 3, rank=2, shape=(1, 2, 3))
    pre = P.Precond(nn.Identity(), name, sigma_data=0.7)
    pre.backbone = OracleBackbone(mixture, pre)
    x0, _ = mixture.sample(len(SIGMAS), torch.Generator().manual_seed(0))
    x = x0 + SIGMAS.reshape(-1, 1, 1, 1) * torch.randn_like(x0)
    pre.current = (x, SIGMAS)
    torch.testing.assert_close(pre(x, SIGMAS), mixture(x, SIGMAS), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", ["eps", "x0", "v"])
def test_vp_parameterizations_feed_the_vp_latent(name):
    pre = P.Precond(nn.Identity(), name)
    _, _, c_in = pre.coefficients(SIGMAS, 1)
    torch.testing.assert_close(c_in, (1 + SIGMAS**2).rsqrt())  # z = sqrt(abar) x


def test_edm_coefficients_table_1():
    sd = 0.5
    c_skip, c_out, c_in = P.PARAMETERIZATIONS["edm"].coeffs(SIGMAS, sd)
    torch.testing.assert_close(c_skip, sd**2 / (SIGMAS**2 + sd**2))
    torch.testing.assert_close(c_out, SIGMAS * sd / (SIGMAS**2 + sd**2).sqrt())
    torch.testing.assert_close(c_in, 1 / (SIGMAS**2 + sd**2).sqrt())
    torch.testing.assert_close(P.edm_c_noise(SIGMAS), SIGMAS.log() / 4)


def test_prediction_conversions_round_trip():
    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    x = x0 + SIGMAS.reshape(-1, 1, 1) * eps
    torch.testing.assert_close(P.x0_to_eps(x0, x, SIGMAS), eps)
    torch.testing.assert_close(P.eps_to_x0(eps, x, SIGMAS), x0)
    torch.testing.assert_close(P.v_to_x0(P.x0_to_v(x0, x, SIGMAS), x, SIGMAS), x0)
    torch.testing.assert_close(P.score_to_x0(P.x0_to_score(x0, x, SIGMAS), x, SIGMAS), x0)
    torch.testing.assert_close(P.sigma_form(P.vp_latent(x, SIGMAS), SIGMAS), x)
    # v in VP terms (Salimans & Ho 2022): v = sqrt(abar) eps - sqrt(1 - abar) x0.
    abar = (1 / (1 + SIGMAS**2)).reshape(-1, 1, 1)
    torch.testing.assert_close(P.x0_to_v(x0, x, SIGMAS), abar.sqrt() * eps - (1 - abar).sqrt() * x0)


def test_learned_variance_split_and_c_noise_for_discrete_models():
    schedule = make_schedule("linear")

    class TwoHeads(nn.Module):
        def forward(self, x_in, c_noise, cond):
            self.c_noise = c_noise
            return torch.cat([torch.zeros_like(x_in), torch.ones_like(x_in)], 1)

    pre = P.Precond(TwoHeads(), "eps", c_noise=P.discrete_c_noise(schedule), learned_variance=True)
    sigma = schedule.sigmas[torch.tensor([0, 499, 999])]
    x = torch.randn(3, 2, 4, dtype=torch.float64)
    x0_hat, v = pre.denoise_with_variance(x, sigma)
    torch.testing.assert_close(x0_hat, x)  # eps = 0
    torch.testing.assert_close(v, torch.ones_like(x))
    torch.testing.assert_close(pre.backbone.c_noise, torch.tensor([0.0, 499.0, 999.0], dtype=torch.float64))


def test_unknown_parameterization():
    with pytest.raises(KeyError, match="known"):
        P.Precond(nn.Identity(), "score")

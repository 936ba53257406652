"""DPM-Solver++ and UniPC (core/samplers/dpm_solver.py, unipc.py) against closed-form truths.

The registry-wide contracts (signature, shapes, per-sample generators, no D at sigma = 0) live in
test_samplers.py; here: the exponential-integrator weights integrate polynomials in lambda exactly,
each solver's measured order matches its theory on the exact PF-ODE map of a Gaussian, the final step
is exact for an isotropic Gaussian and O(sigma^4) otherwise, and the SDE variants sample the right law.
"""

from __future__ import annotations

import math

import pytest
import torch

from polydiff.core.analytic import GaussianMixture, random_mixture
from polydiff.core.grids import karras_sigmas
from polydiff.core.samplers import SAMPLERS
from polydiff.core.samplers.exponential import (
    angle_variable, exponential_step, exponential_weights, final_step_to_zero, phi,
)
from polydiff.core.samplers.unipc import unipc_rhos
from polydiff.core.utils import seeded_generators

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def gaussian(dim: int = 6) -> GaussianMixture:
    """One anisotropic component (rank 2 plus isotropic): ode_solution gives the exact PF-ODE map."""
    return random_mixture(dim, components=1, rank=2, std=0.5, spread=1.0, seed=1)


def constant(value: float) -> torch.Tensor:
    return torch.full((1,), value, dtype=torch.float64)


def median_error(name: str, steps: int, data: GaussianMixture, n: int = 32, **options) -> float:
    x = SIGMA_MAX * torch.randn(n, data.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = SAMPLERS[name](data, x, karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX), **options)
    return float((out - data.ode_solution(x, SIGMA_MAX, 0.0)).norm(dim=1).median())


# ---------------------------------------------------------------------------------------------------
# Shared math


@pytest.mark.parametrize("k", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("z", [1e-6, 0.3, 0.999, 1.001, 2.5, 40.0])
def test_phi_matches_its_integral(k, z):
    """phi_k(z) = int_0^1 e^{-z (1 - tau)} tau^{k-1} / (k-1)! dtau (phi_0 = e^{-z}), on both sides of the
    series / recursion switch at z = 1."""
    if k == 0:
        assert phi(0, z) == pytest.approx(math.exp(-z), rel=1e-12)
        return
    tau = torch.linspace(0, 1, 200001, dtype=torch.float64)
    integrand = torch.exp(-z * (1 - tau)) * tau ** (k - 1) / math.factorial(k - 1)
    assert phi(k, z) == pytest.approx(float(torch.trapezoid(integrand, tau)), rel=1e-8)


@pytest.mark.parametrize("kappa", [1.0, 2.0])
@pytest.mark.parametrize("nodes", [[0.0], [-0.7, 0.0], [-1.3, -0.4, 0.0], [0.0, 0.45]])
def test_exponential_step_integrates_polynomials_in_lambda_exactly(nodes, kappa):
    """x_t = e^{-kappa h} x_s + int kappa e^{-kappa (lambda_t - lambda)} D(lambda) dlambda holds exactly when D is
    a polynomial of degree < number of nodes, whatever the nodes' spacing (history or a later stage)."""
    lam_s, lam_t = 0.0, 0.9
    for degree in range(len(nodes)):
        poly = lambda lam: (lam + 0.3) ** degree  # noqa: E731
        x_s = torch.tensor([1.7], dtype=torch.float64)
        out = exponential_step(x_s, lam_s, lam_t, [(lam, constant(poly(lam))) for lam in nodes], kappa)
        u = torch.linspace(lam_s, lam_t, 100001, dtype=torch.float64)
        integral = torch.trapezoid(kappa * torch.exp(-kappa * (lam_t - u)) * poly(u), u)
        expected = math.exp(-kappa * (lam_t - lam_s)) * 1.7 + float(integral)
        assert float(out) == pytest.approx(expected, rel=1e-9), f"degree {degree}"


@pytest.mark.parametrize("kappa", [1.0, 2.0])
def test_quadrature_moments_match_the_phi_moments(kappa):
    """With variable = lambda itself, the Gauss-Legendre path reproduces the closed-form phi weights."""
    nodes = [-1.1, -0.5, 0.0]
    closed = exponential_weights(0.0, 1.3, nodes, kappa)
    quadrature = exponential_weights(0.0, 1.3, nodes, kappa, variable=lambda lam: lam)
    assert closed[0] == quadrature[0]
    assert closed[1] == pytest.approx(quadrature[1], rel=1e-12, abs=1e-12)


def test_angle_step_integrates_polynomials_in_the_angle_exactly():
    """In the angle variable theta(lambda) = arctan(e^{-lambda} / sigma_data) the step is exact for D = p(theta)."""
    theta = angle_variable(0.5)
    nodes, lam_s, lam_t = [-1.0, -0.3, 0.2], 0.2, 1.4
    poly = lambda lam: 1.0 - 2.0 * theta(lam) + 3.0 * theta(lam) ** 2  # noqa: E731
    x_s = torch.tensor([0.4], dtype=torch.float64)
    out = exponential_step(x_s, lam_s, lam_t, [(lam, constant(poly(lam))) for lam in nodes], variable=theta)
    u = torch.linspace(lam_s, lam_t, 200001, dtype=torch.float64)
    values = torch.tensor([poly(float(lam)) for lam in u[::100]], dtype=torch.float64)
    integral = torch.trapezoid(torch.exp(-(lam_t - u[::100])) * values, u[::100])
    assert float(out) == pytest.approx(math.exp(-(lam_t - lam_s)) * 0.4 + float(integral), rel=1e-6)


def test_midpoint_weights_are_algorithm_2():
    """midpoint=True reproduces DPM-Solver++(2M), Alg. 2: D~ = (1 + 1/2r) D_0 - 1/2r D_-1,
    x = e^-h x + (1 - e^-h) D~."""
    h, h_prev = 0.8, 0.5
    r = h_prev / h
    decay, (b_prev, b_0) = exponential_weights(0.0, h, [-h_prev, 0.0], midpoint=True)
    assert decay == pytest.approx(math.exp(-h))
    assert b_0 == pytest.approx(-math.expm1(-h) * (1 + 1 / (2 * r)))
    assert b_prev == pytest.approx(-math.expm1(-h) * (-1 / (2 * r)))


def test_unipc_rhos_solve_the_order_conditions_and_bh_cancels():
    """sum_m rho_m r_m^{k-1} = k! h phi_{k+1}(h) / B(h): with two or more unknowns B(h) rho does not depend
    on the variant; with one unknown UniPC fixes rho = 1/2, so the variants differ there."""
    rks, h = [-0.6, -1.5, 1.0], 0.7
    rho1, rho2 = unipc_rhos(rks, h, "bh1"), unipc_rhos(rks, h, "bh2")
    for k in range(1, 4):
        assert sum(p * r ** (k - 1) for p, r in zip(rho1, rks)) == pytest.approx(math.factorial(k) * phi(k + 1, h))
    for a, b in zip(rho1, rho2):
        assert h * a == pytest.approx(-math.expm1(-h) * b)
    assert unipc_rhos([1.0], h, "bh1") == unipc_rhos([1.0], h, "bh2") == [0.5]


# ---------------------------------------------------------------------------------------------------
# The final step


@pytest.mark.parametrize("sigma", [0.01, 0.3, 2.0, 50.0])
def test_gaussian_final_step_is_exact_for_its_gaussian(sigma):
    """For data N(mu, sigma_data^2 I), D + w (x - D) is the exact PF-ODE map to 0 at any sigma."""
    mean = torch.randn(1, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    data = GaussianMixture(mean, torch.tensor([0.7], dtype=torch.float64))
    x = data.means + sigma * torch.randn(64, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    out = final_step_to_zero(x, data(x, sigma), sigma, "gaussian", sigma_data=0.7)
    torch.testing.assert_close(out, data.ode_solution(x, sigma, 0.0), rtol=1e-10, atol=1e-10)


def test_gaussian_final_step_is_fourth_order_in_sigma():
    """For other data the error is O(sigma^4) (an Euler step in t = sigma^2), where x <- D is O(sigma^2)."""
    data = gaussian()
    x0 = data.sample(64, torch.Generator().manual_seed(5))[0]
    errors = {"gaussian": [], "denoised": []}
    for sigma in (0.08, 0.04, 0.02):
        x = data.ode_solution(x0, 0.0, sigma)
        for rule in errors:
            errors[rule].append(float((final_step_to_zero(x, data(x, sigma), sigma, rule) - x0).norm()))
    for rule, power in (("gaussian", 4), ("denoised", 2)):
        orders = [math.log2(a / b) for a, b in zip(errors[rule], errors[rule][1:])]
        assert all(abs(p - power) < 0.3 for p in orders), (rule, orders)


def test_exact_for_a_point_mass_on_any_grid():
    """With D = mu constant the exponential integrator is exact at every order: x(sigma) = mu + sigma/sigma_0
    (x_0 - mu), and x(0) = mu with the 'denoised' final step."""
    mu = torch.tensor([[0.3, -1.2, 2.0]], dtype=torch.float64)
    calls = []

    def point_mass(x, sigma, cond=None):
        calls.append(float(sigma[0]))
        return mu.expand_as(x)

    x = 5.0 * torch.randn(4, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(6))
    sigmas = torch.tensor([5.0, 2.0, 1.5, 0.4, 0.1, 0.0], dtype=torch.float64)
    for name, options in [("dpmpp_2m", {}), ("dpmpp_3m", {}), ("dpmpp_2s", {}), ("unipc", {"order": 3})]:
        seen = []
        SAMPLERS[name](point_mass, x, sigmas, final_step="denoised", callback=lambda d: seen.append(d["x"]), **options)
        for step, level in zip(seen, sigmas[1:]):
            torch.testing.assert_close(step, mu + level / 5.0 * (x - mu), rtol=1e-12, atol=1e-12)
    assert min(calls) > 0.0


# ---------------------------------------------------------------------------------------------------
# Convergence to the exact PF-ODE map

# (sampler, options, expected order in steps). UniC adds one order to UniP-p; dpmpp_2s takes 2 D per step.
ORDERS = [
    ("dpmpp_2m", {}, 2),
    ("dpmpp_2m", {"midpoint": False}, 2),
    ("dpmpp_3m", {}, 3),
    ("dpmpp_2s", {}, 2),
    ("unipc", {"order": 1}, 2),
    ("unipc", {"order": 2, "variant": "bh1"}, 3),
    ("unipc", {"order": 2, "variant": "bh2"}, 3),
    ("unipc", {"order": 3, "variant": "bh1"}, 4),
    ("unipc", {"order": 3, "variant": "bh2"}, 4),
    ("unipc", {"order": 2, "corrector": False}, 2),
    ("unipc", {"order": 3, "corrector": False}, 3),
    ("dpmpp_2m", {"variable": "angle"}, 2),
    ("dpmpp_3m", {"variable": "angle"}, 3),
    ("unipc", {"order": 1, "variable": "angle"}, 2),
    ("unipc", {"order": 2, "variable": "angle"}, 3),
    ("unipc", {"order": 3, "variable": "angle"}, 4),
]


@pytest.mark.parametrize("name, options, order", ORDERS, ids=[f"{n}{o}" for n, o, _ in ORDERS])
def test_measured_order(name, options, order):
    """log2(err(N) / err(2N)) for N = 40 -> 80 -> 160 on the Karras grid (sigma_min = 0.002, where the final
    step's O(sigma_min^4) error is far below the solver's) lies within 0.3 of the solver's order."""
    data = gaussian()
    errors = [median_error(name, steps, data, **options) for steps in (40, 80, 160)]
    measured = [math.log2(a / b) for a, b in zip(errors, errors[1:])]
    assert all(abs(p - order) < 0.3 for p in measured), f"orders {measured}, errors {errors}"


def test_dpmpp_3m_beats_the_reference_codes_halved_d2_weight():
    """The D'' weight h^3 phi_3 makes dpmpp_3m third order; halving it (the reference implementations'
    h phi_3 on D2 = h^2 D'' / 2) leaves second order, so at 160 steps it is clearly less accurate."""
    data = gaussian()
    import polydiff.core.samplers.exponential as module

    exact = median_error("dpmpp_3m", 160, data)
    original = module.phi
    try:
        module.phi = lambda k, z: original(k, z) * (0.5 if k == 3 else 1.0)
        halved = median_error("dpmpp_3m", 160, data)
    finally:
        module.phi = original
    assert exact < halved / 3


def test_final_step_choice_matters_on_a_coarse_end():
    """Ending at sigma = 0.3: the 'gaussian' final step is several times more accurate than x <- D."""
    data = gaussian()
    x = SIGMA_MAX * torch.randn(32, data.dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grid = karras_sigmas(40, 0.3, SIGMA_MAX)
    target = data.ode_solution(x, SIGMA_MAX, 0.0)
    errors = {
        rule: float((SAMPLERS["unipc"](data, x, grid, final_step=rule) - target).norm())
        for rule in ("gaussian", "denoised")
    }
    assert errors["gaussian"] < errors["denoised"] / 3, errors


@pytest.mark.parametrize("name", ["dpmpp_2m", "dpmpp_3m", "unipc"])
def test_one_denoiser_call_per_step(name):
    calls = []
    data = gaussian()
    counting = lambda x, s, c=None: calls.append(1) or data(x, s)  # noqa: E731
    SAMPLERS[name](counting, torch.ones(2, data.dim), karras_sigmas(7, 0.1, 10.0))
    assert len(calls) == 7


def test_dpmpp_2s_costs_two_calls_per_step_but_one_for_the_last():
    calls = []
    data = gaussian()
    counting = lambda x, s, c=None: calls.append(1) or data(x, s)  # noqa: E731
    SAMPLERS["dpmpp_2s"](counting, torch.ones(2, data.dim), karras_sigmas(7, 0.1, 10.0))
    assert len(calls) == 2 * 7 - 1


@pytest.mark.parametrize("bad", [{"order": 4}, {"variant": "bh3"}, {"final_step": "euler"}, {"variable": "t"}])
def test_rejects_bad_options(bad):
    with pytest.raises(ValueError):
        SAMPLERS["unipc"](gaussian(), torch.ones(1, 6), karras_sigmas(3, 0.1, 10.0), **bad)


# ---------------------------------------------------------------------------------------------------
# Stochastic variants


def sample_moments(name: str, n: int, steps: int, **options):
    data = gaussian(dim=3)
    generators = seeded_generators(range(n))
    x = SIGMA_MAX * torch.stack([torch.randn(3, dtype=torch.float64, generator=g) for g in generators])
    out = SAMPLERS[name](data, x, karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX), generator=generators, **options)
    return data, out.mean(0), torch.cov(out.T)


@pytest.mark.parametrize("name, options", [("dpmpp_sde", {}), ("dpmpp_2m_sde", {}), ("dpmpp_2s", {"eta": 1.0})])
def test_stochastic_variants_sample_the_gaussian(name, options):
    """4000 samples, 40 steps: the mean within 5 standard errors, the covariance within 8% (Frobenius)."""
    n = 4000
    data, mean, cov = sample_moments(name, n, 40, **options)
    true_cov = data.covariance(0)
    standard_error = (torch.diagonal(true_cov) / n).sqrt()
    assert bool(((mean - data.means[0]).abs() < 5 * standard_error).all()), (mean, data.means[0])
    assert float((cov - true_cov).norm() / true_cov.norm()) < 0.08


def test_sde_noise_comes_from_the_generator():
    data = gaussian(dim=3)
    x = torch.ones(2, 3, dtype=torch.float64)
    grid = karras_sigmas(5, 0.1, 10.0)
    runs = [SAMPLERS["dpmpp_sde"](data, x, grid, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    torch.testing.assert_close(runs[0], runs[1])
    assert not torch.allclose(runs[0], runs[2])
    # eta = 0 is the deterministic solver: no noise, same result with any generator
    a = SAMPLERS["dpmpp_2m_sde"](data, x, grid, eta=0.0, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, SAMPLERS["dpmpp_2m"](data, x, grid))

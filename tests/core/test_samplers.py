"""Contracts over the whole sampler registry, checked against closed-form truths (core/analytic.py).

Every sampler in ``SAMPLERS`` (including ones registered later by other modules) must: share one keyword
signature; run on 3-, 4- and 5-dimensional tensors; be reproducible under a generator; give each row of
a batch exactly what that row gives alone under per-sample generators; never call D at sigma = 0.
Deterministic samplers must converge to the exact probability-flow ODE map of a Gaussian at their order;
stochastic ones must sample the right distribution as steps grow. All in float64 on small dims.
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from polydiff.core.analytic import GaussianMixture, random_mixture
from polydiff.core.grids import karras_sigmas, logsnr_uniform_sigmas
from polydiff.core.samplers import SAMPLERS, STOCHASTIC
from polydiff.core.samplers.ddim import slerp
from polydiff.core.samplers.multistep import gauss_legendre, lms_weights
from polydiff.core.utils import seeded_generators

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
DETERMINISTIC = sorted(set(SAMPLERS) - STOCHASTIC)

# Every stochastic sampler with its defaults, plus the stochastic settings of samplers that default to
# deterministic (or to another variant); each is checked like a stochastic sampler.
STOCHASTIC_CASES = [(name, {}) for name in sorted(STOCHASTIC)] + [
    ("ddim", {"eta": 1.0}),
    ("heun", {"S_churn": 40.0}),
    ("ddpm", {"variance": "large"}),
    ("pc", {"predictor": "euler_maruyama"}),
]

# Annealed Langevin samples each level with Langevin steps, not by integrating between levels: NCSN's
# geometric levels (sigma_1 ~ the data's diameter), alpha_L = step_lr = sigma_L^2 and 10 steps per level.
LANGEVIN_SETUP = {
    "grid": lambda n: logsnr_uniform_sigmas(n, 0.01, 10.0),
    "options": {"step_lr": 0.01**2, "n_steps_each": 10},
    "steps": 64,
}
# Contract tests (shapes, seeds, batching) need no accuracy: fewer inner steps keep them quick.
CONTRACT_OPTIONS = {"annealed_langevin": {"n_steps_each": 3}}


def case_id(case) -> str:
    name, options = case
    return name + "".join(f"[{k}={v}]" for k, v in options.items())


def make_mixture(kind: str, shape=(2,)) -> GaussianMixture:
    """The data of each test: 'gaussian' (one low-rank-plus-isotropic component, so the PF-ODE map is
    known in closed form), 'mixture' (3 overlapping components) or 'separated' (3 isotropic 2-D components
    >= 16 stds apart with weights 0.2 / 0.3 / 0.5)."""
    dim = math.prod(shape)
    if kind == "gaussian":
        return random_mixture(dim, components=1, rank=1, std=0.5, spread=1.0, shape=shape, seed=1)
    if kind == "mixture":
        return random_mixture(dim, components=3, rank=1, std=0.4, spread=1.0, shape=shape, seed=2)
    if kind == "separated":
        means = torch.tensor([[-2.5, 0.0], [2.5, 0.0], [0.0, 4.0]], dtype=torch.float64)
        return GaussianMixture(means, torch.tensor(0.3), weights=torch.tensor([0.2, 0.3, 0.5]))
    raise ValueError(kind)


def sample(name, mixture, n, steps, *, seed=0, generator=None, options=None, grid=None, denoiser=None, **kw):
    """Run sampler ``name`` on ``denoiser`` (default: the mixture's exact one) from sigma_max * noise, on a
    Karras grid or ``grid(steps)``, with ``generator`` or a seeded one for both; returns (x_T, samples)."""
    sigmas = karras_sigmas(steps, SIGMA_MIN, SIGMA_MAX) if grid is None else grid(steps)
    g = torch.Generator().manual_seed(seed) if generator is None else generator
    x = mixture.prior(n, float(sigmas[0]), g)
    return x, SAMPLERS[name](denoiser or mixture, x, sigmas, generator=g, **(options or {}), **kw)


# ---------------------------------------------------------------------------------------------------
# Contracts over the registry


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_signature(name):
    params = list(inspect.signature(SAMPLERS[name]).parameters.values())
    assert [p.name for p in params[:3]] == ["denoiser", "x", "sigmas"]
    assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params[:3])
    keyword = {p.name: p for p in params[3:]}
    for required in ("cond", "generator", "callback"):
        assert keyword[required].kind is inspect.Parameter.KEYWORD_ONLY and keyword[required].default is None
    # every option is keyword-only with a default, so sampler(D, x, sigmas) always works
    assert all(p.kind in (p.KEYWORD_ONLY, p.VAR_KEYWORD) for p in params[3:])
    assert all(p.default is not p.empty for p in params[3:] if p.kind is p.KEYWORD_ONLY)


class RecordingDenoiser:
    """Wraps a mixture and records every sigma and cond it is called with."""

    def __init__(self, mixture):
        self.mixture, self.sigmas, self.conds = mixture, [], []

    def __call__(self, x, sigma, cond=None):
        self.sigmas.append(sigma.clone())
        self.conds.append(cond)
        return self.mixture(x, sigma, cond)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize(
    "shape, dtype",
    [((2, 3), torch.float64), ((1, 2, 3), torch.float64), ((1, 1, 2, 3), torch.float64), ((1, 2, 3), torch.float32)],
)
def test_shapes_dtypes_callback(name, shape, dtype):
    denoiser = RecordingDenoiser(make_mixture("mixture", shape))
    sigmas = karras_sigmas(6, SIGMA_MIN, SIGMA_MAX)
    x = SIGMA_MAX * torch.randn(3, *shape, generator=torch.Generator().manual_seed(0), dtype=dtype)
    seen, cond = [], {"tag": torch.arange(3)}
    options = CONTRACT_OPTIONS.get(name, {})
    g = torch.Generator().manual_seed(1)
    out = SAMPLERS[name](denoiser, x, sigmas, cond=cond, generator=g, callback=seen.append, **options)
    assert out.shape == x.shape and out.dtype == dtype and bool(out.isfinite().all())
    assert all(s.shape == (3,) and bool((s > 0).all()) for s in denoiser.sigmas), "D called at sigma <= 0"
    assert all(c is cond for c in denoiser.conds), "cond not passed through to D"
    assert [info["i"] for info in seen] == list(range(len(sigmas) - 1))
    assert [float(info["sigma"]) for info in seen] == pytest.approx(sigmas[:-1].tolist())
    assert [float(info["sigma_next"]) for info in seen] == pytest.approx(sigmas[1:].tolist())
    assert torch.equal(seen[-1]["x"], out) and seen[-1]["denoised"].shape == x.shape


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_rejects_grid_not_ending_at_zero(name):
    mixture = make_mixture("gaussian")
    with pytest.raises(ValueError):
        SAMPLERS[name](mixture, torch.randn(2, 2, dtype=torch.float64), karras_sigmas(4, 0.1, 10.0)[:-1])


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_reproducible_under_generator(name):
    mixture = make_mixture("mixture", (2, 3))
    options = CONTRACT_OPTIONS.get(name, {})
    runs = [sample(name, mixture, 4, 8, seed=s, options=options)[1] for s in (5, 5, 6)]
    assert torch.equal(runs[0], runs[1])
    if name in STOCHASTIC:
        assert not torch.allclose(runs[0], runs[2]), "different seeds gave the same samples"
    else:  # a deterministic sampler draws nothing: the generator's state is untouched
        g = torch.Generator().manual_seed(3)
        state = g.get_state()
        sigmas = karras_sigmas(8, SIGMA_MIN, SIGMA_MAX)
        SAMPLERS[name](mixture, SIGMA_MAX * torch.randn(4, 2, 3, dtype=torch.float64), sigmas, generator=g, **options)
        assert torch.equal(g.get_state(), state)


@pytest.mark.parametrize("case", [(n, {}) for n in DETERMINISTIC] + STOCHASTIC_CASES, ids=case_id)
def test_per_sample_generators(case):
    """Seeds [a, b] in one batch give exactly (torch.equal, float64) what a and b give one at a time."""
    name, options = case
    options = {**CONTRACT_OPTIONS.get(name, {}), **options}
    mixture = make_mixture("mixture", (2, 3))
    seeds = [11, 12]
    _, both = sample(name, mixture, 2, 8, generator=seeded_generators(seeds), options=options)
    for row, seed in enumerate(seeds):
        _, alone = sample(name, mixture, 1, 8, generator=seeded_generators([seed]), options=options)
        assert torch.equal(both[row : row + 1], alone)


@pytest.mark.parametrize("case", [(n, {}) for n in DETERMINISTIC] + STOCHASTIC_CASES, ids=case_id)
def test_a_noise_function_serves_as_the_generator(case):
    """``randn_like``'s noise function: given noise(like) = the generator's next draw, a sampler returns exactly
    what it returns with the generator (the same calls, shapes and order), so a caller may supply per-step noise
    from anywhere (e.g. by absolute position); a deterministic sampler never calls it."""
    name, options = case
    options = {**CONTRACT_OPTIONS.get(name, {}), **options}
    mixture = make_mixture("mixture", (2, 3))
    sigmas = karras_sigmas(8, SIGMA_MIN, SIGMA_MAX)
    x = mixture.prior(3, float(sigmas[0]), torch.Generator().manual_seed(0))
    with_generator = SAMPLERS[name](mixture, x, sigmas, generator=torch.Generator().manual_seed(1), **options)
    g, shapes = torch.Generator().manual_seed(1), []

    def noise(like):
        shapes.append(like.shape)
        return torch.randn(like.shape, generator=g, dtype=like.dtype)

    assert torch.equal(SAMPLERS[name](mixture, x, sigmas, generator=noise, **options), with_generator)
    assert all(shape == x.shape for shape in shapes) and bool(shapes) == (name in STOCHASTIC or bool(case[1]))


# ---------------------------------------------------------------------------------------------------
# Deterministic samplers: convergence to the exact PF-ODE solution


# Measured order p = log2(err(N/2) / err(N)) on the Karras grid's interior, N = 64 -> 128. Euler and DDIM
# (= Euler in sigma) are first order; Heun second; PLMS uses equal-step Adams-Bashforth weights, which on a
# graded grid leave a second-order consistency error; LMS's grid-exact Lagrange weights reach >= 3
# (order 4 with a low-order warm-up). Any other deterministic sampler (DPM-Solver++, UniPC, ...) is
# expected to be at least second order.
ORDER_BOUNDS = {"euler": (0.9, 1.2), "ddim": (0.9, 1.2), "heun": (1.8, 2.4), "plms": (1.8, 2.4), "lms": (3.0, 5.0)}
HIGH_ORDER = (1.8, 6.0)
CONVERGENCE_STEPS = (16, 32, 64, 128)


def pf_ode_errors(name, steps):
    """Max-abs errors against GaussianMixture.ode_solution after the step landing on sigma_min (the grid's
    last nonzero level: 'interior') and after the final step to sigma = 0 ('final')."""
    mixture = make_mixture("gaussian", (4,))
    captured = {}

    def keep_interior(info):
        if info["i"] == steps - 2:
            captured["x"] = info["x"]

    x, out = sample(name, mixture, 16, steps, callback=keep_interior)
    interior = (captured["x"] - mixture.ode_solution(x, SIGMA_MAX, SIGMA_MIN)).abs().max().item()
    final = (out - mixture.ode_solution(x, SIGMA_MAX, 0.0)).abs().max().item()
    return interior, final


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_pf_ode_convergence_order(name):
    """The order is read on the interior because the last step, sigma_min -> 0, has a fixed length on a
    Karras grid: it adds an error that does not shrink with N (O(sigma_min^2 / lambda) ~ 1e-5 here, for
    the first-order jump x <- D(x, sigma_min) that samplers take there), so the final output is checked
    against the exact map to sigma = 0 with that floor instead."""
    errors = [pf_ode_errors(name, n) for n in CONVERGENCE_STEPS]
    interior = [e[0] for e in errors]
    orders = [math.log2(a / b) for a, b in zip(interior, interior[1:])]
    assert all(b < a for a, b in zip(interior, interior[1:])), f"{name}: errors {interior} do not decrease"
    lo, hi = ORDER_BOUNDS.get(name, HIGH_ORDER)
    assert lo <= orders[-1] <= hi, f"{name}: measured orders {orders}, errors {interior}"
    final = errors[-1][1]
    assert final <= 1.05 * interior[-1] + 1e-4, f"{name}: final error {final} vs interior {interior[-1]}"


def test_ddim_eta0_equals_euler():
    """DDIM's deterministic step in sigma form is the Euler step of the PF ODE (Song et al. 2021, sec. 4.3)."""
    mixture = make_mixture("mixture", (2, 3))
    _, ddim = sample("ddim", mixture, 8, 10)
    _, euler = sample("euler", mixture, 8, 10)
    torch.testing.assert_close(ddim, euler, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------------
# Stochastic samplers: convergence in distribution

DISTRIBUTION_SAMPLES = 4000


def distribution_setup(name, options, steps):
    """Grid, steps and options per case. 'pc' runs with norms='batch' here: its per-sample step-size rule
    inflates the variance by ~(D + 2) / D (see ``langevin_corrector``), which is large in D = 2 and is
    checked on its own in ``test_pc_per_sample_norms_need_high_dimension``."""
    if name == "annealed_langevin":
        return LANGEVIN_SETUP["grid"], LANGEVIN_SETUP["steps"], {**LANGEVIN_SETUP["options"], **options}
    if name == "pc":
        options = {"norms": "batch", **options}
    return None, steps, options


def whitened_moment_errors(mixture, out):
    """For a single Gaussian N(mu, Sigma): max |mean of L^-1 (x - mu)| in standard errors, the relative
    error of the pooled variance tr(Cov(L^-1 (x - mu))) / D and of the variance along Sigma's top
    eigenvector, each with its standard error."""
    n, dim = out.shape[0], mixture.dim
    cov = mixture.covariance(0)
    centred = out.reshape(n, dim) - mixture.means  # (n, D)
    w = torch.linalg.solve_triangular(torch.linalg.cholesky(cov), centred.T, upper=False).T  # (n, D)
    lam, vectors = torch.linalg.eigh(cov)
    mean_z = (w.mean(0).abs().max() * math.sqrt(n)).item()
    pooled = (w.var(0).mean() - 1).item(), math.sqrt(2 / (n * dim))
    top = (centred @ vectors[:, -1]).var().item() / lam[-1].item() - 1, math.sqrt(2 / n)
    return mean_z, pooled, top


def check_moments(case, steps, n, allowance):
    """Mean within 5 standard errors; variances within 5 standard errors plus ``allowance`` for the
    sampler's own bias at this many steps (first-order samplers: ~1/N)."""
    name, options = case
    grid, steps, options = distribution_setup(name, options, steps)
    mixture = make_mixture("gaussian")
    _, out = sample(name, mixture, n, steps, options=options, grid=grid)
    mean_z, (pooled, pooled_se), (top, top_se) = whitened_moment_errors(mixture, out)
    assert mean_z <= 5, f"mean off by {mean_z:.1f} standard errors"
    assert abs(pooled) <= 5 * pooled_se + allowance, f"pooled variance off by {pooled:+.4f}"
    assert abs(top) <= 5 * top_se + allowance, f"top-direction variance off by {top:+.4f}"


@pytest.mark.parametrize("case", STOCHASTIC_CASES, ids=case_id)
def test_stochastic_moments(case):
    """4000 samples, 256 steps (annealed Langevin: 64 levels x 10). Measured variance errors here are
    within 2-4% for the first-order samplers (ddpm / ancestral -2.9%, euler_maruyama +3.7%, pc +3.2% of
    which ~r^2 = 2.6% is the corrector's) and +6.2% for annealed Langevin, hence the 6% allowance."""
    check_moments(case, steps=256, n=DISTRIBUTION_SAMPLES, allowance=0.06)


@pytest.mark.slow
@pytest.mark.parametrize("case", STOCHASTIC_CASES, ids=case_id)
def test_stochastic_moments_fine(case):
    """20000 samples, 1024 steps: the first-order bias falls below ~1.5%; pc keeps its ~r^2 corrector bias."""
    check_moments(case, steps=1024, n=20000, allowance=0.03)


@pytest.mark.parametrize("case", STOCHASTIC_CASES, ids=case_id)
def test_stochastic_mixture_weights(case):
    """The fraction of samples assigned to each component of a well-separated mixture matches its weight
    within 5 multinomial standard errors plus 1% (mode weights are fixed at large sigma)."""
    name, options = case
    grid, steps, options = distribution_setup(name, options, 64)
    mixture = make_mixture("separated")
    _, out = sample(name, mixture, DISTRIBUTION_SAMPLES, steps, options=options, grid=grid)
    counts = torch.bincount(mixture.responsibilities(out, 1e-3).argmax(1), minlength=3)
    frequencies, weights = counts / DISTRIBUTION_SAMPLES, mixture.log_weights.exp()
    tolerance = 5 * (weights * (1 - weights) / DISTRIBUTION_SAMPLES).sqrt() + 0.01
    assert bool(((frequencies - weights).abs() <= tolerance).all()), f"{frequencies} vs {weights}"


def test_pc_per_sample_norms_need_high_dimension():
    """pc's default per-sample snr rule is meant for high-dimensional data (``langevin_corrector``): in
    D = 64 the variance is still inflated (measured +9.6%, against +3% with norms='batch'), which this test
    bounds from both sides; in D = 2 the chain diverges."""
    mixture = make_mixture("gaussian", (64,))
    _, out = sample("pc", mixture, 1000, 64)
    mean_z, (pooled, pooled_se), _ = whitened_moment_errors(mixture, out)
    assert mean_z <= 5
    assert 0.0 < pooled <= 5 * pooled_se + 0.12


# ---------------------------------------------------------------------------------------------------
# Sampler-specific truths


class ConstantVariance:
    """A mixture denoiser that also 'predicts' a constant improved-DDPM variance weight v."""

    def __init__(self, mixture, v: float | None):
        self.mixture, self.v = mixture, v

    def __call__(self, x, sigma, cond=None):
        return self.mixture(x, sigma, cond)

    def denoise_with_variance(self, x, sigma, cond=None):
        v = None if self.v is None else torch.full_like(x, self.v)
        return self.mixture(x, sigma, cond), v


@pytest.mark.parametrize("v, fixed", [(0.0, "small"), (1.0, "large")])
def test_ddpm_learned_variance_interpolates(v, fixed):
    """log var = v log beta + (1 - v) log beta_tilde (improved DDPM eq. 15): v = 0 is 'small', v = 1 'large'."""
    mixture = make_mixture("mixture", (2, 3))
    _, learned = sample("ddpm", mixture, 6, 12, denoiser=ConstantVariance(mixture, v), options={"variance": "learned"})
    _, reference = sample("ddpm", mixture, 6, 12, options={"variance": fixed})
    torch.testing.assert_close(learned, reference, rtol=1e-12, atol=1e-12)


def test_ddpm_learned_needs_a_variance():
    mixture = make_mixture("gaussian")
    with pytest.raises(TypeError, match="denoise_with_variance"):
        sample("ddpm", mixture, 2, 4, options={"variance": "learned"})
    with pytest.raises(ValueError, match="no variance"):
        sample("ddpm", mixture, 2, 4, denoiser=ConstantVariance(mixture, None), options={"variance": "learned"})


def test_ancestral_steps_agree():
    """DDPM's posterior (beta_tilde) step, DDIM with eta = 1 and ancestral Euler with eta = 1 are the same
    step in sigma form (common.ancestral_split); with equal noise they give equal samples."""
    mixture = make_mixture("mixture", (2, 3))
    ddpm = sample("ddpm", mixture, 6, 12)[1]
    ddim = sample("ddim", mixture, 6, 12, options={"eta": 1.0})[1]
    ancestral = sample("euler_ancestral", mixture, 6, 12)[1]
    torch.testing.assert_close(ddpm, ancestral, rtol=1e-12, atol=1e-12)
    assert torch.equal(ddim, ancestral)


def test_slerp():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(2, 3, 4, 4, generator=g, dtype=torch.float64).unbind(0)
    z0, z1 = z0[None], z1[None] * z0.norm() / z1.norm()  # (1, 3, 4, 4), equal norms
    alphas = torch.linspace(0, 1, 5, dtype=torch.float64)
    path = slerp(z0, z1, alphas)  # (5, 3, 4, 4)
    assert path.shape == (5, 3, 4, 4)
    torch.testing.assert_close(path[0], z0[0])
    torch.testing.assert_close(path[-1], z1[0])
    theta = torch.arccos((z0 * z1).sum() / (z0.norm() * z1.norm()))
    angle_to_z0 = torch.arccos((path * z0).flatten(1).sum(1) / (path.flatten(1).norm(dim=1) * z0.norm()))
    torch.testing.assert_close(angle_to_z0, alphas * theta)  # constant angular speed along the arc
    torch.testing.assert_close(path.flatten(1).norm(dim=1), z0.norm().expand(5))  # stays on the sphere
    torch.testing.assert_close(slerp(z0, z0, 0.3), z0)  # parallel: falls back to lerp


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_lms_weights_integrate_polynomials_exactly(order):
    """sum_j c_j p(s_j) = int_{s_0}^{s_next} p for every polynomial of degree < order (Lagrange)."""
    nodes, sigma_next = [3.0, 4.5, 7.0, 11.0, 20.0][:order], 1.7
    weights = lms_weights(nodes, sigma_next)
    for degree in range(order):
        exact = (sigma_next ** (degree + 1) - nodes[0] ** (degree + 1)) / (degree + 1)
        assert sum(w * s**degree for w, s in zip(weights, nodes)) == pytest.approx(exact, rel=1e-12)
    points, gl_weights = gauss_legendre(order)
    assert sum(gl_weights) == pytest.approx(2.0) and len(points) == order

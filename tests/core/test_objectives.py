"""Objectives against analytic truths on isotropic Gaussian data N(mu, s^2 I), whose exact denoiser is linear:

    D*(x, sigma) = a*(sigma) x + b*(sigma),   a* = s^2 / (s^2 + sigma^2),   b* = (1 - a*) mu,

and whose posterior variance Var[x0 | x] = s^2 sigma^2 / (s^2 + sigma^2) is known.
"""

import math

import pytest
import torch
from torch import nn

from polydiff.core import objectives as O
from polydiff.core.analytic import GaussianMixture
from polydiff.core.noise_levels import LogNormal
from polydiff.core.precond import PARAMETERIZATIONS, Precond, discrete_c_noise, x0_to_eps, x0_to_v
from polydiff.core.schedules import DiscreteSchedule, make_schedule
from polydiff.core.utils import append_dims, seeded_generators

MU, S = 0.4, 0.5
SHAPE = (2, 4)  # (C, L): channels on dim 1, as a learned-variance Precond needs
SIGMA_DATA = 0.5


pytestmark = pytest.mark.usefixtures("float64")


def _gaussian() -> GaussianMixture:
    return GaussianMixture(torch.full((1, 8), MU), torch.tensor([S]), shape=SHAPE)


def _data(n: int, seed: int = 0) -> torch.Tensor:
    return _gaussian().sample(n, torch.Generator().manual_seed(seed))[0]


class DenoiserBackbone(nn.Module):
    """The backbone F that makes Precond(F, parameterization) equal a given denoiser d:
    F = (d(x, sigma) - c_skip x) / c_out at x = x_in / c_in (c_noise = sigma itself). ``v`` adds constant
    learned-variance channels (the Precond maps the raw 2v - 1 back to v)."""

    def __init__(self, denoiser, parameterization: str, v: float | None = None):
        super().__init__()
        self.denoiser, self.coeffs, self.v = denoiser, PARAMETERIZATIONS[parameterization].coeffs, v

    def forward(self, x_in, sigma, cond):
        c_skip, c_out, c_in = (append_dims(c, x_in.ndim) for c in self.coeffs(sigma, SIGMA_DATA))
        x = x_in / c_in
        out = (self.denoiser(x, sigma, cond) - c_skip * x) / c_out
        if self.v is None:
            return out
        return torch.cat([out, torch.full_like(out, 2 * self.v - 1)], dim=1)


def _precond(denoiser, parameterization: str, v: float | None = None) -> Precond:
    backbone = DenoiserBackbone(denoiser, parameterization, v)
    learned = v is not None
    return Precond(backbone, parameterization, c_noise=lambda s: s, sigma_data=SIGMA_DATA, learned_variance=learned)


def _offset(denoiser, delta: float = 0.1):
    return lambda x, sigma, cond=None: denoiser(x, sigma, cond) + delta


def _scaled(denoiser, factor: float = 1.1):
    return lambda x, sigma, cond=None: MU + factor * (denoiser(x, sigma, cond) - MU)


SIGMAS = torch.logspace(-2, 1.5, 8)  # 0.01 .. 31.6
PARAMS = sorted(PARAMETERIZATIONS)


def _fixed_sigma_losses(model, weighting, n_per_sigma: int = 256, seed: int = 1):
    """Per-sample loss at each of SIGMAS, common random numbers: (len(SIGMAS) * n_per_sigma,)."""
    x0 = _data(len(SIGMAS) * n_per_sigma, seed)
    sigma = SIGMAS.repeat_interleave(n_per_sigma)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed + 1))
    return O.denoising_loss(model, x0, sigma, noise, weighting), x0, sigma, noise


# ---------------------------------------------------------------------------------------------------
# Weighting identities


def test_weighting_identities():
    sigma = torch.logspace(-3, 2, 50)
    snr = sigma.pow(-2)
    c_out = {p: PARAMETERIZATIONS[p].coeffs(sigma, SIGMA_DATA)[1] for p in PARAMS}
    simple = O.Simple()
    torch.testing.assert_close(simple(sigma, c_out["eps"]), snr)  # eps: c_out^2 = sigma^2
    torch.testing.assert_close(simple(sigma, c_out["v"]), snr + 1)  # v: c_out^2 = sigma^2 / (1 + sigma^2)
    torch.testing.assert_close(simple(sigma, c_out["x0"]), torch.ones(50))
    edm = O.EDMWeighting(SIGMA_DATA)
    torch.testing.assert_close(simple(sigma, c_out["edm"]), edm(sigma, None))
    torch.testing.assert_close(edm(sigma, None) * c_out["edm"] ** 2, torch.ones(50))  # unit weight on F
    torch.testing.assert_close(O.SNRWeighting()(sigma, None), snr)
    torch.testing.assert_close(O.MinSNR(5.0)(sigma, None), torch.minimum(snr, torch.tensor(5.0)))
    # soft-min-SNR: harmonic soft minimum, between min/2 and min; default gamma = sigma_data^-2 reproduces
    # k-diffusion's F-space weight (sigma sigma_data)^2 / (sigma^2 + sigma_data^2)^2 under EDM preconditioning.
    soft = O.SoftMinSNR(gamma=5.0)(sigma, None)
    torch.testing.assert_close(soft, snr * 5 / (snr + 5))
    hard = torch.minimum(snr, torch.tensor(5.0))
    assert bool((soft <= hard).all() and (soft >= hard / 2).all())
    soft_default = O.SoftMinSNR(sigma_data=SIGMA_DATA)(sigma, None) * c_out["edm"] ** 2
    torch.testing.assert_close(soft_default, (sigma * SIGMA_DATA) ** 2 / (sigma**2 + SIGMA_DATA**2) ** 2)


def test_weighting_validation():
    with pytest.raises(ValueError, match="gamma"):
        O.MinSNR(gamma=0.0)
    with pytest.raises(ValueError, match="sigma_data"):
        O.EDMWeighting(sigma_data=-1.0)


# ---------------------------------------------------------------------------------------------------
# The same model in every parameterization


@pytest.mark.parametrize("weighting_name", ["snr", "min_snr", "edm", "soft_min_snr"])
def test_x0_space_weightings_agree_across_parameterizations(weighting_name):
    """An (imperfect) denoiser written as eps, x0, v or EDM Precond, or passed plain, gets the same loss under
    any weighting defined on the x0 error: c_out^2 ||F - F_target||^2 = ||D - x0||^2."""
    weighting = O.WEIGHTINGS[weighting_name]()
    model = _offset(_gaussian())
    plain = _fixed_sigma_losses(model, weighting)[0]
    for p in PARAMS:
        torch.testing.assert_close(_fixed_sigma_losses(_precond(model, p), weighting)[0], plain, rtol=1e-6, atol=1e-12)


def test_min_snr_in_each_output_space():
    """Hang et al. 2023: the one weighting min(SNR, gamma) on x0 error reads eps-MSE min(SNR, gamma) / SNR
    and v-MSE min(SNR, gamma) / (SNR + 1); each form computed by hand from the model's outputs."""
    model = _offset(_gaussian())
    weighting, gamma = O.MinSNR(5.0), 5.0
    loss, x0, sigma, noise = _fixed_sigma_losses(model, weighting)
    x = x0 + append_dims(sigma, x0.ndim) * noise
    x0_hat = model(x, sigma)
    snr = sigma.pow(-2)
    min_snr = snr.clamp(max=gamma)

    def mse(a, b):
        return (a - b).pow(2).flatten(1).mean(1)

    eps_form = mse(x0_to_eps(x0_hat, x, sigma), noise) * min_snr / snr
    v_form = mse(x0_to_v(x0_hat, x, sigma), x0_to_v(x0, x, sigma)) * min_snr / (snr + 1)
    x0_form = mse(x0_hat, x0) * min_snr
    for form in (eps_form, v_form, x0_form):
        torch.testing.assert_close(loss, form, rtol=1e-6, atol=1e-12)
    for p in ("eps", "v", "x0"):
        loss_p = _fixed_sigma_losses(_precond(model, p), weighting)[0]
        torch.testing.assert_close(loss_p, x0_form, rtol=1e-6, atol=1e-12)


def test_simple_is_the_mse_in_each_output_space():
    """'simple' = unweighted MSE of what the network outputs: eps-MSE (Ho et al. eq. 14), v-MSE = (SNR + 1)
    x0-MSE, x0-MSE; a plain denoiser counts as an x0 predictor."""
    model = _offset(_gaussian())
    _, x0, sigma, noise = _fixed_sigma_losses(model, O.Simple())
    x = x0 + append_dims(sigma, x0.ndim) * noise
    x0_mse = (model(x, sigma) - x0).pow(2).flatten(1).mean(1)
    snr = sigma.pow(-2)
    expected = {"eps": snr * x0_mse, "v": (snr + 1) * x0_mse, "x0": x0_mse}
    for p, value in expected.items():
        torch.testing.assert_close(_fixed_sigma_losses(_precond(model, p), O.Simple())[0], value, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(_fixed_sigma_losses(model, O.Simple())[0], x0_mse)


# ---------------------------------------------------------------------------------------------------
# The L1 norm of the same weighted residual


class KnownOutput(nn.Module):
    """A backbone that outputs a given tensor (B, *S) whatever its input: a known prediction."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, x_in, c_noise, cond):
        return self.out


def test_l1_of_a_known_eps_prediction_is_the_mean_absolute_error_of_eps():
    """WaveGrad's loss ||eps - eps_theta||_1 (Chen et al. 2021, Algorithm 1), as a mean over elements: with eps
    prediction and 'simple' weighting, a backbone that predicts eps_theta scores mean|eps - eps_theta| (and
    mean (eps - eps_theta)^2 under 'l2'), by hand, at every noise level."""
    g = torch.Generator().manual_seed(0)
    x0, noise, eps_theta = (torch.randn(5, *SHAPE, generator=g) for _ in range(3))
    sigma = torch.tensor([0.01, 0.1, 1.0, 10.0, 100.0])
    model = Precond(KnownOutput(eps_theta), "eps", c_noise=lambda s: s)
    l1 = O.denoising_loss(model, x0, sigma, noise, O.Simple(), norm="l1")
    torch.testing.assert_close(l1, (noise - eps_theta).abs().mean(dim=(1, 2)))
    l2 = O.denoising_loss(model, x0, sigma, noise, O.Simple())
    torch.testing.assert_close(l2, (noise - eps_theta).pow(2).mean(dim=(1, 2)))


@pytest.mark.parametrize("parameterization", PARAMS)
def test_l1_keeps_each_weightings_meaning_in_every_parameterization(parameterization):
    """'l1' is the mean |sqrt(lambda) (D - x0)|: under 'snr' the L1 of eps, (x - D) / sigma against the noise,
    and under 'min_snr' sqrt(min(SNR, gamma)) |D - x0|, whatever the network predicts."""
    denoiser = _offset(_gaussian())
    model = _precond(denoiser, parameterization)
    x0 = _data(len(SIGMAS) * 16, seed=3)
    sigma = SIGMAS.repeat_interleave(16)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4))
    x = x0 + append_dims(sigma, x0.ndim) * noise
    error = denoiser(x, sigma) - x0
    eps_l1 = (x0_to_eps(denoiser(x, sigma), x, sigma) - noise).abs().flatten(1).mean(1)
    snr = O.denoising_loss(model, x0, sigma, noise, O.SNRWeighting(), norm="l1")
    torch.testing.assert_close(snr, eps_l1, rtol=1e-6, atol=1e-12)
    min_snr = O.denoising_loss(model, x0, sigma, noise, O.MinSNR(5.0), norm="l1")
    expected = sigma.pow(-2).clamp(max=5.0).sqrt() * error.abs().flatten(1).mean(1)
    torch.testing.assert_close(min_snr, expected, rtol=1e-6, atol=1e-12)


def test_the_norm_is_checked_and_routed():
    with pytest.raises(ValueError, match="norm must be one of l2, l1"):
        O.Objective(LogNormal(), O.Simple(), "l3")
    with pytest.raises(ValueError, match="norm"):
        O.HybridLoss(make_schedule("cosine", num_steps=10), norm="abs")
    assert O.make_objective("lognormal", "simple", norm="l1").norm == "l1"
    model, x0 = _precond(_offset(_gaussian()), "eps"), _data(4)
    objective = O.make_objective("lognormal", "simple", norm="l1")
    draws = objective.draw(x0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(objective.loss(model, x0, draws),
                               O.denoising_loss(model, x0, draws["sigma"], draws["noise"], O.Simple(), norm="l1"))


# ---------------------------------------------------------------------------------------------------
# The exact denoiser is the minimiser


@pytest.mark.parametrize("parameterization", PARAMS)
@pytest.mark.parametrize("weighting_name", sorted(O.WEIGHTINGS))
def test_exact_denoiser_beats_perturbed_ones(parameterization, weighting_name):
    """At each fixed sigma the exact denoiser's weighted loss is below that of an offset (+0.1) and a
    stretched (1.1 x around mu) denoiser; common random numbers, 256 samples per sigma."""
    weighting = O.WEIGHTINGS[weighting_name]()
    exact = _fixed_sigma_losses(_precond(_gaussian(), parameterization), weighting)[0]
    for wrong in (_offset(_gaussian()), _scaled(_gaussian())):
        worse = _fixed_sigma_losses(_precond(wrong, parameterization), weighting)[0]
        per_sigma = (worse - exact).reshape(len(SIGMAS), -1).mean(1)  # (8,)
        assert bool((per_sigma > 0).all()), per_sigma


SMALL = DiscreteSchedule(torch.tensor([0.9, 0.5, 0.2, 0.05]))  # sigma = 0.33, 1, 2, 4.4


class PerLevelLinear(nn.Module):
    """F(x_in, c_noise) = A_k x_in + B_k with level k = round(c_noise): linear in x at every level, so
    D = c_skip x + c_out F can reach the exact a* x + b*. As a plain denoiser it is D = A_k x + B_k."""

    def __init__(self, levels: int):
        super().__init__()
        self.A, self.B = nn.Parameter(torch.zeros(levels)), nn.Parameter(torch.zeros(levels))

    def forward(self, x, level, cond=None):
        k = level.round().long()
        return append_dims(self.A[k], x.ndim) * x + append_dims(self.B[k], x.ndim)

    def effective(self, parameterization: str | None):
        """(a, b) of the denoiser D = a x + b at each level: a = c_skip + c_out c_in A, b = c_out B."""
        if parameterization is None:
            return self.A.detach(), self.B.detach()
        c_skip, c_out, c_in = PARAMETERIZATIONS[parameterization].coeffs(SMALL.sigmas, SIGMA_DATA)
        return (c_skip + c_out * c_in * self.A).detach(), (c_out * self.B).detach()


@pytest.mark.parametrize(
    "parameterization,weighting_name",
    [("eps", "simple"), ("v", "min_snr"), ("x0", "snr"), ("edm", "edm"), (None, "soft_min_snr")],
)
def test_fitting_a_linear_model_recovers_the_exact_denoiser(parameterization, weighting_name):
    """Minimising the objective over SMALL's 4 levels (the same draws at every evaluation, 4096 samples x 8
    dims; L-BFGS, as the loss is quadratic in the parameters) recovers a*(sigma) and b*(sigma) within 0.02 at
    every level (the sampling error of the least-squares optimum, measured: 0.007 in a, 0.012 in b)."""
    net = PerLevelLinear(SMALL.num_steps)
    model = net if parameterization is None else Precond(
        net, parameterization, c_noise=discrete_c_noise(SMALL), sigma_data=SIGMA_DATA
    )
    if parameterization is None:
        model = lambda x, sigma, cond=None: net(x, SMALL.sigma_to_index(sigma))  # noqa: E731
    objective = O.make_objective("discrete", weighting_name, schedule=SMALL)
    x0 = _data(4096, seed=2)
    opt = torch.optim.LBFGS(net.parameters(), max_iter=100, tolerance_grad=1e-12, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = objective(model, x0, generator=torch.Generator().manual_seed(3)).mean()
        loss.backward()
        return loss

    opt.step(closure)
    a, b = net.effective(parameterization)
    sigma2 = SMALL.sigmas**2
    a_star = S**2 / (S**2 + sigma2)
    torch.testing.assert_close(a, a_star, atol=0.02, rtol=0)
    torch.testing.assert_close(b, (1 - a_star) * MU, atol=0.02, rtol=0)


# ---------------------------------------------------------------------------------------------------
# Objective plumbing


def test_objective_per_sample_generators_and_reproducibility():
    objective = O.make_objective("lognormal", "edm")
    model = _precond(_offset(_gaussian()), "edm")
    x0 = _data(3)
    batch = objective(model, x0, generator=seeded_generators([5, 6, 7]))
    single = torch.cat([objective(model, x0[i : i + 1], generator=seeded_generators([5 + i])) for i in range(3)])
    torch.testing.assert_close(batch, single)
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    assert torch.equal(objective(model, x0, generator=g()), objective(model, x0, generator=g()))


def test_make_objective_routes_keywords():
    schedule = make_schedule("cosine", num_steps=10)
    objective = O.make_objective("discrete", "min_snr", schedule=schedule, gamma=3.0)
    assert objective.weighting == O.MinSNR(3.0) and objective.noise_levels.schedule is schedule
    edm = O.make_objective(p_mean=-1.0, sigma_data=0.7)
    assert edm.noise_levels == LogNormal(p_mean=-1.0) and edm.weighting == O.EDMWeighting(0.7)
    with pytest.raises(TypeError, match="gama"):
        O.make_objective("lognormal", "min_snr", gama=3.0)
    with pytest.raises(KeyError, match="known"):
        O.make_objective("lognormal", "p2")


# ---------------------------------------------------------------------------------------------------
# Improved DDPM's hybrid loss


class LinearWithVariance(nn.Module):
    """Mean head w x_in + c, variance head tanh(u_k) per level (raw, mapped to v = (raw + 1) / 2)."""

    def __init__(self, levels: int):
        super().__init__()
        self.w, self.c = nn.Parameter(torch.tensor(0.5)), nn.Parameter(torch.tensor(0.1))
        self.u = nn.Parameter(torch.zeros(levels))

    def forward(self, x_in, level, cond):
        raw_v = append_dims(torch.tanh(self.u[level.round().long()]), x_in.ndim).expand_as(x_in)
        return torch.cat([self.w * x_in + self.c, raw_v], dim=1)


def _hybrid_setup():
    schedule = make_schedule("cosine", num_steps=10)
    net = LinearWithVariance(10)
    model = Precond(net, "eps", c_noise=discrete_c_noise(schedule), learned_variance=True)
    return schedule, net, model


def test_hybrid_vlb_term_trains_only_the_variance():
    """Nichol & Dhariwal sec. 3.1: mu_theta in L_vlb uses a stop-gradient x0_hat, so the mean head's gradient is
    that of L_simple alone, while the variance head gets gradient only from L_vlb."""
    schedule, net, model = _hybrid_setup()
    x0 = _data(64).clamp(-1, 1)

    def grads(vlb_weight):
        net.zero_grad()
        hybrid = O.HybridLoss(schedule, vlb_weight, decoder="continuous")
        hybrid(model, x0, generator=torch.Generator().manual_seed(0)).mean().backward()
        return [p.grad.clone() for p in (net.w, net.c, net.u)]

    (w0, c0, u0), (w1, c1, u1) = grads(0.0), grads(1e-3)
    torch.testing.assert_close((w1, c1), (w0, c0))
    assert bool((u0 == 0).all()) and float(u1.abs().sum()) > 0


def test_hybrid_loss_is_simple_plus_lambda_T_times_the_term():
    """L_hybrid - L_simple = lambda T L_t (t and noise drawn in the objective's order: level, then noise)."""
    schedule, _, model = _hybrid_setup()
    x0 = _data(32)

    def run(vlb_weight):
        hybrid = O.HybridLoss(schedule, vlb_weight, decoder="continuous")
        return hybrid(model, x0, generator=torch.Generator().manual_seed(1))

    g = torch.Generator().manual_seed(1)
    index = (torch.rand(32, generator=g) * 10).floor().long()
    noise = torch.randn(x0.shape, generator=g)
    simple, term = O.HybridLoss(schedule, decoder="continuous").terms(model, x0, index, noise)
    torch.testing.assert_close(run(0.0), simple)
    torch.testing.assert_close(run(1e-3) - run(0.0), 1e-3 * 10 * term)


def _golden_section_minimum(f, lo: float = 0.0, hi: float = 1.0, tol: float = 1e-3) -> float:
    """argmin of a unimodal f on [lo, hi]."""
    r = (math.sqrt(5) - 1) / 2
    a, b = hi - r * (hi - lo), lo + r * (hi - lo)
    fa, fb = f(a), f(b)
    while hi - lo > tol:
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - r * (hi - lo)
            fa = f(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + r * (hi - lo)
            fb = f(b)
    return (lo + hi) / 2


def test_hybrid_learned_variance_optimum_is_the_analytic_one():
    """With the exact mean, E[L_{t-1}] over v is minimised where exp(v log beta_t + (1 - v) log beta_tilde_t)
    = beta_tilde_t + c_t^2 Var[x0 | x_t] (the optimal reverse variance for a given mean; Bao et al. 2022,
    Analytic-DPM), c_t = sqrt(abar_{t-1}) beta_t / (1 - abar_t). The minimising v (golden-section search on
    the hybrid loss's L_vlb term, 2048 samples x 8 dims, fixed noise) agrees within 0.03 at three levels of a
    10-level cosine schedule."""
    schedule = make_schedule("cosine", num_steps=10)
    abar, betas = schedule.alphas_cumprod, schedule.betas
    x0 = _data(2048, seed=4)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(5))
    hybrid = O.HybridLoss(schedule, decoder="continuous")
    for k in (1, 4, 7):
        index = torch.full((2048,), k)

        def vlb_at(v):
            return float(hybrid.terms(_precond(_gaussian(), "eps", v), x0, index, noise)[1].mean())

        beta_tilde = (1 - abar[k - 1]) / (1 - abar[k]) * betas[k]
        c = abar[k - 1].sqrt() * betas[k] / (1 - abar[k])
        sigma2 = (1 - abar[k]) / abar[k]
        optimal = beta_tilde + c**2 * S**2 * sigma2 / (S**2 + sigma2)
        v_star = float((optimal / beta_tilde).log() / (betas[k] / beta_tilde).log())
        assert 0.05 < v_star < 0.95
        v_fit = _golden_section_minimum(vlb_at)
        assert abs(v_fit - v_star) < 0.03, (k, v_fit, v_star)


def test_hybrid_discrete_decoder_gradients_are_finite_at_the_edge_bins():
    schedule, net, model = _hybrid_setup()
    x0 = torch.tensor([-1.0, 1.0, 0.0, 1 / 127.5])[:, None, None].expand(4, 2, 4).contiguous()
    simple, term = O.HybridLoss(schedule).terms(model, x0, torch.zeros(4, dtype=torch.long), torch.randn(4, 2, 4))
    (simple + term).sum().backward()
    assert all(bool(p.grad.isfinite().all()) for p in net.parameters())
    assert bool(term.isfinite().all())


def test_hybrid_needs_a_variance():
    schedule = make_schedule("cosine", num_steps=10)
    with pytest.raises(ValueError, match="variance"):
        O.HybridLoss(schedule)(_precond(_gaussian(), "eps"), _data(4))
    with pytest.raises(TypeError, match="DiscreteSchedule"):
        O.HybridLoss(make_schedule("vp"))

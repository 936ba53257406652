"""Guidance wrappers against the class-conditional Gaussian mixture, whose conditional and unconditional
denoisers, scores and exact noisy classifier p(y | x_sigma) are all known in closed form."""

import math

import pytest
import torch

from polydiff.core.analytic import random_mixture
from polydiff.core.conditioning import drop_conditions, null_conditions, select_conditions
from polydiff.core.guidance import classifier_free_guidance, classifier_guidance
from polydiff.core.thresholding import dynamic_thresholding, per_sample_quantile, static_thresholding
from polydiff.core.utils import seeded_generators

NULL = {"class_labels": -1}  # GaussianMixture reads labels < 0 as unconditional
SHAPES = [(2, 3), (1, 2, 3), (1, 2, 2, 2)]  # x is 3-, 4- and 5-D: (B, C, T), (B, C, H, W), (B, C, F, H, W)
SCALES = [0.0, 1.0, 2.5, 7.0]


def _problem(shape, batch=6, seed=0):
    """A 3-class mixture over ``shape``, noisy points at per-sample sigmas, and their labels."""
    gm = random_mixture(math.prod(shape), components=6, rank=1, std=0.4, spread=1.0, classes=3, shape=shape, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    labels = torch.arange(batch) % 3
    x0, _ = gm.sample(batch, g, labels=labels)
    sigma = torch.logspace(-1, 0.7, batch, dtype=torch.float64)
    x = x0 + sigma.reshape(-1, *[1] * len(shape)) * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    return gm, x, sigma, {"class_labels": labels}


def _unconditional(gm):
    return lambda x, sigma, cond=None: gm(x, sigma, None)


def _exact_classifier(gm):
    """log p(y | x_sigma) = log sum_{k in class y} r_k(x): the class is a function of the component."""

    def log_prob(x, sigma, cond):
        r = gm.responsibilities(x, sigma)  # (B, K), unconditional
        mine = gm.labels[None, :] == cond["class_labels"][:, None]  # (B, K)
        return (r * mine).sum(1).log()

    return log_prob


class Spy:
    """A denoiser that counts its calls and records their batch sizes."""

    def __init__(self, denoiser):
        self.denoiser, self.batches = denoiser, []

    def __call__(self, x, sigma, cond=None):
        assert x.shape[0] == sigma.shape[0] == cond["class_labels"].shape[0]
        self.batches.append(x.shape[0])
        return self.denoiser(x, sigma, cond)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("w", SCALES)
def test_cfg_is_the_analytic_guided_denoiser(shape, w):
    gm, x, sigma, cond = _problem(shape)
    d_c, d_u = gm(x, sigma, cond), gm(x, sigma)
    guided = classifier_free_guidance(gm, w, NULL)(x, sigma, cond)
    torch.testing.assert_close(guided, d_u + w * (d_c - d_u), rtol=0, atol=1e-12)
    if w == 1.0:
        torch.testing.assert_close(guided, d_c, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("w", SCALES)
def test_cfg_is_tweedie_of_the_guided_score(shape, w):
    """D_w = x + sigma^2 [grad log p(x) + w grad log p(y|x)], with grad log p(y|x) taken by autograd of
    log p_sigma(x|y) - log p_sigma(x) (Bayes), independently of the denoiser formula."""
    gm, x, sigma, cond = _problem(shape)
    xg = x.clone().requires_grad_(True)
    (grad_log_classifier,) = torch.autograd.grad((gm.log_prob(xg, sigma, cond) - gm.log_prob(xg, sigma)).sum(), xg)
    s2 = sigma.reshape(-1, *[1] * len(shape)) ** 2
    expected = x + s2 * (gm.score(x, sigma) + w * grad_log_classifier)
    guided = classifier_free_guidance(gm, w, NULL)(x, sigma, cond)
    torch.testing.assert_close(guided, expected, rtol=1e-9, atol=1e-9)


def test_cfg_makes_one_call_of_batch_2b():
    gm, x, sigma, cond = _problem((2, 3), batch=5)
    spy = Spy(gm)
    classifier_free_guidance(spy, 3.0, NULL)(x, sigma, cond)
    assert spy.batches == [10]


def test_sigma_interval_guides_only_inside_and_skips_unneeded_rows():
    gm, x, sigma, cond = _problem((1, 2, 3), batch=6)  # sigma from 0.1 to ~5
    lo, hi = sigma[1].item(), sigma[4].item()  # the interval (lo, hi] holds rows 2, 3, 4 exactly
    spy = Spy(gm)
    out = classifier_free_guidance(spy, 4.0, NULL, sigma_interval=(lo, hi))(x, sigma, cond)
    inside = torch.tensor([False, False, True, True, True, False])
    assert spy.batches == [6 + 3]  # one call; no unconditional rows outside the interval
    d_c, d_u = gm(x, sigma, cond), gm(x, sigma)
    expected = torch.where(inside.reshape(-1, 1, 1, 1), d_u + 4.0 * (d_c - d_u), d_c)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)
    spy.batches.clear()
    out = classifier_free_guidance(spy, 4.0, NULL, sigma_interval=(10.0, 20.0))(x, sigma, cond)
    assert spy.batches == [6]
    torch.testing.assert_close(out, d_c, rtol=0, atol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_guidance_rescale(shape):
    gm, x, sigma, cond = _problem(shape)
    d_c = gm(x, sigma, cond)
    plain = classifier_free_guidance(gm, 5.0, NULL)(x, sigma, cond)
    torch.testing.assert_close(classifier_free_guidance(gm, 5.0, NULL, rescale=0.0)(x, sigma, cond), plain)
    full = classifier_free_guidance(gm, 5.0, NULL, rescale=1.0)(x, sigma, cond)
    std = lambda t: t.flatten(1).std(1)  # noqa: E731
    torch.testing.assert_close(std(full), std(d_c), rtol=1e-12, atol=0)
    assert not torch.allclose(std(plain), std(d_c))  # so the rescale had something to do
    half = classifier_free_guidance(gm, 5.0, NULL, rescale=0.5)(x, sigma, cond)
    torch.testing.assert_close(half, 0.5 * (plain + full), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("s", [0.5, 2.0])
def test_classifier_guidance_with_exact_classifier_is_cfg(shape, s):
    """p(y|x_sigma) = sum_{k in y} r_k(x), so sigma^2 grad log p(y|x) = sigma^2 (score_c - score_u) = D_c - D_u:
    guiding D_u with scale s gives D_u + s (D_c - D_u) = CFG(w = s); guiding D_c gives CFG(w = 1 + s)."""
    gm, x, sigma, cond = _problem(shape)
    log_prob = _exact_classifier(gm)
    from_uncond = classifier_guidance(_unconditional(gm), log_prob, s)(x, sigma, cond)
    from_cond = classifier_guidance(gm, log_prob, s)(x, sigma, cond)
    cfg = lambda w: classifier_free_guidance(gm, w, NULL)(x, sigma, cond)  # noqa: E731
    torch.testing.assert_close(from_uncond, cfg(s), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(from_cond, cfg(1 + s), rtol=1e-9, atol=1e-9)


# --- thresholding -------------------------------------------------------------------------------------


def _const(x0):
    return lambda x, sigma, cond=None: x0


@pytest.mark.parametrize("shape", SHAPES)
def test_thresholding_leaves_in_range_predictions_unchanged(shape):
    x0 = 0.99 * (2 * torch.rand(4, *shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) - 1)
    sigma = torch.ones(4, dtype=torch.float64)
    for wrapped in (static_thresholding(_const(x0)), dynamic_thresholding(_const(x0), 0.9)):
        torch.testing.assert_close(wrapped(x0, sigma), x0, rtol=0, atol=0)


@pytest.mark.parametrize("shape", SHAPES)
def test_thresholding_keeps_predictions_in_range(shape):
    g = torch.Generator().manual_seed(1)
    scale = torch.tensor([0.5, 2.0, 4.0, 10.0], dtype=torch.float64).reshape(-1, *[1] * len(shape))
    x0 = scale * torch.randn(4, *shape, dtype=torch.float64, generator=g)
    sigma = torch.ones(4, dtype=torch.float64)
    assert static_thresholding(_const(x0), 1.0)(x0, sigma).abs().max() <= 1.0
    torch.testing.assert_close(static_thresholding(_const(x0), 1.0)(x0, sigma), x0.clamp(-1, 1))
    out = dynamic_thresholding(_const(x0), 0.9)(x0, sigma)
    assert out.abs().max() <= 1.0 + 1e-12
    # p = 1: s = max|x0| per sample, so rows beyond the range are divided by their max, others kept.
    s = x0.flatten(1).abs().amax(1).clamp(min=1).reshape(scale.shape)
    torch.testing.assert_close(dynamic_thresholding(_const(x0), 1.0)(x0, sigma), x0 / s, rtol=1e-14, atol=0)
    # the quantile helper agrees with torch.quantile (linear interpolation)
    for q in (0.0, 0.37, 0.9, 0.995, 1.0):
        torch.testing.assert_close(per_sample_quantile(x0, q), torch.quantile(x0.flatten(1), q, dim=1))


# --- condition dropout and the null convention -------------------------------------------------------


def _cond(batch):
    return {
        "class_labels": torch.arange(batch) % 10,
        "text": torch.ones(batch, 4, 8),  # (B, L, C) sequence embedding
        "lowres": torch.full((batch, 3, 2, 2), 7.0),  # never dropped
    }


NULLS = {"class_labels": 10, "text": torch.zeros(4, 8)}


def test_dropout_rate():
    batch, p = 20_000, 0.15
    out = drop_conditions(_cond(batch), p, NULLS, torch.Generator().manual_seed(0))
    dropped = out["class_labels"] == 10
    assert abs(dropped.double().mean().item() - p) < 4 * math.sqrt(p * (1 - p) / batch)
    # all droppable keys drop together; other keys pass through
    assert torch.equal(out["text"].flatten(1).eq(0).all(1), dropped)
    assert torch.equal(out["lowres"], _cond(batch)["lowres"])
    assert drop_conditions(_cond(50), 0.0, NULLS)["class_labels"].ge(0).all()
    assert drop_conditions(_cond(50), 1.0, NULLS)["class_labels"].eq(10).all()


def test_dropout_is_deterministic_per_sample():
    seeds = list(range(40))
    together = drop_conditions(_cond(40), 0.5, NULLS, seeded_generators(seeds))
    alone = [drop_conditions(_cond(1), 0.5, NULLS, seeded_generators([s]))["class_labels"] for s in seeds]
    labels = torch.where(torch.cat(alone) == 10, 10, -1)
    assert torch.equal(torch.where(together["class_labels"] == 10, 10, -1), labels)
    assert 0 < int(labels.eq(10).sum()) < 40
    again = drop_conditions(_cond(40), 0.5, NULLS, torch.Generator().manual_seed(3))
    torch.testing.assert_close(again, drop_conditions(_cond(40), 0.5, NULLS, torch.Generator().manual_seed(3)))


def test_null_and_select_conditions():
    cond = _cond(3)
    null = null_conditions(cond, NULLS)
    assert null["class_labels"].tolist() == [10, 10, 10] and null["text"].abs().sum() == 0
    assert torch.equal(null["lowres"], cond["lowres"])
    picked = select_conditions(cond, NULLS, torch.tensor([True, False, True]))
    assert picked["class_labels"].tolist() == [0, 10, 2]
    assert picked["text"][1].abs().sum() == 0 and picked["text"][0].eq(1).all()
    with pytest.raises(KeyError):
        null_conditions({"lowres": cond["lowres"]}, NULLS)


@pytest.mark.parametrize("sampler", ["heun", "euler_ancestral", "pc"])
def test_reconstruction_guidance_samples_the_exact_conditional_mean_where_replacement_misses_it(sampler):
    """Data: one correlated Gaussian in 6-D; x^a (the first 3 coordinates) known, x^b generated. The exact
    E[x^b | x^a] = S_ba S_aa^-1 x^a. Replacement (w_r = 0) ignores the conditional score and misses it; reconstruction
    guidance (Ho et al. 2022, sec. 3.1) at w_r = 2 gets several times closer, with an ODE, an ancestral and a
    predictor-corrector (Langevin) sampler. The known part comes back exactly either way."""
    from polydiff.core.analytic import GaussianMixture
    from polydiff.core.grids import karras_sigmas
    from polydiff.core.guidance import reconstruction_guidance
    from polydiff.core.samplers import SAMPLERS

    g = torch.Generator().manual_seed(0)
    gm = GaussianMixture(torch.zeros(1, 6), torch.tensor([0.1]), torch.randn(1, 6, 2, generator=g, dtype=torch.float64))
    cov, known_part = gm.covariance(0), torch.tensor([True] * 3 + [False] * 3)
    x_a, _ = gm.sample(1, generator=g)
    exact = cov[~known_part][:, known_part] @ torch.linalg.solve(cov[known_part][:, known_part], x_a[0, known_part])
    n = 2000
    known, noise = x_a.expand(n, 6), torch.randn(n, 6, generator=g, dtype=torch.float64)
    sigmas = karras_sigmas(40, 0.002, 80.0)
    start = sigmas[0] * torch.randn(n, 6, generator=g, dtype=torch.float64)
    errors = {}
    for weight in (0.0, 2.0):
        guided = reconstruction_guidance(gm, known, known_part, weight, noise)
        out = SAMPLERS[sampler](guided, start, sigmas, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(out[:, known_part], known[:, known_part])
        errors[weight] = float((out[:, ~known_part].mean(0) - exact).norm())
    assert errors[2.0] < errors[0.0] / 3, errors


def test_reconstruction_guidance_lowers_the_known_parts_reconstruction_error_along_the_sampling_path():
    """Issue 9's check: ||x^a - x^a_hat(z_t)||^2, the denoiser's reconstruction of the known coordinates from the
    current state, is smaller under reconstruction guidance than without it (replacement), on the analytic
    correlated Gaussian, over the second half of a Heun trajectory."""
    from polydiff.core.analytic import GaussianMixture
    from polydiff.core.grids import karras_sigmas
    from polydiff.core.guidance import reconstruction_guidance
    from polydiff.core.samplers import SAMPLERS

    g = torch.Generator().manual_seed(3)
    gm = GaussianMixture(torch.zeros(1, 6), torch.tensor([0.1]), torch.randn(1, 6, 2, generator=g, dtype=torch.float64))
    known_part = torch.tensor([True] * 3 + [False] * 3)
    n = 500
    known, noise = gm.sample(n, generator=g)[0], torch.randn(n, 6, generator=g, dtype=torch.float64)
    sigmas = karras_sigmas(30, 0.002, 80.0)
    start = sigmas[0] * torch.randn(n, 6, generator=g, dtype=torch.float64)
    mean_error = {}
    for weight in (0.0, 2.0):
        errors = []

        def recorded(x, sigma, cond=None):
            out = gm(x, sigma)
            errors.append(float((out.detach()[:, known_part] - known[:, known_part]).square().sum(1).mean()))
            return out

        guided = reconstruction_guidance(recorded, known, known_part, weight, noise)
        SAMPLERS["heun"](guided, start, sigmas)
        mean_error[weight] = sum(errors[len(errors) // 2:]) / (len(errors) - len(errors) // 2)
    assert mean_error[2.0] < 0.7 * mean_error[0.0], mean_error


def test_reconstruction_guidance_at_weight_zero_is_replacement_and_its_term_is_the_half_gradient():
    from polydiff.core.editing import replacement
    from polydiff.core.guidance import reconstruction_guidance

    gm, x, sigma, _ = _problem((2, 3))
    known, noise = torch.randn_like(x), torch.randn_like(x)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    mask[0] = True
    torch.testing.assert_close(reconstruction_guidance(gm, known, mask, 0.0, noise)(x, sigma),
                               replacement(gm, known, mask, noise)(x, sigma))
    # the term by finite differences of r(x) = ||x^a - D^a(x_r)||^2 along one generated coordinate
    guided = reconstruction_guidance(gm, known, mask, 3.0, noise)(x, sigma)
    x_r = torch.where(mask, known + sigma[:, None, None] * noise, x)
    step = torch.zeros_like(x)
    step[:, 1, 2] = 1e-6
    r = [(mask * (known - gm(x_r + s, sigma))).square().flatten(1).sum(1) for s in (step, -step)]
    slope = (r[0] - r[1]) / 2e-6  # (B,)
    torch.testing.assert_close(guided[:, 1, 2], gm(x_r, sigma)[:, 1, 2] - 1.5 * slope, rtol=1e-5, atol=1e-6)

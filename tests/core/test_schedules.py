"""Schedules and grids: closed-form values from the papers, conversions, grid invariants."""

import math

import pytest
import torch

from polydiff.core.grids import GRIDS, betas_to_sigmas, karras_sigmas, sampling_sigmas, time_uniform_sigmas
from polydiff.core.schedules import (
    SCHEDULES,
    DiscreteSchedule,
    alpha_bar_to_sigma,
    cosine_alphas_cumprod,
    linear_betas,
    logsnr_to_sigma,
    make_schedule,
    rescale_zero_terminal_snr,
    sigma_to_alpha_bar,
    sigma_to_logsnr,
)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_sigma_and_t_are_inverse_and_increasing(name):
    schedule = make_schedule(name)
    t = torch.linspace(0, 1, 101, dtype=torch.float64)
    sigma = schedule.sigma(t)
    assert bool((sigma[1:] > sigma[:-1]).all())
    torch.testing.assert_close(schedule.t(sigma), t, atol=1e-9, rtol=0)
    assert schedule.sigma_max == pytest.approx(float(sigma[-1]))
    assert float(schedule.t(torch.tensor(schedule.sigma_min, dtype=torch.float64))) >= 0


def test_conversions_round_trip():
    sigma = torch.logspace(-3, 3, 50, dtype=torch.float64)
    torch.testing.assert_close(alpha_bar_to_sigma(sigma_to_alpha_bar(sigma)), sigma)
    torch.testing.assert_close(logsnr_to_sigma(sigma_to_logsnr(sigma)), sigma)
    abar = sigma_to_alpha_bar(sigma)
    torch.testing.assert_close(sigma_to_logsnr(sigma), (abar / (1 - abar)).log())


def test_linear_schedule_matches_ddpm():
    betas = linear_betas(1000)
    assert float(betas[0]) == pytest.approx(1e-4) and float(betas[-1]) == pytest.approx(0.02)
    schedule = make_schedule("linear")
    torch.testing.assert_close(schedule.alphas_cumprod, torch.cumprod(1 - betas, 0))
    # Ho et al. 2020: abar_T is about 4e-5 for the linear schedule (sec. 4, "L_T ~ 1e-5 bits").
    assert 1e-5 < float(schedule.alphas_cumprod[-1]) < 1e-4


def test_an_explicit_beta_range_is_used_as_given_for_any_number_of_levels():
    for T in (1000, 50):
        betas = linear_betas(T, 1e-6, 0.01)  # WaveGrad's training range
        assert len(betas) == T and float(betas[0]) == 1e-6 and float(betas[-1]) == pytest.approx(0.01, rel=1e-12)
        schedule = make_schedule("linear", num_steps=T, beta_start=1e-6, beta_end=0.01)
        torch.testing.assert_close(schedule.alphas_cumprod, torch.cumprod(1 - betas, 0), rtol=0, atol=0)
    assert make_schedule("linear", beta_start=1e-6, beta_end=0.01).sigma_max == pytest.approx(12.2473, abs=1e-4)
    # without a range, DDPM's 1e-4 .. 0.02 is for T = 1000 and scales by 1000 / T
    torch.testing.assert_close(linear_betas(50), torch.linspace(2e-3, 0.4, 50, dtype=torch.float64), rtol=0, atol=0)
    scaled = make_schedule("scaled_linear", num_steps=10, beta_start=1e-4, beta_end=0.04)
    torch.testing.assert_close(scaled.betas[[0, -1]], torch.tensor([1e-4, 0.04], dtype=torch.float64))
    with pytest.raises(ValueError, match="both"):
        linear_betas(10, beta_start=1e-4)


def test_a_beta_schedule_is_a_grid_of_its_sigmas():
    betas = torch.linspace(1e-6, 0.01, 1000, dtype=torch.float64)
    grid = betas_to_sigmas(betas.tolist())
    assert grid.dtype == torch.float64 and grid.shape == (1001,) and float(grid[-1]) == 0
    torch.testing.assert_close(grid[:-1].flip(0), DiscreteSchedule.from_betas(betas).sigmas)
    few = betas_to_sigmas([0.5, 0.5])  # abar = 1/2, 1/4: sigma = sqrt(1 / abar - 1) = sqrt(3), 1
    torch.testing.assert_close(few, torch.tensor([3**0.5, 1.0, 0.0], dtype=torch.float64))
    for bad in ([], [0.1, 1.5], [0.0], [[0.1]]):
        with pytest.raises(ValueError, match="betas"):
            betas_to_sigmas(bad)


def test_cosine_schedule_closed_form_and_clip():
    abar = cosine_alphas_cumprod(1000)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2 / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(abar[:900], f[:900], rtol=1e-9, atol=0)
    betas = 1 - abar / torch.cat([abar.new_ones(1), abar[:-1]])
    assert float(betas.max()) <= 0.999 + 1e-12


def test_zero_terminal_snr_keeps_first_level_and_zeroes_last():
    betas = linear_betas(1000)
    rescaled = rescale_zero_terminal_snr(betas)
    abar_old, abar_new = torch.cumprod(1 - betas, 0), torch.cumprod(1 - rescaled, 0)
    assert float(abar_new[-1]) == pytest.approx(0.0, abs=1e-15)
    assert float(abar_new[0]) == pytest.approx(float(abar_old[0]))
    schedule = make_schedule("linear", zero_terminal_snr=True)
    assert math.isfinite(schedule.sigma_max) and schedule.sigma_max > 1e3


@pytest.mark.parametrize("T", [1000, 2000, 4000])
@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine", "sigmoid"])
def test_zero_terminal_snr_levels_stay_distinct_and_c_noise_finite(name, T):
    """Only the infinite terminal level is replaced; every level stays distinct in log-sigma, so the fractional
    index (a discrete model's c_noise) is finite and exact at every level, the top one included."""
    schedule = make_schedule(name, num_steps=T, zero_terminal_snr=True)
    raw = alpha_bar_to_sigma(schedule.alphas_cumprod)
    assert math.isinf(float(raw[-1]))
    torch.testing.assert_close(schedule.sigmas[:-1], raw[:-1], rtol=0, atol=0)  # finite levels untouched
    assert bool((schedule.log_sigmas[1:] > schedule.log_sigmas[:-1]).all())
    index = schedule.sigma_to_index(schedule.sigmas)
    assert bool(torch.isfinite(index).all())
    torch.testing.assert_close(index, torch.arange(T, dtype=torch.float64), rtol=0, atol=1e-6)
    top = schedule.sigma_to_index(torch.tensor([schedule.sigma_max, 2 * schedule.sigma_max], dtype=torch.float32))
    assert top.tolist() == [T - 1, T - 1]


def test_equal_neighbouring_levels_do_not_divide_zero_by_zero():
    schedule = DiscreteSchedule(torch.tensor([0.9, 0.5, 0.5, 0.1], dtype=torch.float64))
    index = schedule.sigma_to_index(schedule.sigmas)
    assert bool(torch.isfinite(index).all()) and index.tolist()[0] == 0 and index.tolist()[-1] == 3


def test_discrete_index_interpolation():
    schedule = make_schedule("linear", num_steps=100)
    idx = torch.arange(100, dtype=torch.float64)
    torch.testing.assert_close(schedule.index_to_sigma(idx), schedule.sigmas)
    frac = torch.tensor([0.25, 10.5, 98.75], dtype=torch.float64)
    torch.testing.assert_close(schedule.sigma_to_index(schedule.index_to_sigma(frac)), frac)


def test_discrete_schedule_rejects_increasing_alpha_bar():
    with pytest.raises(ValueError, match="decrease"):
        DiscreteSchedule(torch.tensor([0.5, 0.9, 0.1]))


@pytest.mark.parametrize("spacing", sorted(GRIDS))
@pytest.mark.parametrize("name", ["linear", "scaled_linear", "cosine", "vp", "edm"])
def test_grids_descend_and_end_at_zero(name, spacing):
    schedule = make_schedule(name)
    if spacing in ("leading", "trailing") and not isinstance(schedule, DiscreteSchedule):
        with pytest.raises(ValueError):
            sampling_sigmas(schedule, 10, spacing)
        return
    for steps in (1, 5, 37):
        sigmas = sampling_sigmas(schedule, steps, spacing)
        assert sigmas.shape == (steps + 1,) and float(sigmas[-1]) == 0.0
        assert bool((sigmas[1:] < sigmas[:-1]).all())
        assert float(sigmas[0]) <= schedule.sigma_max * (1 + 1e-9)


def test_time_spacings_follow_lin_et_al_table_2():
    schedule = make_schedule("linear")  # T = 1000, 10 steps
    want = {
        "leading": [901, 801, 701, 601, 501, 401, 301, 201, 101, 1],
        "trailing": [999, 899, 799, 699, 599, 499, 399, 299, 199, 99],
        "linspace": [999, 888, 777, 666, 555, 444, 333, 222, 111, 0],
    }
    for spacing, idx in want.items():
        got = time_uniform_sigmas(schedule, 10, spacing)[:-1]
        torch.testing.assert_close(got, schedule.sigmas[torch.tensor(idx)])


def test_karras_grid_endpoints_and_rho():
    sigmas = karras_sigmas(18, 0.002, 80.0, rho=7.0)
    assert float(sigmas[0]) == pytest.approx(80.0) and float(sigmas[-2]) == pytest.approx(0.002)
    # EDM eq. 5: sigma_i^(1/rho) is linear in i.
    roots = sigmas[:-1] ** (1 / 7)
    diffs = roots[1:] - roots[:-1]
    torch.testing.assert_close(diffs, diffs[:1].expand_as(diffs))


def test_warped_logsnr_grid_stops_early_at_few_steps_and_spans_the_range_at_many():
    schedule = make_schedule("linear")
    lam_max, lam_min = -math.log(schedule.sigma_max), -math.log(schedule.sigma_min)
    for steps, share in ((10, 0.55 + 0.085 * math.log(10)), (200, 1.0)):
        sigmas = sampling_sigmas(schedule, steps, "warped_logsnr")
        assert float(sigmas[0]) == pytest.approx(schedule.sigma_max)
        assert -math.log(float(sigmas[-2])) == pytest.approx(lam_max + share * (lam_min - lam_max))
        # a = 0.75 < 1: the first logSNR step is the longest.
        steps_in_lambda = -(sigmas[1:-1].log() - sigmas[:-2].log())
        assert int(steps_in_lambda.argmax()) == 0


def test_bad_names_are_reported():
    with pytest.raises(KeyError, match="known"):
        make_schedule("quadratic")
    with pytest.raises(KeyError, match="known"):
        sampling_sigmas(make_schedule("linear"), 10, "uniform")

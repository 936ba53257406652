"""The sampler benchmark's plumbing (benchmarks/mixture.py, diffusers_schedulers.py, samplers.py): the
reference solves the PF ODE, the metrics and NFE bisection are right, and diffusers' schedulers are driven
in the right coordinates (DDIM and Euler reproduce polydiff's Euler step on the scheduler's own grid)."""

from __future__ import annotations

import math
import sys

import pytest
import torch

from polydiff.benchmarks.mixture import largest_steps_within, make_schedule, pf_ode_reference, sliced_w2
from polydiff.core.analytic import random_mixture
from polydiff.core.samplers import SAMPLERS


def test_reference_matches_the_closed_form_gaussian_map():
    data = random_mixture(4, components=1, rank=1, std=0.3, seed=2)
    x_T = 50.0 * torch.randn(8, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(pf_ode_reference(data, x_T, 50.0), data.ode_solution(x_T, 50.0, 0.0), rtol=0, atol=1e-7)


def test_sliced_w2_of_a_shift():
    """SW2(x, x + c) = sqrt(mean_u (u . c)^2) = |c| / sqrt(dim) for directions uniform on the sphere."""
    x = torch.randn(256, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    shift = torch.full((8,), 0.5, dtype=torch.float64)
    assert sliced_w2(x, x) == 0.0
    assert sliced_w2(x, x + shift, projections=20000) == pytest.approx(float(shift.norm()) / math.sqrt(8), rel=0.03)


@pytest.mark.parametrize(
    "calls, budget, steps", [(lambda n: 2 * n - 1, 5, 3), (lambda n: n, 7, 7), (lambda n: n + 1, 1, None)]
)
def test_largest_steps_within(calls, budget, steps):
    assert largest_steps_within(budget, calls) == steps


@pytest.mark.parametrize("cls, polydiff_name", [("DDIMScheduler", "ddim"), ("EulerDiscreteScheduler", "euler")])
def test_diffusers_driving_reproduces_the_euler_step(cls, polydiff_name):
    """DDIM (VP latents) and Euler (scaled sigma-form inputs) are both the Euler step of the PF ODE in sigma:
    driven by ``run_scheduler`` they must equal polydiff's sampler on the sigmas of the scheduler's timesteps."""
    ds = pytest.importorskip("polydiff.benchmarks.diffusers_schedulers")
    schedule = make_schedule("linear")
    data = random_mixture(4, components=3, std=0.3, seed=3)
    options = {"timestep_spacing": "trailing", **({"clip_sample": False} if cls == "DDIMScheduler" else {})}
    config = ds.SchedulerConfig(cls, options)
    scheduler = ds.build(config, "linear", 1e-4, 0.02)
    x_T = schedule.sigma_max * torch.randn(16, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    out = ds.run_scheduler(scheduler, 8, ds.EpsModel(data, schedule), x_T, schedule.sigma_max)
    levels = schedule.index_to_sigma(scheduler.timesteps.to(torch.float64))
    grid = torch.cat([levels, levels.new_zeros(1)])
    expected = SAMPLERS[polydiff_name](data, x_T, grid)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)  # diffusers computes in float32


def test_exits_2_without_diffusers(monkeypatch, capsys):
    from polydiff.benchmarks import samplers

    monkeypatch.setitem(sys.modules, "diffusers", None)  # makes `import diffusers` raise ImportError
    assert samplers.main([]) == 2
    assert "diffusers is not installed" in capsys.readouterr().out

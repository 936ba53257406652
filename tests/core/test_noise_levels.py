"""Training noise-level distributions: empirical laws against their definitions, per-sample generators."""

import math

import pytest
import torch

from polydiff.core.noise_levels import (
    NOISE_LEVELS,
    ContinuousUniform,
    DiscreteUniform,
    LogNormal,
    WaveGradUniform,
    make_noise_levels,
)
from polydiff.core.schedules import DiscreteSchedule, make_schedule
from polydiff.core.utils import seeded_generators

N = 100_000


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _ks_uniform(u: torch.Tensor) -> float:
    """Kolmogorov-Smirnov distance of samples u in [0, 1] from U[0, 1]."""
    u = u.sort().values
    i = torch.arange(1, len(u) + 1, dtype=torch.float64)
    return float(torch.maximum(i / len(u) - u, u - (i - 1) / len(u)).max())


def _chi2_uniform(counts: torch.Tensor) -> float:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


def _ks_limit(n: int) -> float:
    """Kolmogorov-Smirnov critical value at p = 0.001."""
    return 1.95 / math.sqrt(n)


# chi-square(df=9) critical value at p = 0.001.
CHI2_DF9_LIMIT = 27.9


def test_lognormal_log_sigma_moments():
    """ln sigma ~ N(-1.2, 1.2^2): sample mean within 5 SE (1.2 / sqrt(N) = 0.0038) and std within 0.01."""
    log_sigma = LogNormal().sample(N, _gen(), dtype=torch.float64).log()
    assert abs(float(log_sigma.mean()) + 1.2) < 5 * 1.2 / math.sqrt(N)
    assert abs(float(log_sigma.std()) - 1.2) < 0.01
    z = (log_sigma + 1.2) / 1.2
    assert _ks_uniform(torch.special.ndtr(z)) < _ks_limit(N)


def test_discrete_uniform_hits_every_level_equally():
    schedule = make_schedule("cosine", num_steps=10)
    dist = DiscreteUniform(schedule)
    sigma = dist.sample(N, _gen(), dtype=torch.float64)
    index = torch.searchsorted(schedule.sigmas, sigma)
    assert torch.equal(schedule.sigmas[index], sigma), "every sigma is exactly a table level"
    assert _chi2_uniform(torch.bincount(index, minlength=10).double()) < CHI2_DF9_LIMIT
    indices = dist.sample_indices(N, _gen(1))
    assert int(indices.min()) == 0 and int(indices.max()) == 9


@pytest.mark.parametrize("schedule_name", ["vp", "edm", "linear"])
def test_continuous_uniform_time_is_uniform(schedule_name):
    """t(sigma) is U[t_min, 1] (KS); for a discrete schedule t interpolates its levels."""
    kwargs = {"num_steps": 1000} if schedule_name == "linear" else {}
    schedule = make_schedule(schedule_name, **kwargs)
    n = N // 10 if schedule_name == "linear" else N  # DiscreteSchedule.t builds an (n, T) table
    t = schedule.t(ContinuousUniform(schedule, t_min=0.05).sample(n, _gen(), dtype=torch.float64))
    assert float(t.min()) >= 0.05 - 1e-9 and float(t.max()) <= 1 + 1e-9
    assert _ks_uniform((t - 0.05) / 0.95) < _ks_limit(n)


def test_wavegrad_sqrt_alpha_bar_is_uniform_between_adjacent_levels():
    """Chen et al. 2021, Alg. 1: the segment (l_s, l_{s-1}) holding sqrt(abar) is uniform over s (chi-square),
    and within it sqrt(abar) is uniform (KS on the position within the segment)."""
    schedule = DiscreteSchedule.from_betas(torch.linspace(0.05, 0.6, 10, dtype=torch.float64))
    levels = torch.cat([torch.ones(1, dtype=torch.float64), schedule.alphas_cumprod.sqrt()])  # l_0 = 1 > l_1 > ...
    sigma = WaveGradUniform(schedule).sample(N, _gen(), dtype=torch.float64)
    assert bool((sigma > 0).all())
    sqrt_alpha_bar = (1 + sigma**2).rsqrt()
    s = (sqrt_alpha_bar[:, None] < levels[None, :]).sum(1)  # segment s in 1..10: l_s <= sqrt(abar) < l_{s-1}
    assert _chi2_uniform(torch.bincount(s - 1, minlength=10).double()) < CHI2_DF9_LIMIT
    position = (sqrt_alpha_bar - levels[s]) / (levels[s - 1] - levels[s])
    assert _ks_uniform(position) < _ks_limit(N)


def _all_distributions():
    schedule = make_schedule("linear", num_steps=1000)
    return {
        "discrete": DiscreteUniform(schedule),
        "continuous": ContinuousUniform(schedule),
        "lognormal": LogNormal(),
        "wavegrad": WaveGradUniform(schedule),
    }


@pytest.mark.parametrize("name", sorted(NOISE_LEVELS))
def test_per_sample_generators_are_batch_independent(name):
    """sigma_i depends only on generator[i]: a batch of seeds [3, 4, 5] equals the seeds drawn one at a time,
    and the single-generator path is reproducible."""
    dist = _all_distributions()[name]
    batch = dist.sample(3, seeded_generators([3, 4, 5]), dtype=torch.float64)
    one_by_one = torch.cat([dist.sample(1, seeded_generators([s]), dtype=torch.float64) for s in (3, 4, 5)])
    assert torch.equal(batch, one_by_one)
    assert torch.equal(dist.sample(5, _gen(7)), dist.sample(5, _gen(7)))
    assert len(set(batch.tolist())) == 3


@pytest.mark.parametrize("name", sorted(NOISE_LEVELS))
def test_dtype_shape_and_positivity(name):
    dist = _all_distributions()[name]
    for dtype in (torch.float32, torch.float64):
        sigma = dist.sample(1000, _gen(), dtype=dtype)
        assert sigma.shape == (1000,) and sigma.dtype == dtype
        assert bool((sigma > 0).all()) and bool(sigma.isfinite().all())


def test_registry_and_validation():
    schedule = make_schedule("linear", num_steps=100)
    assert isinstance(make_noise_levels("discrete", schedule=schedule), DiscreteUniform)
    assert make_noise_levels("lognormal", p_mean=0.0) == LogNormal(p_mean=0.0)
    with pytest.raises(KeyError, match="known"):
        make_noise_levels("uniform")
    with pytest.raises(ValueError, match="p_std"):
        LogNormal(p_std=0.0)
    with pytest.raises(ValueError, match="t_min"):
        ContinuousUniform(schedule, t_min=1.0)
    with pytest.raises(TypeError, match="schedule"):
        DiscreteUniform(make_schedule("vp"))

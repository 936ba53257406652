"""Build the pieces of a run from a resolved recipe: schedule, denoiser, objective, data, sampling grid.

The one place that turns config names into core objects, shared by training, sampling and
``from_pretrained`` so that a saved model is rebuilt exactly as it was trained.
"""

from __future__ import annotations

import dataclasses

import torch
from torch.utils.data import Dataset

from ..core.grids import sampling_sigmas
from ..core.objectives import HybridLoss, WEIGHTINGS, make_objective
from ..core.precond import Precond, discrete_c_noise, edm_c_noise, logsnr_c_noise, sqrt_alpha_bar_c_noise
from ..core.schedules import DiscreteSchedule, Schedule, make_schedule
from ..data.registry import build_dataset, split
from ..modalities.registry import build_backbone
from ..recipes.schema import DISCRETE_SCHEDULES, RecipeConfig


def build_schedule(cfg: RecipeConfig) -> Schedule:
    """The recipe's noise schedule (T levels and zero terminal SNR for discrete ones)."""
    d = cfg.diffusion
    if d.schedule in DISCRETE_SCHEDULES:
        return make_schedule(d.schedule, num_steps=d.num_steps, zero_terminal_snr=d.zero_terminal_snr)
    return make_schedule(d.schedule)


def build_denoiser(cfg: RecipeConfig, schedule: Schedule | None = None) -> Precond:
    """Backbone wrapped by the recipe's parameterization and noise input (``core.precond.Precond``)."""
    d = cfg.diffusion
    schedule = schedule or build_schedule(cfg)
    if d.c_noise == "discrete":
        if not isinstance(schedule, DiscreteSchedule):
            raise ValueError("diffusion.c_noise = 'discrete' needs a discrete schedule")
        c_noise = discrete_c_noise(schedule)
    else:
        c_noise = {"edm": edm_c_noise, "sqrt_alpha_bar": sqrt_alpha_bar_c_noise, "logsnr": logsnr_c_noise}[d.c_noise]
    backbone = build_backbone(cfg.model.name, cfg.model.options, out_factor=2 if d.learned_variance else 1)
    return Precond(backbone, d.parameterization, c_noise, d.sigma_data, d.learned_variance)


def build_objective(cfg: RecipeConfig, schedule: Schedule):
    """The recipe's loss: noise-level distribution x weighting, or iDDPM's hybrid loss when the variance is learned."""
    o = cfg.objective
    weighting_kwargs = {"gamma": o.gamma, "sigma_data": cfg.diffusion.sigma_data}
    if o.hybrid_vlb_weight > 0:
        weighting = WEIGHTINGS[o.weighting](**_accepted(o.weighting, weighting_kwargs))
        return HybridLoss(schedule, o.hybrid_vlb_weight, weighting)
    level_kwargs = {
        "discrete": {"schedule": schedule},
        "continuous": {"schedule": schedule},
        "wavegrad": {"schedule": schedule},
        "lognormal": {"p_mean": o.p_mean, "p_std": o.p_std},
    }[o.noise_levels]
    return make_objective(o.noise_levels, o.weighting, **level_kwargs, **_accepted(o.weighting, weighting_kwargs))


def _accepted(weighting: str, kwargs: dict) -> dict:
    """The subset of ``kwargs`` that the weighting's dataclass takes."""
    names = {f.name for f in dataclasses.fields(WEIGHTINGS[weighting])}
    return {k: v for k, v in kwargs.items() if k in names}


def build_data(cfg: RecipeConfig) -> tuple[Dataset, Dataset]:
    """(train, validation) splits of the recipe's data set."""
    dataset = build_dataset(cfg.data.name, cfg.data.options, cfg.train.seed)
    return split(dataset, cfg.data.val_fraction, cfg.train.seed)


def build_sigmas(cfg: RecipeConfig, schedule: Schedule, steps: int | None = None, spacing: str | None = None):
    """The sampling grid: ``steps`` levels of ``spacing`` ending at 0 (float32)."""
    s = cfg.sample
    return sampling_sigmas(schedule, steps or s.steps, spacing or s.spacing).to(torch.float32)

"""Build a model from a resolved recipe: its schedule, its denoiser and its sampling grid.

The one place that turns config names into core objects for a model, shared by training, sampling and
``from_pretrained``, so that a saved model is rebuilt exactly as it was trained. (What only training needs,
the objective and the data, is built in ``polydiff.train.build``.)
"""

from __future__ import annotations

import torch

from .. import registry
from ..core.grids import betas_to_sigmas, sampling_sigmas
from ..core.precond import C_NOISE, Precond
from ..core.schedules import DISCRETE_SCHEDULES, Schedule, make_schedule
from ..recipes.schema import RecipeConfig, SampleConfig
from .resources import guard_allocation


def build_schedule(cfg: RecipeConfig) -> Schedule:
    """The recipe's noise schedule (T levels, zero terminal SNR and a beta range for discrete ones; the range is
    used as given, ``core.schedules.linear_betas``)."""
    d = cfg.diffusion
    if d.schedule not in DISCRETE_SCHEDULES:
        return make_schedule(d.schedule)
    betas = {} if d.beta_range is None else {"beta_start": d.beta_range[0], "beta_end": d.beta_range[1]}
    return make_schedule(d.schedule, num_steps=d.num_steps, zero_terminal_snr=d.zero_terminal_snr, **betas)


def build_backbone(cfg: RecipeConfig, example_shape: tuple[int, ...], device: torch.device | str = "cpu",
                   copies: float = 1.0) -> torch.nn.Module:
    """The recipe's backbone for examples of ``example_shape`` on ``device``, checked to fit there (``copies``
    times its weights: training also holds gradients, optimizer moments, an EMA) before it is allocated."""
    component = registry.get("model", cfg.model.name)
    spec = registry.BackboneSpec(tuple(example_shape), 2 if cfg.diffusion.learned_variance else 1)
    return guard_allocation(lambda: component.target(cfg.model.options, spec), f"model {cfg.model.name!r}",
                            "model.options", module=True, copies=copies, device=device)


def build_denoiser(cfg: RecipeConfig, example_shape: tuple[int, ...], schedule: Schedule | None = None,
                   device: torch.device | str = "cpu", copies: float = 1.0) -> Precond:
    """Backbone wrapped by the recipe's parameterization and noise input (``core.precond.Precond``), on ``device``."""
    d = cfg.diffusion
    schedule = schedule or build_schedule(cfg)
    backbone = build_backbone(cfg, example_shape, device, copies)
    return Precond(backbone, d.parameterization, C_NOISE[d.c_noise](schedule), d.sigma_data, d.learned_variance)


def build_sigmas(cfg: RecipeConfig, schedule: Schedule, steps: int | None = None, spacing: str | None = None,
                 sampling: SampleConfig | None = None):
    """The sampling grid ending at 0 (float32), from the sampling defaults ``sampling`` (a model folder's, which a
    user may edit; by default the recipe's [sample]): their explicit betas (``core.grids.betas_to_sigmas``) unless
    ``steps`` other than their number or a ``spacing`` asks for another grid, else ``steps`` levels of ``spacing``."""
    s = sampling or cfg.sample
    if s.betas and spacing is None and steps in (None, len(s.betas)):
        return betas_to_sigmas(s.betas).to(torch.float32)
    return sampling_sigmas(schedule, steps or s.steps, spacing or s.spacing).to(torch.float32)

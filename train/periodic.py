"""What a run does now and then besides optimizing: validation loss, sample files, the model folder."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..core.objectives import denoising_loss, EDMWeighting
from ..core.schedules import Schedule
from ..data.registry import collate
from ..modalities.writers import write_samples
from ..recipes.config import config_to_dict
from ..recipes.schema import RecipeConfig
from .pretrained import save_pretrained

VAL_SIGMA_RATIOS = (0.02, 0.1, 0.3, 1.0, 3.0, 10.0)  # validation noise levels, in units of sigma_data
VAL_SEED = 20_240_601


@torch.no_grad()
def validation_loss(model: nn.Module, val_set: Dataset, cfg: RecipeConfig, device) -> float:
    """Mean over fixed noise levels sigma = r sigma_data (``VAL_SIGMA_RATIOS``) of the EDM-weighted error
    lambda(sigma) ||D(x0 + sigma n) - x0||^2, lambda = (sigma^2 + sd^2) / (sigma sd)^2 (EDM Table 1), with fixed
    noise: the same number for the same weights whatever the recipe's objective, so runs compare."""
    was_training = model.training
    model.eval()
    sd = cfg.diffusion.sigma_data
    weighting = EDMWeighting(sigma_data=sd)
    g = torch.Generator().manual_seed(VAL_SEED)
    totals = torch.zeros(len(VAL_SIGMA_RATIOS), dtype=torch.float64)
    count = 0
    for batch in DataLoader(val_set, batch_size=cfg.data.batch_size, collate_fn=collate):
        x0 = batch["x"].to(device)
        cond = {k: v.to(device) for k, v in batch["cond"].items()}
        for i, ratio in enumerate(VAL_SIGMA_RATIOS):
            sigma = torch.full((len(x0),), ratio * sd, device=device)
            noise = torch.randn(x0.shape, generator=g).to(device)
            totals[i] += denoising_loss(model, x0, sigma, noise, weighting, cond).double().sum().cpu()
        count += len(x0)
    model.train(was_training)
    return float(totals.mean() / max(count, 1))


@torch.no_grad()
def draw_samples(denoiser, sigmas: torch.Tensor, event_shape: tuple[int, ...], num: int, sampler: str, seed: int,
                 cond: dict | None = None) -> torch.Tensor:
    """``num`` samples (num, *event_shape) from noise at ``sigmas[0]``, one generator per sample (seed, seed+1,
    ...), so a batch equals its samples drawn one at a time (EDM's per-sample RNG)."""
    from ..core.samplers import get_sampler
    from ..core.utils import randn_like, seeded_generators

    generators = seeded_generators(range(seed, seed + num))
    x = sigmas[0] * randn_like(torch.empty(num, *event_shape, device=sigmas.device), generators)
    return get_sampler(sampler)(denoiser, x, sigmas, cond=cond, generator=generators)


def event_shape(cfg: RecipeConfig) -> tuple[int, ...]:
    """The shape of one example, from the model's options (vector data: (dims,))."""
    return (cfg.model.options.dims,)


def sample_and_write(model: nn.Module, schedule: Schedule, cfg: RecipeConfig, path: Path, reference: Dataset):
    """Draw the recipe's sampling-default batch and write it with the modality's writer."""
    from .build import build_sigmas

    s = cfg.sample
    was_training = model.training
    sigmas = build_sigmas(cfg, schedule).to(next(model.parameters()).device)
    samples = draw_samples(model.eval(), sigmas, event_shape(cfg), s.num, s.sampler, s.seed)
    model.train(was_training)
    ref = collate([reference[i] for i in range(min(len(reference), len(samples)))])["x"] if len(reference) else None
    return write_samples(cfg.modality, samples.cpu(), path, ref)


def save_model(model: nn.Module, cfg: RecipeConfig, path: Path) -> Path:
    """``save_pretrained`` of the weights to sample with, the resolved recipe and its sampling defaults."""
    sampling = {
        "schedule": cfg.diffusion.schedule,
        "parameterization": cfg.diffusion.parameterization,
        "sampler": cfg.sample.sampler,
        "steps": cfg.sample.steps,
        "spacing": cfg.sample.spacing,
        "guidance": cfg.sample.guidance,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    return save_pretrained(path, state, config_to_dict(cfg), sampling)

"""What a run does now and then besides optimizing: validation loss and sample media."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from .. import registry
from ..core.conditioning import conditions_taken
from ..core.objectives import EDMWeighting, denoising_loss
from ..data.examples import fetch
from ..media import Media
from ..pipeline.model import DiffusionModel
from ..recipes.schema import RecipeConfig

VAL_SIGMA_RATIOS = (0.02, 0.1, 0.3, 1.0, 3.0, 10.0)  # validation noise levels, in units of sigma_data
VAL_SEED = 20_240_601


def edm_error(model, x0, sigma, noise, cond, sigma_data: float) -> torch.Tensor:
    """lambda(sigma) ||D(x0 + sigma n) - x0||^2, lambda = (sigma^2 + sd^2) / (sigma sd)^2 (EDM Table 1): (B,)."""
    return denoising_loss(model, x0, sigma, noise, EDMWeighting(sigma_data=sigma_data), cond)


def classified(model, x0, sigma, noise, cond, sigma_data: float) -> torch.Tensor:
    """1 where a noise-aware classifier names the right class of x0 + sigma n, else 0: (B,)."""
    cond = dict(cond)
    labels = cond.pop("class_labels")
    x = x0 + sigma.view(-1, *[1] * (x0.ndim - 1)) * noise
    return (model.raw(x, sigma, cond).argmax(-1) == labels).to(torch.float64)


@torch.no_grad()
def validation_loss(model: nn.Module, val_set: Dataset, cfg: RecipeConfig, device, rank: int = 0, world: int = 1,
                    all_sum: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
                    prepare: Callable[[dict, int], tuple[torch.Tensor, dict]] | None = None,
                    score: Callable = edm_error) -> float:
    """Mean over fixed noise levels sigma = r sigma_data (``VAL_SIGMA_RATIOS``) of ``score`` per example: by
    default the EDM-weighted error (``edm_error``), the same number for the same weights whatever the recipe's
    objective, so runs compare; a classifier's accuracy with ``classified``.

    The validation batches are split over the ``world`` processes (batch b on rank b mod world) and their sums
    added with ``all_sum``; batch b's noise comes from its own seed, so the result does not depend on ``world``.
    Every process runs the same number of forward passes (a sharded model gathers in each), the spare ones
    uncounted. ``prepare(batch, b)`` puts a collated batch on the device as (x0, cond).
    """
    was_training = model.training
    model.eval()
    prepare = prepare or (lambda batch, b: (batch["x"].to(device), {k: v.to(device) for k, v in batch["cond"].items()}))
    sd, batch_size = cfg.diffusion.sigma_data, cfg.data.batch_size
    totals = torch.zeros(len(VAL_SIGMA_RATIOS) + 1, dtype=torch.float64, device=device)  # per level, then count
    num_batches = -(-len(val_set) // batch_size)
    for first in range(0, num_batches, world):
        b = min(first + rank, num_batches - 1)
        counted = first + rank < num_batches
        indices = range(b * batch_size, min((b + 1) * batch_size, len(val_set)))
        x0, cond = prepare(fetch(val_set, list(indices)), b)
        g = torch.Generator().manual_seed(VAL_SEED + b)
        for i, ratio in enumerate(VAL_SIGMA_RATIOS):
            sigma = torch.full((len(x0),), ratio * sd, device=device)
            noise = torch.randn(x0.shape, generator=g).to(device)
            totals[i] += counted * score(model, x0, sigma, noise, cond, sd).double().sum()
        totals[-1] += counted * len(x0)
    totals = all_sum(totals)
    model.train(was_training)
    return float(totals[:-1].mean() / totals[-1].clamp(min=1))


@torch.no_grad()
def sample_media(model: nn.Module, schedule, cfg: RecipeConfig, example_shape: tuple[int, ...],
                 reference: Dataset, prepare: Callable[[dict, int], tuple[torch.Tensor, dict]]) -> Media:
    """Draw the recipe's sampling-default batch as ``polydiff sample`` would (its sampler, steps and guidance;
    a class-conditional model spreads the batch over its classes) and turn it into media with the modality's
    writer, real validation examples alongside when the data set has them. A model that needs conditions
    (a super-resolution stage's low-resolution input) is given those of validation examples (``prepare``
    applies the data transforms), and shows them beside its samples."""
    s, num = cfg.sample, cfg.sample.num
    was_training = model.training
    classes = getattr(model.backbone, "null_cond", {}).get("class_labels")
    required = getattr(model.backbone, "required_cond", ())
    available = len(reference) if hasattr(reference, "__len__") else 0
    cond, ref, labels = {}, None, None
    if required:
        num = min(num, available)
        if not num:
            return None
        ref, given = prepare(fetch(reference, list(range(num))), 0)
        cond = conditions_taken(model.backbone, given)
        labels = cond.get("class_labels")
    elif classes:
        labels = cond["class_labels"] = torch.arange(num) * classes // num
    samples = DiffusionModel.build(cfg, example_shape, model.eval(), schedule).sample(num, seed=s.seed,
                                                                                      cond=cond or None)
    model.train(was_training)
    n = min(available, len(samples))
    if ref is None and n:
        ref = fetch(reference, list(range(n)))["x"]
    writer = registry.get("writer", cfg.modality).target
    return writer(samples.cpu(), registry.WriteContext(cfg.data.range, cfg, None if ref is None else ref.cpu(),
                                                       None if labels is None else labels.tolist()))

"""Editing from Python, for any modality: SDEdit, inpainting (replacement or RePaint) and DDIM latent
interpolation with a loaded model (the math is in ``core.editing`` and ``core.samplers.ddim``)."""

from __future__ import annotations

import torch

from ..core.editing import repaint, replacement, start_from
from ..core.samplers import get_sampler
from ..core.samplers.ddim import slerp
from ..core.utils import randn_like, seeded_generators
from ..errors import UserError
from .build import build_sigmas
from .model import DiffusionModel


def _setup(model: DiffusionModel, x: torch.Tensor, steps, cond, seed):
    sigmas = build_sigmas(model.config, model.schedule, steps, sampling=model.sampling).to(model.device)
    generators = seeded_generators(range(seed, seed + len(x)), device=model.device)
    cond = None if cond is None else {k: torch.as_tensor(v).to(model.device) for k, v in cond.items()}
    return sigmas, generators, cond


def _check(model: DiffusionModel, x: torch.Tensor, what: str) -> torch.Tensor:
    if tuple(x.shape[1:]) != tuple(model.example_shape):
        raise UserError(f"{what} has shape {tuple(x.shape[1:])}; this model makes {tuple(model.example_shape)}")
    return x.to(model.device, torch.float32)


@torch.no_grad()
def edit(model: DiffusionModel, x: torch.Tensor, strength: float, *, sampler: str | None = None,
         steps: int | None = None, guidance: float | None = None, seed: int = 0, cond: dict | None = None):
    """SDEdit (Meng et al. 2022): each example of x (B, *S) noised to the level of ``strength`` in (0, 1] and
    solved back with the model's sampler; small strength keeps more of the input."""
    x = _check(model, x, "the input")
    sigmas, generators, cond = _setup(model, x, steps, cond, seed)
    start, grid = start_from(x, sigmas, strength, generators)
    denoiser = model.guided(guidance, cond)
    return get_sampler(sampler or model.sampling.sampler)(denoiser, start, grid, cond=cond, generator=generators)


@torch.no_grad()
def inpaint(model: DiffusionModel, known: torch.Tensor, keep: torch.Tensor, *, method: str = "replacement",
            resample: int = 10, sampler: str | None = None, steps: int | None = None, guidance: float | None = None,
            seed: int = 0, cond: dict | None = None):
    """Fill in what ``keep`` (broadcastable to known (B, *S); True = keep the input) leaves out: 'replacement'
    with any sampler, or 'repaint' (Lugmayr et al. 2022) with ``resample`` repetitions per step."""
    known = _check(model, known, "the input")
    keep = keep.to(model.device).to(torch.bool).expand_as(known)
    sigmas, generators, cond = _setup(model, known, steps, cond, seed)
    denoiser = model.guided(guidance, cond)
    x = sigmas[0] * randn_like(known, generators)
    if method == "repaint":
        return repaint(denoiser, x, sigmas, known, keep, resample=resample, cond=cond, generator=generators)
    if method != "replacement":
        raise UserError(f"unknown inpainting method {method!r}; use 'replacement' or 'repaint'")
    noise = randn_like(known, seeded_generators(range(seed + 10**6, seed + 10**6 + len(known)), model.device))
    return get_sampler(sampler or model.sampling.sampler)(replacement(denoiser, known, keep, noise), x, sigmas,
                                                          cond=cond, generator=generators)


@torch.no_grad()
def interpolate(model: DiffusionModel, seed_a: int, seed_b: int, num: int = 8, *, steps: int | None = None,
                guidance: float | None = None, cond: dict | None = None) -> torch.Tensor:
    """DDIM latent interpolation (Song et al. 2021, DDIM, sec. 5.4): the noises of two seeds, slerped at ``num``
    points from a to b, each solved by deterministic DDIM: (num, *S), from sample(seed_a) to sample(seed_b)."""
    if num < 2:
        raise UserError(f"interpolation needs at least 2 points, got {num}")
    shape = (1, *model.example_shape)
    proto = torch.empty(shape, device=model.device)
    za = randn_like(proto, seeded_generators([seed_a], model.device))
    zb = randn_like(proto, seeded_generators([seed_b], model.device))
    alphas = torch.linspace(0, 1, num, device=model.device)
    sigmas, _, cond = _setup(model, proto, steps, cond, 0)
    x = sigmas[0] * slerp(za, zb, alphas)  # (num, *S)
    cond = None if cond is None else {k: v.expand(num, *v.shape[1:]) for k, v in cond.items()}
    return get_sampler("ddim")(model.guided(guidance, cond), x, sigmas, cond=cond)

"""Editing with an unconditional (or conditional) model: start from an image, or keep part of it.

- SDEdit (Meng et al. 2022, "SDEdit: Guided Image Synthesis and Editing with Stochastic Differential
  Equations", sec. 3): noise the input to the level sigma of a chosen strength and solve from there; the
  result keeps the input's layout and gets the model's detail. ``start_from``.
- Inpainting by replacement (Song et al. 2021, "Score-Based Generative Modeling through SDEs", App. I.2;
  the baseline of Ho et al. 2022, "Video Diffusion Models", sec. 3.1): the known region is the input, noised
  to the current level, at every evaluation. Written as a denoiser wrapper (``replacement``) so any core
  sampler runs it: the network sees the known region at the right noise level, and the x0 prediction there
  is the known content, which the solver then follows down to sigma = 0.
- RePaint (Lugmayr et al. 2022, Algorithm 1): DDPM steps with the known region replaced, each step repeated
  ``resample`` times by noising back up one step (``repaint``), which harmonizes the two regions.

Shape-agnostic: ``mask`` broadcasts against x (B, *S), 1 / True where the content is known.
"""

from __future__ import annotations

import torch

from .forward_process import posterior_log_variances, posterior_mean
from .samplers.common import denoise, report, sigma_pairs
from .utils import Generator, append_dims, randn_like


def strength_sigma(sigmas: torch.Tensor, strength: float) -> float:
    """The noise level where an edit of ``strength`` in (0, 1] starts: the grid level at that fraction of the
    grid's steps (1 = the top level, i.e. an unconditional sample)."""
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must lie in (0, 1], got {strength}")
    levels = sigmas[:-1]  # without the final 0
    index = round((1.0 - strength) * (len(levels) - 1))
    return float(levels[index])


def start_from(x0: torch.Tensor, sigmas: torch.Tensor, strength: float, generator: Generator = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """SDEdit's start: (x0 + sigma_s n, the grid from sigma_s down), sigma_s = ``strength_sigma``; hand both to
    any sampler."""
    sigma = strength_sigma(sigmas, strength)
    grid = sigmas[sigmas <= sigma * (1 + 1e-6)]
    return x0 + sigma * randn_like(x0, generator), grid


def with_known(x: torch.Tensor, sigma: torch.Tensor, known: torch.Tensor, mask: torch.Tensor,
               noise: torch.Tensor) -> torch.Tensor:
    """``x`` (B, *S) at level ``sigma`` (B,) with the known region (``mask`` 1) replaced by known + sigma n: a sample
    of q(x^a_sigma | x^a) from the fixed noise n (``noise``), the replacement method's network input."""
    mask = mask.to(x.dtype)
    return mask * (known + append_dims(sigma, x.ndim).to(x.dtype) * noise) + (1 - mask) * x


def replacement(denoiser, known: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor):
    """A denoiser whose input has the known region replaced by known + sigma n (one fixed n per sample) and
    whose x0 prediction is ``known`` there: inpainting (or frame conditioning) by replacement."""
    mask = mask.to(known.dtype)

    def inpainted(x: torch.Tensor, sigma: torch.Tensor, cond=None) -> torch.Tensor:
        x0 = denoiser(with_known(x, sigma, known, mask, noise), sigma, cond)
        return mask * known + (1 - mask) * x0

    return inpainted


@torch.no_grad()
def repaint(denoiser, x: torch.Tensor, sigmas: torch.Tensor, known: torch.Tensor, mask: torch.Tensor, *,
            resample: int = 10, cond=None, generator: Generator = None, callback=None) -> torch.Tensor:
    """RePaint (Lugmayr et al. 2022, Algorithm 1) in sigma form: for each grid interval sigma -> sigma_next, a
    DDPM posterior step (``forward_process``) for the unknown region and the forward process for the known
    one; ``resample`` times, noised back up to sigma (x + sqrt(sigma^2 - sigma_next^2) n) and stepped again."""
    mask = mask.to(x.dtype)
    for i, sigma, sigma_next in sigma_pairs(sigmas):
        repeats = max(1, resample) if sigma_next > 0.0 else 1
        for r in range(repeats):
            denoised = denoise(denoiser, x, sigma, cond)
            if sigma_next == 0.0:
                x = denoised
            else:
                log_small, _ = posterior_log_variances(torch.tensor(sigma, dtype=torch.float64),
                                                       torch.tensor(sigma_next, dtype=torch.float64))
                mean = posterior_mean(x, denoised, sigma, sigma_next)
                x = mean + float((0.5 * log_small).exp()) * randn_like(x, generator)
            x = mask * (known + sigma_next * randn_like(x, generator)) + (1 - mask) * x
            if r < repeats - 1:  # jump back up one interval and repeat
                x = x + (sigma**2 - sigma_next**2) ** 0.5 * randn_like(x, generator)
        report(callback, i, x, sigma, sigma_next, denoised)
    return x

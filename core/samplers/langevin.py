"""Langevin dynamics: the update shared with the predictor-corrector sampler, and NCSN's annealed
Langevin sampler (Song & Ermon 2019, 'Generative Modeling by Estimating Gradients of the Data
Distribution', Algorithm 1), with the score from the denoiser, s(x, sigma) = (D(x, sigma) - x) / sigma^2.
"""

from __future__ import annotations

import torch

from ..precond import x0_to_score
from ..utils import append_dims, batch_sigma, randn_like
from .common import denoise, run_steps, sigma_pairs
from .registry import register

NCSN_STEP_RATIO = 2e-5 / 0.01**2  # step_lr / sigma_L^2 of Song & Ermon (2019), sec. 5


def score_and_denoised(denoiser, x: torch.Tensor, sigma: float, cond=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(grad_x log p_sigma(x), x0_hat) from one denoiser call (Tweedie: s = (x0_hat - x) / sigma^2)."""
    denoised = denoise(denoiser, x, sigma, cond)
    return x0_to_score(denoised, x, batch_sigma(sigma, x)), denoised


def langevin_update(x: torch.Tensor, score: torch.Tensor, step_size, noise: torch.Tensor) -> torch.Tensor:
    """One Langevin step x + eps s + sqrt(2 eps) z (Song et al. 2021, Algorithm 4; NCSN Algorithm 1 line 6
    with alpha = 2 eps). ``step_size`` eps: a float or a per-sample (B,) tensor."""
    if isinstance(step_size, torch.Tensor):
        step_size = append_dims(step_size, x.ndim)
        return x + step_size * score + (2 * step_size).sqrt() * noise
    return x + step_size * score + (2 * step_size) ** 0.5 * noise


@register("annealed_langevin", stochastic=True)
def annealed_langevin(
    denoiser, x, sigmas, *, cond=None, generator=None, callback=None, step_lr=None, n_steps_each=100
) -> torch.Tensor:
    """NCSN annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    For each nonzero level sigma_i: alpha_i = step_lr * sigma_i^2 / sigma_L^2 (sigma_L the smallest
    nonzero level) and ``n_steps_each`` updates x <- x + alpha_i / 2 s(x, sigma_i) + sqrt(alpha_i) z.
    The final step to sigma = 0 is the denoising jump x <- D(x, sigma_L) = x + sigma_L^2 s(x, sigma_L)
    (Song & Ermon 2020, NCSNv2, 'denoising').

    step_lr is the step at sigma_L, so it only makes sense relative to sigma_L^2 (the update is unstable
    once alpha_i > 2 sigma_i^2, i.e. step_lr > 2 sigma_L^2). The default None keeps the paper's ratio,
    step_lr = 2e-5 at sigma_L = 0.01, i.e. step_lr = 0.2 sigma_L^2; n_steps_each = 100 as in the paper.
    """
    if n_steps_each < 1:
        raise ValueError(f"n_steps_each must be >= 1, got {n_steps_each}")
    sigma_last = [s for _, s, _ in sigma_pairs(sigmas)][-1]
    step_lr = NCSN_STEP_RATIO * sigma_last**2 if step_lr is None else step_lr

    def step(i, x, sigma, sigma_next):
        alpha = step_lr * (sigma / sigma_last) ** 2
        for _ in range(n_steps_each):
            score, denoised = score_and_denoised(denoiser, x, sigma, cond)
            x = langevin_update(x, score, alpha / 2, randn_like(x, generator))
        if sigma_next == 0.0:
            denoised = denoise(denoiser, x, sigma, cond)
            x = denoised
        return x, denoised

    return run_steps(x, sigmas, step, callback)

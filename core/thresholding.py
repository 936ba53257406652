"""Static and dynamic thresholding of the x0 prediction (Saharia et al. 2022, Imagen, sec. 2.3).

Both wrap a denoiser and return a denoiser, so they compose with guidance:
``dynamic_thresholding(classifier_free_guidance(D, 7.0, null))``. Data are assumed to lie in
[-limit, limit] (limit = 1 for images scaled to [-1, 1]).
"""

from __future__ import annotations

import torch

from .denoiser import Cond, Denoiser
from .utils import append_dims


def per_sample_quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """The q-quantile of each sample over its non-batch dims, (B, *S) -> (B,), with linear interpolation
    (as ``torch.quantile``), via ``kthvalue`` so that large video tensors (> 2^24 values) work."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must lie in [0, 1], got {q}")
    flat = values.flatten(1)  # (B, N)
    n = flat.shape[1]
    position = q * (n - 1)
    below = int(position)
    frac = position - below
    v_below = flat.kthvalue(below + 1, dim=1).values  # kthvalue is 1-based: (B,)
    v_above = flat.kthvalue(min(below + 2, n), dim=1).values
    return v_below + frac * (v_above - v_below)


def static_thresholding(denoiser: Denoiser, limit: float = 1.0) -> Denoiser:
    """Static thresholding (Imagen sec. 2.3): clip x0_hat to [-limit, limit]."""

    def thresholded(x: torch.Tensor, sigma: torch.Tensor, cond: Cond = None) -> torch.Tensor:
        return denoiser(x, sigma, cond).clamp(-limit, limit)

    return thresholded


def dynamic_thresholding(denoiser: Denoiser, percentile: float = 0.995, limit: float = 1.0) -> Denoiser:
    """Dynamic thresholding (Imagen sec. 2.3): s = max(1, quantile_p(|x0_hat|)) per sample, then clip
    x0_hat to [-s, s] and divide by s. With ``limit`` L the data range is [-L, L]: s = max(L, quantile),
    x0_hat -> clip(x0_hat, -s, s) L / s. Predictions already within range (quantile <= L) are unchanged.
    """

    def thresholded(x: torch.Tensor, sigma: torch.Tensor, cond: Cond = None) -> torch.Tensor:
        x0 = denoiser(x, sigma, cond)
        s = append_dims(per_sample_quantile(x0.abs(), percentile).clamp(min=limit), x0.ndim)
        return x0.clamp(-s, s) * (limit / s)

    return thresholded

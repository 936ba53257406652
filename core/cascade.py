"""Cascades: how a super-resolution stage is conditioned on the stage before it (Ho et al. 2021, "Cascaded
Diffusion Models for High Fidelity Image Generation", CDM; Saharia et al. 2022, Imagen, sec. 2.5).

A stage sees the previous one only through ``cond`` (``lowres`` and ``aug_level``). Conditioning augmentation
corrupts the low-resolution input during training, so the stage learns to fix the errors the previous stage
makes at sampling time (CDM sec. 4):

- Gaussian, at a level a in [0, 1] given to the network: the variance-preserving forward process with the
  cosine map abar(a) = cos^2(pi a / 2), i.e. sigma(a) = tan(pi a / 2) (a = 0 clean, a = 1 pure noise):
      lowres_a = sqrt(abar) lowres + sqrt(1 - abar) n                    (CDM sec. 4.1, eq. 5; Imagen App. B)
  Non-truncated: at sampling time the previous stage runs to the end and its sample is noised at a chosen a.
  Truncated (CDM sec. 4.2): the previous stage stops at sigma(a) and its noisy state, in VP form, is the
  input (``vp_state``): the same distribution the stage was trained on, without the last steps.
- Gaussian blur of the low-resolution image (CDM sec. 4.1, at the higher resolutions): a 3x3 kernel with a
  per-example sigma, applied to a fraction of the examples.

Shape-agnostic: lowres (B, C, *S), the last two dimensions are the image plane (video frames resample
frame by frame).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from .utils import append_dims


def aug_sigma(level: torch.Tensor) -> torch.Tensor:
    """sigma(a) = tan(pi a / 2): the sigma-form noise level of augmentation level a in [0, 1) (cosine VP map)."""
    return torch.tan(math.pi / 2 * level.clamp(0, 1 - 1e-6))


def noise_lowres(lowres: torch.Tensor, level: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """sqrt(abar(a)) lowres + sqrt(1 - abar(a)) n with abar(a) = cos^2(pi a / 2), per example (level (B,))."""
    angle = append_dims(math.pi / 2 * level.to(lowres.dtype), lowres.ndim)
    return angle.cos() * lowres + angle.sin() * noise


def vp_state(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """A sampler's sigma-form state x = x0 + sigma n as the VP latent x / sqrt(1 + sigma^2), which is
    ``noise_lowres(x0, a, n)`` for sigma = sigma(a): truncated conditioning (CDM sec. 4.2)."""
    return x * append_dims((1 + sigma.to(x.dtype) ** 2).rsqrt(), x.ndim)


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The last two dimensions of x (B, C, *S) resized to ``size``: area-averaging / antialiased bilinear when
    reducing (no aliasing in the low-resolution image), bilinear when enlarging."""
    lead = x.shape[:-2]
    flat = x.reshape(-1, 1, *x.shape[-2:])  # (B*C*..., 1, H, W): one image plane per row
    shrinking = size[0] < x.shape[-2] or size[1] < x.shape[-1]
    out = F.interpolate(flat, size=size, mode="bilinear", align_corners=False, antialias=shrinking)
    return out.reshape(*lead, *size)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each example of x (B, C, *S) blurred in its last two dimensions with a 3x3 Gaussian of its own sigma
    (B,) (CDM's blur augmentation); sigma 0 leaves the example unchanged."""
    taps = torch.arange(-1, 2, dtype=torch.float64, device=x.device)  # the 3 offsets -1, 0, 1
    s = sigma.to(torch.float64).clamp(min=1e-6)[:, None]
    kernel = torch.exp(-(taps[None] ** 2) / (2 * s**2))
    kernel = (kernel / kernel.sum(1, keepdim=True)).to(x.dtype)  # (B, 3), separable
    b, h, w = x.shape[0], x.shape[-2], x.shape[-1]
    planes = x.reshape(b, -1, h, w)  # (B, P, H, W): every plane of an example shares its kernel
    p = planes.shape[1]
    padded = F.pad(planes, (1, 1, 1, 1), mode="replicate")
    rows = F.conv2d(padded.reshape(1, b * p, h + 2, w + 2), kernel.repeat_interleave(p, 0)[:, None, None, :],
                    groups=b * p)  # horizontal pass: (1, B*P, H+2, W)
    cols = F.conv2d(rows, kernel.repeat_interleave(p, 0)[:, None, :, None], groups=b * p)  # vertical: (1, B*P, H, W)
    return cols.reshape(x.shape)

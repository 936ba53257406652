"""Conditioning augmentation: the forward process at a level, truncated states, blur, resizing."""

from __future__ import annotations

import math

import torch

from polydiff.core.cascade import aug_sigma, gaussian_blur, noise_lowres, resize, vp_state


def test_levels_run_from_clean_to_pure_noise():
    x, n = torch.randn(3, 2, 4, 4), torch.randn(3, 2, 4, 4)
    torch.testing.assert_close(noise_lowres(x, torch.zeros(3), n), x)
    torch.testing.assert_close(noise_lowres(x, torch.ones(3), n), n, atol=1e-6, rtol=0)
    half = noise_lowres(x, torch.full((3,), 0.5), n)
    torch.testing.assert_close(half, (x + n) / math.sqrt(2))  # abar = cos^2(pi/4) = 1/2: variance preserving


def test_a_truncated_state_is_the_augmented_input():
    """vp_state(x0 + sigma(a) n, sigma(a)) = noise_lowres(x0, a, n): truncated and non-truncated conditioning
    give the stage inputs of one distribution (CDM sec. 4.2)."""
    x0, n = torch.randn(4, 1, 3, 3, dtype=torch.float64), torch.randn(4, 1, 3, 3, dtype=torch.float64)
    a = torch.tensor([0.0, 0.1, 0.4, 0.8], dtype=torch.float64)
    sigma = aug_sigma(a)
    torch.testing.assert_close(vp_state(x0 + sigma[:, None, None, None] * n, sigma), noise_lowres(x0, a, n))


def test_blur_is_per_example_and_keeps_the_mean():
    x = torch.zeros(2, 1, 7, 7)
    x[:, :, 3, 3] = 1.0
    out = gaussian_blur(x, torch.tensor([1e-6, 1.0]))
    torch.testing.assert_close(out[0], x[0], atol=1e-6, rtol=0)  # sigma -> 0: unchanged
    spread = out[1, 0, 2:5, 2:5]
    assert abs(float(spread.sum()) - 1.0) < 1e-6 and float(spread[1, 1]) < 0.5  # mass kept, spread out
    w = math.exp(-1 / 2)
    torch.testing.assert_close(spread[1, 0] / spread[1, 1], torch.tensor(w))  # the 3-tap Gaussian's ratio


def test_resizing_averages_when_reducing():
    x = torch.arange(16.0).reshape(1, 1, 4, 4)
    small = resize(x, (2, 2))
    torch.testing.assert_close(small.mean(), x.mean())
    assert resize(torch.randn(2, 3, 5, 8, 8), (4, 4)).shape == (2, 3, 5, 4, 4)  # video: frame by frame

"""Editing on the analytic mixture (exact denoiser): SDEdit's start, inpainting keeps what it must keep."""

from __future__ import annotations

import pytest
import torch

from polydiff.core.analytic import random_mixture
from polydiff.core.editing import repaint, replacement, start_from, strength_sigma
from polydiff.core.grids import karras_sigmas
from polydiff.core.samplers import SAMPLERS
from polydiff.core.utils import seeded_generators

pytestmark = pytest.mark.usefixtures("float64")


def test_strength_picks_a_level_of_the_grid():
    sigmas = karras_sigmas(10, 0.01, 50.0)
    assert strength_sigma(sigmas, 1.0) == float(sigmas[0])
    assert strength_sigma(sigmas, 0.1) == float(sigmas[8])
    x0 = torch.zeros(2, 3)
    start, grid = start_from(x0, sigmas, 0.5, seeded_generators([0, 1]))
    assert float(grid[0]) == strength_sigma(sigmas, 0.5) and float(grid[-1]) == 0.0
    assert float(start.std()) > 0
    with pytest.raises(ValueError, match="strength"):
        strength_sigma(sigmas, 0.0)


def test_inpainting_keeps_the_known_part_and_fills_the_rest_from_the_model():
    mixture = random_mixture(dim=4, components=3, seed=2)
    sigmas = karras_sigmas(30, 0.002, 80.0)
    known, _ = mixture.sample(6, generator=torch.Generator().manual_seed(3))
    keep = torch.tensor([True, True, False, False])
    x = sigmas[0] * torch.randn(6, 4, generator=torch.Generator().manual_seed(4))
    filled = SAMPLERS["heun"](replacement(mixture, known, keep, torch.randn(6, 4)), x, sigmas)
    torch.testing.assert_close(filled[:, :2], known[:, :2])
    painted = repaint(mixture, x, sigmas, known, keep, resample=3, generator=seeded_generators(range(6)))
    torch.testing.assert_close(painted[:, :2], known[:, :2])
    # the filled coordinates are plausible: closer to a mixture mean than pure noise would be
    assert float(filled[:, 2:].abs().max()) < 10 and float(painted[:, 2:].abs().max()) < 10

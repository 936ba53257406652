"""The toy modality: the MLP's null label is the path an unconditional sample takes; the points writer."""

from __future__ import annotations

import pytest
import torch

from polydiff.core.precond import Precond
from polydiff.errors import UserError
from polydiff.modalities.toy.mlp import MLPBackbone, MLPOptions
from polydiff.modalities.toy.points import write_points
from polydiff.registry import BackboneSpec, WriteContext


def conditional_mlp() -> Precond:
    torch.manual_seed(0)
    backbone = MLPBackbone(MLPOptions(hidden=16, depth=1, embed_dim=8, num_classes=3), BackboneSpec((2,)))
    with torch.no_grad():
        for p in backbone.parameters():
            p.normal_(0, 0.5)
    return Precond(backbone, "edm", sigma_data=0.5)


def test_an_unconditional_call_uses_the_trained_null_label():
    denoiser = conditional_mlp()
    x, sigma = torch.randn(4, 2), torch.full((4,), 0.7)
    null = denoiser(x, sigma, {"class_labels": torch.full((4,), 3)})
    torch.testing.assert_close(denoiser(x, sigma), null, rtol=0, atol=0)
    torch.testing.assert_close(denoiser(x, sigma, {}), null, rtol=0, atol=0)
    assert not torch.allclose(denoiser(x, sigma, {"class_labels": torch.zeros(4, dtype=torch.long)}), null)


def test_the_mlp_takes_vectors_only():
    with pytest.raises(UserError, match=r"takes vectors \(D,\), but the examples have shape \(1, 8\)"):
        MLPBackbone(MLPOptions(), BackboneSpec((1, 8)))


def test_points_writer_draws_samples_next_to_data():
    alone = write_points(torch.randn(100, 2), WriteContext((-2.0, 2.0)))
    both = write_points(torch.randn(100, 2), WriteContext((-2.0, 2.0), reference=torch.randn(50, 2)))
    assert alone.pixels.ndim == 3 and both.pixels.shape[1] > 1.5 * alone.pixels.shape[1]
    assert alone.pixels.std() > 0  # something is drawn

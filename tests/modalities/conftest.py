"""Fixtures shared by the modality tests."""

from __future__ import annotations

import pytest
import torch

from polydiff.commands.train import RECIPES_DIR
from polydiff.pipeline import DiffusionModel
from polydiff.recipes.files import load_recipe


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> DiffusionModel:
    """An untrained tiny WaveGrad built from its recipe and saved as a model folder (16 kHz, hop 200, 80 bins);
    a test module may define its own ``tiny``."""
    torch.manual_seed(0)
    cfg = load_recipe(RECIPES_DIR / "audio/wavegrad_tiny.toml")
    folder = DiffusionModel.build(cfg, (1, 4000)).save_pretrained(tmp_path_factory.mktemp("tiny") / "model")
    return DiffusionModel.from_pretrained(folder)

"""Sampling without training: models rebuilt from their recipes, model folders, and pipelines of stages.

    from polydiff.pipeline import DiffusionModel
    model = DiffusionModel.from_pretrained("runs/swiss_roll/model")
    x = model.sample(16, sampler="heun", steps=18, seed=0)
"""

from .model import DiffusionModel
from .stages import Pipeline, Stage

__all__ = ["DiffusionModel", "Pipeline", "Stage"]

"""A trained model as a user meets it: ``DiffusionModel.from_pretrained(dir)`` and ``.sample(...)``.

A model folder (``save_pretrained``) holds config.json (the resolved recipe and the sampling defaults)
and model.safetensors (the EMA weights); the recipe rebuilds the exact denoiser it was trained as.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .core.guidance import classifier_free_guidance
from .core.precond import Precond
from .core.schedules import Schedule
from .recipes.config import ConfigError, config_from_dict
from .recipes.schema import RecipeConfig
from .train.build import build_denoiser, build_schedule, build_sigmas
from .train.guards import CheckpointError
from .train.periodic import draw_samples, event_shape, save_model
from .train.pretrained import load_pretrained_files


@dataclass
class DiffusionModel:
    """A denoiser with its schedule, recipe and sampling defaults."""

    denoiser: Precond
    schedule: Schedule
    config: RecipeConfig
    sampling: dict

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> DiffusionModel:
        """Load a model folder; a folder that is not a polydiff model raises ``CheckpointError`` (one line)."""
        state, config, sampling = load_pretrained_files(path)
        try:
            cfg = config_from_dict(RecipeConfig, config, source=str(Path(path) / "config.json"))
        except ConfigError as err:
            raise CheckpointError(str(err)) from None
        schedule = build_schedule(cfg)
        denoiser = build_denoiser(cfg, schedule)
        try:
            denoiser.load_state_dict(state)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise CheckpointError(f"{path}: weights do not fit the recipe's model ({first})") from None
        return cls(denoiser.to(device).eval().requires_grad_(False), schedule, cfg, sampling)

    def save_pretrained(self, path: str | Path) -> Path:
        """Write this model as a shareable folder."""
        return save_model(self.denoiser, self.config, Path(path))

    @torch.no_grad()
    def sample(self, num: int = 16, *, sampler: str | None = None, steps: int | None = None, spacing: str | None = None,
               guidance: float | None = None, seed: int = 0, cond: dict | None = None) -> torch.Tensor:
        """``num`` samples (num, *S); defaults from the model folder. Sample i uses seed + i, so a batch
        equals its samples drawn one at a time. ``guidance`` w != 1 needs a conditional model and ``cond``."""
        denoiser = self.denoiser
        _check_labels(denoiser, cond)
        w = self.sampling.get("guidance", 1.0) if guidance is None else guidance
        if w != 1.0:
            null = getattr(denoiser.backbone, "null_cond", None)
            if not (cond and null):
                raise ValueError("guidance other than 1 needs a conditional model and a condition to guide towards")
            denoiser = classifier_free_guidance(denoiser, w, null, rescale=self.config.sample.guidance_rescale)
        device = next(self.denoiser.parameters()).device
        sigmas = build_sigmas(self.config, self.schedule, steps or self.sampling["steps"],
                              spacing or self.sampling.get("spacing")).to(device)
        return draw_samples(denoiser, sigmas, event_shape(self.config), num, sampler or self.sampling["sampler"],
                            seed, cond)


def _check_labels(denoiser, cond: dict | None) -> None:
    """Class labels must be 0..num_classes-1 of a class-conditional model (its null label is num_classes)."""
    if not cond or "class_labels" not in cond:
        return
    null = getattr(denoiser.backbone, "null_cond", {}).get("class_labels")
    if null is None:
        raise ValueError("this model is not class-conditional: it takes no class label")
    labels = cond["class_labels"]
    if bool(((labels < 0) | (labels >= null)).any()):
        raise ValueError(f"class labels must be in 0..{null - 1} for this model, got {labels.unique().tolist()}")

"""Cascade folders: stages trained one by one (one recipe each), sampled together.

    <dir>/cascade.json   {"polydiff_cascade": 1,
                          "stages": [{"model": "base/model"},
                                     {"model": "sr/model", "aug_level": 0.2, "truncated": false,
                                      "sampler": "heun", "steps": 18, "guidance": 1.0}]}

``model`` is a model folder, relative to the cascade folder or absolute. Every stage after the first is a
super-resolution stage conditioned on the previous stage's samples through ``cond`` (``lowres``, ``aug_level``;
``core.cascade``): non-truncated, the previous stage runs to the end and its samples are noised at
``aug_level``; truncated, it stops at that level and hands over its noisy state (Ho et al. 2021, CDM, sec. 4).
The augmentation level is chosen after training (CDM and Imagen sweep it): ``with_aug_level``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from ..core.cascade import aug_sigma, noise_lowres, vp_state
from ..core.utils import randn_like, seeded_generators
from ..recipes.config import Config, ConfigError, config_from_dict, config_to_dict, setting
from ..storage.files import read_json, write_json
from ..storage.output import make_output_dir
from ..storage.guards import CheckpointError
from .model import DiffusionModel
from .stages import Pipeline, Stage

CASCADE_FILE = "cascade.json"
CASCADE_FORMAT = 1
NOISE_SEED_OFFSET = 1_000_003  # the augmentation noise of sample i uses seed i + this (not the stage's own noise)


@dataclass(frozen=True)
class CascadeStageConfig(Config):
    model: str = setting(doc="the stage's model folder, relative to the cascade folder or absolute")
    aug_level: float = setting(0.0, ge=0, lt=1, doc="conditioning augmentation level of this stage's input (not "
                                                    "used by the first stage)")
    truncated: bool = setting(False, doc="stop the previous stage at the augmentation level (CDM sec. 4.2)")
    sampler: str | None = setting(None, doc="this stage's sampler; \"none\": the model's default")
    steps: int | None = setting(None, gt=0, le=100_000, doc="this stage's sampling steps")
    guidance: float | None = setting(None, ge=0, doc="this stage's classifier-free guidance weight")
    dynamic_threshold: float | None = setting(None, ge=0, lt=1, doc="this stage's dynamic thresholding percentile")


@dataclass(frozen=True)
class CascadeConfig(Config):
    stages: tuple[CascadeStageConfig, ...] = setting(doc="the stages, lowest resolution first")

    def check(self) -> None:
        if len(self.stages) < 2:
            raise ConfigError(("stages",), "{key} must list at least two stages (a base and a super-resolution stage)")


@dataclass
class LowresCondition:
    """A super-resolution stage's ``cond`` from the previous stage's samples (``pipeline.stages.Conditioner``)."""

    level: float
    truncated: bool = False

    @property
    def stop_sigma(self) -> float | None:
        return float(aug_sigma(torch.tensor(self.level))) if self.truncated and self.level > 0 else None

    def __call__(self, previous: torch.Tensor, cond: dict, seeds: range) -> dict:
        level = torch.full((len(previous),), self.level, dtype=previous.dtype, device=previous.device)
        if self.stop_sigma is not None:  # the previous stage stopped at sigma(a): its state is the input
            lowres = vp_state(previous, torch.full_like(level, self.stop_sigma))
        else:
            generators = seeded_generators([s + NOISE_SEED_OFFSET for s in seeds], device=previous.device)
            lowres = noise_lowres(previous, level, randn_like(previous, generators))
        return {**cond, "lowres": lowres, "aug_level": level}


def is_cascade(path: str | Path) -> bool:
    return (Path(path) / CASCADE_FILE).is_file()


def _stage_options(stage: CascadeStageConfig) -> dict:
    keys = ("sampler", "steps", "guidance", "dynamic_threshold")
    return {k: getattr(stage, k) for k in keys if getattr(stage, k) is not None}


def read_cascade(path: str | Path, device: str | torch.device = "cpu") -> Pipeline:
    """The pipeline of a cascade folder; a wrong or missing piece is one line naming cascade.json."""
    path = Path(path)
    doc = read_json(path / CASCADE_FILE)
    if not isinstance(doc, dict) or type(doc.get("polydiff_cascade")) is not int:
        raise CheckpointError(f"{path / CASCADE_FILE} is not a polydiff cascade (no 'polydiff_cascade' marker)")
    cfg = config_from_dict(CascadeConfig, {k: v for k, v in doc.items() if k != "polydiff_cascade"},
                           source=str(path / CASCADE_FILE))
    stages = []
    for i, stage in enumerate(cfg.stages):
        folder = Path(stage.model) if Path(stage.model).is_absolute() else path / stage.model
        model = DiffusionModel.from_pretrained(folder, device)
        condition = LowresCondition(stage.aug_level, stage.truncated) if i else None
        if i and "lowres" not in getattr(model.denoiser.backbone, "required_cond", ()):
            raise CheckpointError(f"{path / CASCADE_FILE}: stage {i} ({folder}) is not a super-resolution model "
                                  f"(it takes no low-resolution input)")
        stages.append(Stage(model, condition, _stage_options(stage)))
    return Pipeline(stages)


def write_cascade(path: str | Path, stages: list[dict]) -> Path:
    """Write ``path/cascade.json`` from stage dicts (``CascadeStageConfig`` keys), validated first; the file is
    replaced atomically, other files in the folder are left alone. Returns the folder."""
    cfg = config_from_dict(CascadeConfig, {"stages": stages}, source="the cascade's stages")
    folder = make_output_dir(path, "the cascade folder")
    staging = folder / f".{CASCADE_FILE}.tmp"
    write_json(staging, {"polydiff_cascade": CASCADE_FORMAT, **config_to_dict(cfg)})
    os.replace(staging, folder / CASCADE_FILE)
    return folder


def with_aug_level(pipeline: Pipeline, level: float) -> Pipeline:
    """The same cascade with every super-resolution stage's augmentation level set to ``level``."""
    stages = [replace(s, condition=LowresCondition(level, s.condition.truncated)) if s.condition is not None else s
              for s in pipeline.stages]
    return Pipeline(stages)

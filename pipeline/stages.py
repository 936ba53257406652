"""A pipeline is a sequence of stages, each a model plus how it is conditioned on what came before.

One stage is a plain model. A cascade (Ho et al. 2021, "Cascaded Diffusion Models") is a base stage followed
by super-resolution stages whose ``condition`` turns the previous stage's samples into their ``cond`` (e.g.
the up-sampled low-resolution image and the augmentation level); a vocoder is one stage conditioned on a mel
spectrogram the user passes in ``cond``. Stages learn about each other only through ``cond`` (CONTRIBUTING.md,
principle 6), so no new class is needed for either.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .model import DiffusionModel

# (previous stage's samples or None for the first stage, the user's cond) -> this stage's cond
Conditioner = Callable[[torch.Tensor | None, Mapping[str, torch.Tensor]], dict]


@dataclass
class Stage:
    """A model in a pipeline, its conditioning on the previous stage (None: it takes the user's ``cond`` as is)
    and its own sampling options (``sampler``, ``steps``, ``spacing``, ``guidance``), which win over the call's."""

    model: DiffusionModel
    condition: Conditioner | None = None
    options: dict[str, Any] = field(default_factory=dict)


class Pipeline:
    """Stages run in order; the last stage's samples are the result."""

    def __init__(self, stages: Sequence[Stage]):
        if not stages:
            raise ValueError("a pipeline needs at least one stage")
        self.stages = list(stages)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> Pipeline:
        """A one-stage pipeline of the model folder at ``path``."""
        return cls([Stage(DiffusionModel.from_pretrained(path, device))])

    @property
    def last(self) -> DiffusionModel:
        return self.stages[-1].model

    def sample(self, num: int, *, cond: Mapping[str, torch.Tensor] | None = None, seed: int = 0,
               batch_size: int | None = None, on_stage: Callable[[int, torch.Tensor], None] | None = None,
               **options) -> torch.Tensor:
        """Run every stage on ``num`` samples with seeds seed..seed+num-1, ``batch_size`` at a time (all at once by
        default; per-sample seeds make the result the same either way), collected on the CPU; ``options``
        (sampler, steps, spacing, guidance) apply to every stage that does not set its own; ``on_stage(i, samples)``
        sees each stage's result of each batch."""
        batch_size = batch_size or num
        chunks = []
        for first in range(0, num, batch_size):
            n = min(batch_size, num - first)
            part = {k: v[first : first + n] for k, v in (cond or {}).items()}
            chunks.append(self._run(n, part, seed + first, on_stage, options).cpu())
        return torch.cat(chunks)

    def _run(self, num: int, cond: dict, seed: int, on_stage, options: dict) -> torch.Tensor:
        previous = None
        for i, stage in enumerate(self.stages):
            stage_cond = stage.condition(previous, cond) if stage.condition else cond
            previous = stage.model.sample(num, seed=seed, cond=stage_cond or None, **{**options, **stage.options})
            if on_stage is not None:
                on_stage(i, previous)
        return previous

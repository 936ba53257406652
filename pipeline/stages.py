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
from typing import Any, Protocol

import torch

from ..core.conditioning import conditions_taken
from .model import DiffusionModel

class Conditioner(Protocol):
    """Makes a stage's ``cond`` from the previous stage's samples and the user's ``cond``; ``seeds`` are the
    samples' seeds (for any noise it draws). ``stop_sigma``: the previous stage stops at this noise level and
    hands over its noisy state (a cascade's truncated conditioning), or None to run to the end."""

    stop_sigma: float | None

    def __call__(self, previous: torch.Tensor, cond: Mapping[str, torch.Tensor], seeds: range) -> dict: ...


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
        """The pipeline of a cascade folder (``pipeline.cascade``), or a one-stage pipeline of a model folder."""
        from .cascade import is_cascade, read_cascade

        if is_cascade(path):
            return read_cascade(path, device)
        return cls([Stage(DiffusionModel.from_pretrained(path, device))])

    @property
    def first(self) -> DiffusionModel:
        return self.stages[0].model

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
        previous, seeds = None, range(seed, seed + num)
        for i, stage in enumerate(self.stages):
            stage_cond = stage.condition(previous, cond, seeds) if stage.condition else cond
            if len(self.stages) > 1:  # the user's cond is the whole pipeline's: each stage takes what it uses
                stage_cond = conditions_taken(stage.model.denoiser.backbone, stage_cond)
            following = self.stages[i + 1].condition if i + 1 < len(self.stages) else None
            stop = getattr(following, "stop_sigma", None)
            previous = stage.model.sample(num, seed=seed, cond=stage_cond or None, stop_sigma=stop,
                                          **{**options, **stage.options})
            if on_stage is not None:
                on_stage(i, previous)
        return previous

"""A trained model as a user meets it: ``DiffusionModel.from_pretrained(dir)`` and ``.sample(...)``.

A model folder (``model_folder``) holds the resolved recipe, the example shape, the sampling defaults and the
EMA weights; the recipe rebuilds the exact denoiser it was trained as. Loading a model never imports the
trainer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.conditioning import conditions_taken, with_null_defaults
from ..core.guidance import classifier_free_guidance
from ..core.precond import Precond
from ..core.samplers import SAMPLERS
from ..core.thresholding import dynamic_thresholding
from ..core.schedules import Schedule
from ..errors import UserError
from ..recipes.config import ConfigError, config_from_dict, config_to_dict
from ..recipes.schema import RecipeConfig, SampleConfig
from ..storage.guards import CheckpointError
from .build import build_denoiser, build_schedule, build_sigmas
from .classifier import check_guide, classifier_guided, is_classifier
from .model_folder import CONFIG_FILE, read_model_folder, write_model_folder
from .sampling import draw_samples


def _typed(cls: type, data: dict, section: str, path: Path):
    """``data`` as config class ``cls``; an error names config.json and the key path inside ``section``."""
    try:
        return config_from_dict(cls, data)
    except ConfigError as err:
        raise err.within((section,)).from_source(str(path / CONFIG_FILE)) from None


@dataclass
class DiffusionModel:
    """A denoiser with its schedule, recipe, example shape and sampling defaults."""

    denoiser: Precond
    schedule: Schedule
    config: RecipeConfig
    example_shape: tuple[int, ...]
    sampling: SampleConfig
    source: Path | None = None  # the model folder it was loaded from

    @classmethod
    def build(cls, config: RecipeConfig, example_shape: tuple[int, ...], denoiser: Precond | None = None,
              schedule: Schedule | None = None) -> DiffusionModel:
        """A model from its recipe (fresh weights unless ``denoiser`` is given); sampling defaults from [sample]."""
        schedule = schedule or build_schedule(config)
        denoiser = denoiser if denoiser is not None else build_denoiser(config, example_shape, schedule)
        return cls(denoiser, schedule, config, tuple(example_shape), config.sample)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> DiffusionModel:
        """Load a model folder; anything wrong with it is a one-line ``UserError`` naming the file."""
        path = Path(path)
        files = read_model_folder(path)
        cfg = _typed(RecipeConfig, files.config, "config", path)
        sampling = _typed(SampleConfig, {**config_to_dict(cfg.sample), **files.sampling}, "sampling", path)
        model = cls.build(cfg, files.example_shape)
        try:
            model.denoiser.load_state_dict(files.state)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[0]
            raise CheckpointError(f"{path}: weights do not fit the recipe's model ({first})") from None
        model.denoiser.to(device).eval().requires_grad_(False)
        model.sampling, model.source = sampling, path
        return model

    def save_pretrained(self, path: str | Path) -> Path:
        """Write this model as a shareable folder (weights, recipe, example shape, sampling defaults)."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.denoiser.state_dict().items()}
        return write_model_folder(path, state, config_to_dict(self.config), self.example_shape,
                                  config_to_dict(self.sampling))

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    def guided(self, guidance: float | None, cond: dict | None) -> Precond:
        """The denoiser to sample with: classifier-free guidance with weight w (w = 1: the model itself; None:
        the model's default, ``sampling.guidance``, when there is a condition to guide towards)."""
        origin = "guidance"
        if guidance is None and not cond:  # the default guides towards a condition; without one, sample plainly
            return self.denoiser
        if guidance is None:
            where = f" in {self.source / CONFIG_FILE}" if self.source else ""
            guidance, origin = self.sampling.guidance, f"the model's default sampling.guidance{where}"
        if guidance == 1.0:
            return self.denoiser
        null = getattr(self.denoiser.backbone, "null_cond", None)
        if not (cond and null):
            raise UserError(f"{origin} = {guidance:g}: guidance other than 1 needs a conditional model and a "
                            f"condition to guide towards")
        return classifier_free_guidance(self.denoiser, guidance, null, rescale=self.sampling.guidance_rescale)

    @torch.no_grad()
    def sample(self, num: int = 16, *, sampler: str | None = None, steps: int | None = None, spacing: str | None = None,
               guidance: float | None = None, dynamic_threshold: float | None = None, seed: int = 0,
               cond: dict | None = None, stop_sigma: float | None = None, callback=None,
               classifier: DiffusionModel | None = None, classifier_scale: float = 1.0) -> torch.Tensor:
        """``num`` samples (num, *example_shape); unset options come from the model's sampling defaults. Sample i
        uses seed + i, so a batch equals its samples drawn one at a time. ``guidance`` w != 1 needs a conditional
        model and ``cond``; a conditional model sampled without ``cond`` uses its null condition.
        ``dynamic_threshold`` p > 0 applies Imagen's dynamic thresholding at percentile p (sec. 2.3) within the
        data's range. ``stop_sigma``: stop at that noise level and return the noisy state there (a cascade's
        truncated conditioning), not a sample. ``classifier``: a noise-aware classifier model that guides the
        samples towards ``cond["class_labels"]`` with scale ``classifier_scale`` (``pipeline.classifier``)."""
        s = self.sampling
        sampler = s.sampler if sampler is None else sampler
        if sampler not in SAMPLERS:
            raise UserError(f"unknown sampler {sampler!r}; known: {', '.join(sorted(SAMPLERS))}")
        if is_classifier(self):
            raise UserError(f"{self.source or 'this model'} is a classifier: it draws no samples, it guides a model "
                            f"(polydiff sample MODEL --classifier {self.source or 'DIR'})")
        cond = _on_device(cond, self.device)
        backbone = self.denoiser.backbone
        if classifier is not None:  # the labels are the classifier's; the model takes them only if it has classes
            check_guide(classifier, self, cond)
            labels, cond = cond["class_labels"], conditions_taken(backbone, cond) or None
        null = getattr(backbone, "null_cond", {})
        check_class_labels(cond, null, "this model")
        if cond:  # a droppable condition left out is its null value (guidance needs every one present)
            cond = with_null_defaults(cond, null, num, self.device)
        denoiser = self.guided(guidance, cond)
        if classifier is not None:
            inner = denoiser
            denoiser = classifier_guided(lambda x, sigma, c: inner(x, sigma, conditions_taken(backbone, c) or None),
                                         classifier, classifier_scale)
            cond = {**(cond or {}), "class_labels": labels}
        p = s.dynamic_threshold if dynamic_threshold is None else dynamic_threshold
        if p > 0:
            denoiser = thresholded(denoiser, p, self.config.data.range)
        sigmas = build_sigmas(self.config, self.schedule, steps, spacing, s).to(self.device)
        if stop_sigma is None:
            return draw_samples(denoiser, sigmas, self.example_shape, num, sampler, seed, cond, callback)
        return _stopped_at(denoiser, sigmas, stop_sigma, self.example_shape, num, sampler, seed, cond)


class _Reached(Exception):
    def __init__(self, x: torch.Tensor):
        self.x = x


def _stopped_at(denoiser, sigmas, stop: float, example_shape, num, sampler, seed, cond) -> torch.Tensor:
    """The sampler's state at noise level ``stop``: the grid keeps its levels above ``stop``, then ``stop`` and 0;
    the run is cut when it lands on ``stop`` (any core sampler, no final denoising)."""
    above = sigmas[sigmas > stop * (1 + 1e-6)]
    grid = torch.cat([above, sigmas.new_tensor([stop, 0.0])])

    def catch(state: dict) -> None:
        if state["sigma_next"] == grid[-2].item():
            raise _Reached(state["x"])

    try:
        draw_samples(denoiser, grid, example_shape, num, sampler, seed, cond, catch)
    except _Reached as reached:
        return reached.x
    raise RuntimeError("the sampler never reached the stopping level")  # every grid passes through it


def thresholded(denoiser, percentile: float, value_range: tuple[float, float]):
    """Dynamic thresholding (``core.thresholding``) of data in [lo, hi]: centred and scaled to [-1, 1] around it."""
    lo, hi = value_range
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    inner = dynamic_thresholding(lambda x, sigma, cond=None: (denoiser(x, sigma, cond) - mid) / half, percentile)
    return lambda x, sigma, cond=None: inner(x, sigma, cond) * half + mid


def _on_device(cond: dict | None, device: torch.device) -> dict | None:
    return None if cond is None else {k: torch.as_tensor(v).to(device) for k, v in cond.items()}


def check_class_labels(cond: dict | None, null_cond: dict, whose: str) -> None:
    """Class labels must be 0..num_classes-1 of a class-conditional backbone, whose null label is num_classes
    (``core.conditioning``): a label at or past it would silently be the null class, or index past the table."""
    if not cond or "class_labels" not in cond:
        return
    null = null_cond.get("class_labels")
    if null is None:
        raise UserError(f"{whose} is not class-conditional: it takes no class label")
    labels = cond["class_labels"]
    if bool(((labels < 0) | (labels >= null)).any()):
        bad = sorted({int(v) for v in labels.flatten().tolist() if not 0 <= v < null})
        raise UserError(f"class labels must be in 0..{null - 1} for {whose}, got {bad[:5]}")

"""What only training builds from a recipe: the objective and the (train, validation) data."""

from __future__ import annotations

from torch.utils.data import Dataset

from .. import registry
from ..core.objectives import HybridLoss, NoisyClassification, Objective
from ..core.schedules import Schedule
from ..data.examples import split
from ..errors import UserError
from ..pipeline.resources import guard_allocation
from ..recipes.core_options import core_keywords
from ..recipes.schema import RecipeConfig


def _core_component(kind: str, choice, engine: dict):
    """The core object a recipe's ``{name, options}`` table names, with the engine-supplied fields filled in."""
    target = registry.get(kind, choice.name).target
    return target(**core_keywords(target, choice.options, engine))


def build_objective(cfg: RecipeConfig, schedule: Schedule):
    """The recipe's loss: noise-level distribution x weighting x norm, or iDDPM's hybrid loss when the variance is
    learned."""
    o = cfg.objective
    engine = {"schedule": schedule, "sigma_data": cfg.diffusion.sigma_data}
    if o.task == "classify":
        return NoisyClassification(_core_component("noise_levels", o.noise_levels, engine))
    weighting = _core_component("weighting", o.weighting, engine)
    if o.hybrid_vlb_weight > 0:
        return HybridLoss(schedule, o.hybrid_vlb_weight, weighting, norm=o.loss)
    return Objective(_core_component("noise_levels", o.noise_levels, engine), weighting, o.loss)


def build_transforms(cfg: RecipeConfig) -> list:
    """The recipe's batch transforms (``data.transforms``), built from their options, in order."""
    return [registry.get("transform", c.name).target(c.options) for c in cfg.data.transforms]


def build_dataset(cfg: RecipeConfig) -> Dataset:
    """The recipe's whole data set (seeded where it is synthetic)."""
    builder = registry.get("data", cfg.data.name).target
    return guard_allocation(lambda: builder(cfg.data.options, cfg.train.seed), f"data set {cfg.data.name!r}",
                            "data.options")


def build_data(cfg: RecipeConfig) -> tuple[Dataset, Dataset]:
    """(train, validation) splits of the recipe's data set; a streaming data set has no validation split."""
    dataset = build_dataset(cfg)
    if not hasattr(dataset, "__len__"):
        return dataset, []
    train, val = split(dataset, cfg.data.val_fraction, cfg.train.seed)
    if len(train) == 0:
        raise UserError(f"data set {cfg.data.name!r} has {len(dataset)} example(s), all held out for validation by "
                        f"data.val_fraction = {cfg.data.val_fraction}: nothing is left to train on")
    return train, val

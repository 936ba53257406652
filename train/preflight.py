"""What a run checks before it trains, so that a recipe that cannot work says why in one line at the start
rather than failing inside a step: the precision this machine can run, the data's example shape against the
modality, the conditions the backbone needs against what the data gives, and each batch transform against
the examples."""

from __future__ import annotations

import torch

from .. import registry
from ..data.examples import collate
from ..data.transforms import apply_transforms, example_generators
from ..errors import UserError
from ..pipeline.model import check_class_labels
from ..recipes.schema import RecipeConfig


def check_precision(cfg: RecipeConfig) -> None:
    """fp16 autocast exists only on CUDA: accelerate would silently train in fp32 on a CPU."""
    if cfg.train.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise UserError("train.mixed_precision = \"fp16\" needs a CUDA GPU (on a CPU it would silently run fp32); "
                        "use \"bf16\" (fast with AVX-512, see 'polydiff info') or \"no\"")


def check_example_shape(cfg: RecipeConfig, shape: tuple[int, ...]) -> None:
    """The data's examples must have as many dimensions as the recipe's modality draws."""
    dims = registry.get("writer", cfg.modality).info["example_dims"]
    if len(shape) != dims:
        raise UserError(f"recipe {cfg.name!r}: modality {cfg.modality!r} takes examples of {dims} dimension(s), "
                        f"but data set {cfg.data.name!r} gives examples of shape {shape}")


def check_conditions(cfg: RecipeConfig, backbone, example: dict, dataset) -> None:
    """Every condition the backbone takes must come with the data or its transforms (``example``: one example
    after the transforms; a condition missing from it would train only the null path, or fail in the first
    step), and a data set that knows its class count must fit the backbone's label table."""
    null_cond, given = getattr(backbone, "null_cond", {}), sorted(example["cond"])
    for key in getattr(backbone, "required_cond", ()):
        if key not in example["cond"]:
            raise UserError(f"model {cfg.model.name!r} needs the condition {key!r} (see model.options), which "
                            f"neither data set {cfg.data.name!r} nor data.transforms gives (they give "
                            f"{', '.join(map(repr, given)) or 'none'})")
    for key in null_cond:
        if key not in example["cond"]:
            raise UserError(f"model {cfg.model.name!r} takes the condition {key!r} (see model.options), but data "
                            f"set {cfg.data.name!r} gives {', '.join(map(repr, given)) or 'none'}")
    classes = getattr(getattr(dataset, "dataset", dataset), "num_classes", None)
    null = null_cond.get("class_labels", getattr(backbone, "num_classes", None))  # a classifier's label count
    if classes is not None and null is not None and classes > null:
        raise UserError(f"data set {cfg.data.name!r} has {classes} classes, more than model.options.num_classes = "
                        f"{null}")
    if null is not None:  # labels a model without classes does not take are simply not used
        check_class_labels(example["cond"], {"class_labels": null}, f"model {cfg.model.name!r} "
                                                                    f"(model.options.num_classes)")


def check_transforms(transforms: list, example_shape: tuple[int, ...]) -> None:
    """Each transform that can check the examples it will see (``check(example_shape)``) does so now."""
    for i, transform in enumerate(transforms):
        if callable(getattr(transform, "check", None)):
            problem = transform.check(example_shape)
            if problem:
                raise UserError(f"data.transforms[{i}]: {problem}")


def probe(example: dict, transforms: list) -> dict:
    """One example as a batch of one after the transforms (what the backbone will be given)."""
    batch = apply_transforms(collate([example]), transforms, example_generators((0,), range(1)))
    return {"x": batch["x"][0], "cond": batch["cond"]}

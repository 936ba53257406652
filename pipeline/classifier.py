"""Classifier guidance by a separately trained noise-aware classifier (Dhariwal & Nichol 2021, sec. 4).

A classifier is a model folder like any other, trained by a recipe with ``objective.task = "classify"``
(cross-entropy on noised examples, ``core.objectives.NoisyClassification``) on a backbone that outputs logits.
It guides any model of the same example shape and data range, conditional or not, with
``core.guidance.classifier_guidance``: D~(x, sigma) = D(x, sigma) + s sigma^2 grad_x log p_phi(y | x_sigma).
Noise levels are sigma in both models, so the two need not share a schedule or a parameterization.
"""

from __future__ import annotations

import torch

from ..core.guidance import LogProbFn, classifier_guidance
from ..errors import UserError


def is_classifier(model) -> bool:
    """Whether ``model`` (a ``DiffusionModel``) was trained as a noise-aware classifier."""
    return model.config.objective.task == "classify"


def check_guide(classifier, model, cond: dict | None) -> None:
    """``classifier`` can guide ``model`` towards ``cond["class_labels"]``; a one-line UserError says why not."""
    name = str(classifier.source or "the classifier")
    if not is_classifier(classifier):
        raise UserError(f"{name} is not a classifier (its recipe trains a denoiser: objective.task = \"denoise\"); "
                        f"train one with objective.task = \"classify\"")
    if tuple(classifier.example_shape) != tuple(model.example_shape):
        raise UserError(f"{name} classifies examples of shape {tuple(classifier.example_shape)}, but the model draws "
                        f"{tuple(model.example_shape)}")
    if tuple(classifier.config.data.range) != tuple(model.config.data.range):
        raise UserError(f"{name} was trained on data in {list(classifier.config.data.range)}, the model on "
                        f"{list(model.config.data.range)}: they must agree")
    if not cond or "class_labels" not in cond:
        raise UserError("classifier guidance needs the class to guide towards (--label K or --labels all)")
    classes = classifier.denoiser.backbone.num_classes
    labels = cond["class_labels"]
    if bool(((labels < 0) | (labels >= classes)).any()):
        bad = sorted({int(v) for v in labels.flatten().tolist() if not 0 <= v < classes})
        raise UserError(f"class labels must be in 0..{classes - 1} for {name}, got {bad[:5]}")


def classifier_log_prob(classifier) -> LogProbFn:
    """log p_phi(y | x_sigma) (B,) of a classifier model for y = cond["class_labels"]; the classifier's
    preconditioning scales its input (c_in) and maps sigma to its noise input (c_noise)."""
    denoiser = classifier.denoiser

    def log_prob(x: torch.Tensor, sigma: torch.Tensor, cond) -> torch.Tensor:
        labels = cond["class_labels"]
        logits = denoiser.raw(x, sigma).float()  # (B, K)
        return torch.log_softmax(logits, dim=-1).gather(1, labels[:, None]).squeeze(1)  # (B, 1) -> (B,)

    return log_prob


def classifier_guided(denoiser, classifier, scale: float):
    """``denoiser`` guided by ``classifier`` with scale s (s = 0: unguided)."""
    if scale == 0:
        return denoiser
    return classifier_guidance(denoiser, classifier_log_prob(classifier), scale)


def with_classifier(pipeline, classifier, scale: float):
    """``pipeline`` with ``classifier`` guiding the stage that draws examples of its shape (a cascade's base,
    or a super-resolution stage it was trained for); a UserError when no stage does."""
    from .stages import Pipeline, Stage

    shapes = [tuple(stage.model.example_shape) for stage in pipeline.stages]
    if tuple(classifier.example_shape) not in shapes:
        raise UserError(f"{classifier.source or 'the classifier'} classifies examples of shape "
                        f"{tuple(classifier.example_shape)}; no stage draws that shape ({', '.join(map(str, shapes))})")
    return Pipeline([
        Stage(s.model, s.condition, {**s.options, "classifier": classifier, "classifier_scale": scale})
        if tuple(s.model.example_shape) == tuple(classifier.example_shape) else s
        for s in pipeline.stages
    ])

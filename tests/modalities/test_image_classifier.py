"""Classifier guidance (Dhariwal & Nichol 2021): a noise-aware digit classifier trains with its own recipe
(``objective.task = "classify"``), logs its validation accuracy, and guides any model of the same images
towards the requested classes, from Python and the CLI; misuse is a one-line error."""

from __future__ import annotations

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from polydiff.cli import main
from polydiff.commands.train import RECIPES_DIR
from polydiff.core.objectives import NoisyClassification
from polydiff.core.noise_levels import LogNormal
from polydiff.errors import UserError
from polydiff.modalities.image.digits import load_digits
from polydiff.pipeline import DiffusionModel
from polydiff.recipes.config import ConfigError
from polydiff.recipes.files import load_recipe
from polydiff.train.trainer import train

STEPS = 60


@pytest.fixture(scope="module")
def classifier(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    cfg = load_recipe(RECIPES_DIR / "image" / "digits_classifier.toml",
                      [f"train.steps={STEPS}", f"train.val_every={STEPS}", f"train.checkpoint_every={STEPS}",
                       "optim.warmup_steps=10", "data.num_workers=0", f'train.out_dir="{out.as_posix()}"'])
    result = train(cfg, progress=False)
    return result.model_dir


def fresh_digits_model(num_classes: int = 0) -> DiffusionModel:
    cfg = load_recipe(RECIPES_DIR / "image" / "digits.toml", [f"model.options.num_classes={num_classes}",
                                                              "sample.steps=6"])
    torch.manual_seed(0)
    return DiffusionModel.build(cfg, (1, 8, 8))


def test_the_classifier_learns_and_logs_its_accuracy_not_a_loss(classifier):
    with open(classifier.parent / "scalars.csv") as f:
        rows = {(int(r["step"]), r["name"]): float(r["value"]) for r in csv.DictReader(f)}
    assert (STEPS, "val/loss") not in rows
    # averaged over six noise levels up to 10 sigma_data, where no classifier beats chance (0.1)
    assert rows[(STEPS, "val/accuracy")] > 0.3


def test_the_loss_is_cross_entropy_of_the_noised_example_and_never_shows_the_label():
    seen = {}

    class Spy(torch.nn.Module):
        def raw(self, x, sigma, cond):
            seen.update(x=x, cond=cond)
            return torch.stack([x.flatten(1).sum(1), torch.zeros(len(x))], 1)  # (B, 2)

    x0, labels = torch.randn(4, 1, 2, 2), torch.tensor([0, 1, 1, 0])
    objective = NoisyClassification(LogNormal(-1.0, 1.0))
    draws = objective.draw(x0, torch.Generator().manual_seed(0))
    loss = objective.loss(Spy(), x0, draws, {"class_labels": labels})
    x = x0 + draws["sigma"].view(-1, 1, 1, 1) * draws["noise"]
    torch.testing.assert_close(seen["x"], x)
    assert "class_labels" not in seen["cond"]
    logits = torch.stack([x.flatten(1).sum(1), torch.zeros(4)], 1)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, labels, reduction="none"))


class EmpiricalDenoiser(torch.nn.Module):
    """The exact denoiser of the digits themselves (a mixture of point masses, Karras et al. 2022 eq. 57 with
    sigma_data = 0): D(x, sigma) = sum_i w_i x_i, w = softmax_i(-||x - x_i||^2 / 2 sigma^2). Its samples are
    training digits, whose true labels say which class a sampler produced."""

    def __init__(self):
        super().__init__()
        self.images, self.labels = load_digits()  # (N, 1, 8, 8), (N,)
        self.backbone, self.anchor = SimpleNamespace(null_cond={}), torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, sigma, cond=None):
        flat, data = x.flatten(1), self.images.flatten(1)  # (B, 64), (N, 64)
        w = torch.softmax(-torch.cdist(flat, data).square() / (2 * sigma.view(-1, 1) ** 2), dim=1)  # (B, N)
        return (w @ data).view_as(x)

    def nearest_labels(self, x):
        return self.labels[torch.cdist(x.flatten(1), self.images.flatten(1)).argmin(1)]


def test_guidance_draws_the_requested_classes_from_the_exact_denoiser_of_the_digits(classifier):
    """Unguided, the exact denoiser returns training digits of any class; guided by the trained classifier, it
    returns digits of the class asked for, row by row: the gradient's sign, scale and labels reach the sampler."""
    clf, recipe = DiffusionModel.from_pretrained(classifier), fresh_digits_model()
    exact = EmpiricalDenoiser()
    model = DiffusionModel(exact, recipe.schedule, recipe.config, (1, 8, 8), recipe.sampling)
    labels = torch.arange(40) % 10
    plain = model.sample(40, steps=18, seed=1)
    guided = model.sample(40, steps=18, seed=1, cond={"class_labels": labels}, classifier=clf,
                          classifier_scale=8.0)
    match = lambda x: (exact.nearest_labels(x) == labels).float().mean().item()  # noqa: E731
    assert match(plain) < 0.35 and match(guided) > 0.7
    unguided = model.sample(40, steps=18, seed=1, cond={"class_labels": labels}, classifier=clf, classifier_scale=0)
    torch.testing.assert_close(unguided, plain, rtol=0, atol=0)


def test_a_class_conditional_model_takes_the_labels_too(classifier):
    clf, model = DiffusionModel.from_pretrained(classifier), fresh_digits_model(num_classes=10)
    labels = torch.tensor([3, 7])
    seen = []
    backbone_forward = model.denoiser.backbone.forward

    def spy(x, c_noise, cond):
        seen.append(set(cond))
        return backbone_forward(x, c_noise, cond)

    model.denoiser.backbone.forward = spy
    model.sample(2, guidance=1.0, cond={"class_labels": labels}, classifier=clf, classifier_scale=1.0)
    assert seen and all(keys == {"class_labels"} for keys in seen)


def test_misuse_is_a_one_line_error(classifier):
    clf, model = DiffusionModel.from_pretrained(classifier), fresh_digits_model()
    with pytest.raises(UserError, match="is a classifier: it draws no samples"):
        clf.sample(2)
    with pytest.raises(UserError, match="needs the class to guide towards"):
        model.sample(2, classifier=clf)
    with pytest.raises(UserError, match=r"class labels must be in 0\.\.9"):
        model.sample(2, cond={"class_labels": torch.tensor([0, 10])}, classifier=clf)
    with pytest.raises(UserError, match="is not a classifier"):
        model.sample(2, cond={"class_labels": torch.tensor([0, 1])}, classifier=model)
    other = DiffusionModel.build(model.config, (1, 16, 16))
    with pytest.raises(UserError, match=r"shape \(1, 8, 8\), but the model draws \(1, 16, 16\)"):
        other.sample(2, cond={"class_labels": torch.tensor([0, 1])}, classifier=clf)


def test_a_recipe_whose_task_and_backbone_disagree_is_refused():
    with pytest.raises(ConfigError, match="outputs logits, but 'objective.task'"):
        load_recipe(RECIPES_DIR / "image" / "digits_classifier.toml", ['objective.task="denoise"'])
    with pytest.raises(ConfigError, match="outputs denoised examples, but 'objective.task'"):
        load_recipe(RECIPES_DIR / "image" / "digits.toml", ['objective.task="classify"'])


def test_the_cli_guides_a_model_folder_by_a_classifier_folder(classifier, tmp_path, capsys):
    model_dir = fresh_digits_model().save_pretrained(tmp_path / "model")
    argv = ["sample", str(model_dir), "--num", "10", "--labels", "all", "--steps", "4",
            "--classifier", str(classifier), "--classifier-scale", "5", "--out", str(tmp_path / "s")]
    assert main(argv) == 0
    assert (tmp_path / "s" / "samples.png").is_file() and (tmp_path / "s" / "samples.npz").is_file()
    code = main(["sample", str(classifier), "--out", str(tmp_path / "t")])
    assert code == 2 and "is a classifier" in capsys.readouterr().err


def test_info_names_the_preset_and_says_what_a_classifier_is_for(classifier, capsys):
    assert main(["info", str(classifier)]) == 0
    out = capsys.readouterr().out
    assert "unet_classifier (preset tiny), " in out and "noise-aware classifier of 10 classes" in out

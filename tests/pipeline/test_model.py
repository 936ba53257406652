"""Sampling needs no trainer: a model folder loads and samples without importing the training engine or
accelerate; a one-stage pipeline equals its model; stages see the previous stage only through cond."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from polydiff.pipeline import DiffusionModel, Pipeline, Stage
from polydiff.recipes.files import load_recipe

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "toy" / "swiss_roll.toml"


def tiny_model(num_classes: int = 0) -> DiffusionModel:
    cfg = load_recipe(RECIPE, ["model.options.hidden=16", "model.options.depth=1", "sample.steps=3",
                               f"model.options.num_classes={num_classes}"])
    torch.manual_seed(0)
    return DiffusionModel.build(cfg, (2,))


def test_loading_and_sampling_a_model_never_imports_the_trainer(tmp_path):
    folder = tiny_model().save_pretrained(tmp_path / "m")
    code = (f"import sys; from polydiff.pipeline import DiffusionModel; "
            f"m = DiffusionModel.from_pretrained({str(folder)!r}); x = m.sample(4, steps=2); "
            f"bad = [n for n in ('polydiff.train.trainer', 'accelerate', 'polydiff.train') if n in sys.modules]; "
            f"print(tuple(x.shape), bad)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "(4, 2) []"


def test_a_one_stage_pipeline_is_its_model(tmp_path):
    model = tiny_model()
    folder = model.save_pretrained(tmp_path / "m")
    direct = DiffusionModel.from_pretrained(folder).sample(5, seed=2)
    torch.testing.assert_close(Pipeline.from_pretrained(folder).sample(5, seed=2), direct, rtol=0, atol=0)


def test_a_later_stage_sees_the_previous_one_only_through_cond():
    base, second = tiny_model(), tiny_model(num_classes=2)
    seen = []

    def condition(previous, cond, seeds):  # e.g. a cascade's lowres; here: a label from the base sample's sign
        seen.append(previous.clone())
        return {**cond, "class_labels": (previous[:, 0] > 0).long()}

    pipeline = Pipeline([Stage(base), Stage(second, condition, {"steps": 2})])
    out = pipeline.sample(6, seed=1)
    torch.testing.assert_close(seen[0], base.sample(6, seed=1), rtol=0, atol=0)
    labels = (seen[0][:, 0] > 0).long()
    torch.testing.assert_close(out, second.sample(6, seed=1, steps=2, cond={"class_labels": labels}), rtol=0, atol=0)

"""Sampling needs no trainer: a model folder loads and samples without importing the training engine or
accelerate; a one-stage pipeline equals its model; stages see the previous stage only through cond."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
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


def test_sample_betas_are_the_grid_unless_other_steps_or_a_spacing_are_asked_for(tmp_path):
    from polydiff.core.grids import betas_to_sigmas, sampling_sigmas
    from polydiff.pipeline.build import build_sigmas

    betas = [1e-3, 0.1, 0.5]
    cfg = load_recipe(RECIPE, ["model.options.hidden=16", "model.options.depth=1", "sample.steps=3",
                               f"sample.betas={betas}"])
    torch.manual_seed(0)
    model = DiffusionModel.build(cfg, (2,))
    grid = betas_to_sigmas(betas).float()
    for steps in (None, 3):
        torch.testing.assert_close(build_sigmas(cfg, model.schedule, steps), grid, rtol=0, atol=0)
    torch.testing.assert_close(build_sigmas(cfg, model.schedule, 5), sampling_sigmas(model.schedule, 5).float())
    torch.testing.assert_close(build_sigmas(cfg, model.schedule, spacing="logsnr"),
                               sampling_sigmas(model.schedule, 3, "logsnr").float())
    seen = []
    model.sample(2, sampler="euler", callback=lambda state: seen.append(state["sigma"]))
    assert seen == grid[:-1].tolist()
    folder = model.save_pretrained(tmp_path / "m")  # the model folder's sampling section decides, as a user edits it
    doc = json.loads((folder / "config.json").read_text())
    doc["sampling"]["betas"] = []
    (folder / "config.json").write_text(json.dumps(doc))
    seen.clear()
    DiffusionModel.from_pretrained(folder).sample(2, sampler="euler", callback=lambda s: seen.append(s["sigma"]))
    assert seen == sampling_sigmas(model.schedule, 3).float()[:-1].tolist()


def test_a_model_folder_saved_before_the_wavegrad_keys_loads_and_samples_the_same(tmp_path):
    from polydiff.core.schedules import make_schedule
    from polydiff.pipeline.build import build_schedule

    folder = tiny_model().save_pretrained(tmp_path / "m")
    now = DiffusionModel.from_pretrained(folder).sample(3, seed=4)
    doc = json.loads((folder / "config.json").read_text())
    for section, key in (("diffusion", "beta_range"), ("objective", "loss"), ("sample", "betas")):
        del doc["config"][section][key]
    del doc["sampling"]["betas"]
    (folder / "config.json").write_text(json.dumps(doc))
    old = DiffusionModel.from_pretrained(folder)
    assert old.config.diffusion.beta_range is None and old.sampling.betas == () and old.config.objective.loss == "l2"
    torch.testing.assert_close(old.sample(3, seed=4), now, rtol=0, atol=0)
    # a discrete schedule without a range is exactly the one before the key existed
    linear = load_recipe(RECIPE, ["diffusion.schedule=linear", "diffusion.num_steps=100"])
    torch.testing.assert_close(build_schedule(linear).sigmas, make_schedule("linear", num_steps=100).sigmas,
                               rtol=0, atol=0)
    wavegrad = load_recipe(RECIPE, ["diffusion.schedule=linear", "diffusion.beta_range=[1e-6, 0.01]"])
    assert build_schedule(wavegrad).sigma_max == pytest.approx(12.2473, abs=1e-4)

"""Cascades: separately trained stages joined in a folder, the previous stage reaching the next only through
``cond``, truncated and non-truncated conditioning, the augmentation sweep from the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polydiff.cli import main
from polydiff.core.cascade import aug_sigma
from polydiff.pipeline import DiffusionModel, Pipeline
from polydiff.pipeline.cascade import LowresCondition, with_aug_level, write_cascade
from polydiff.recipes.files import load_recipe
from polydiff.storage.guards import CheckpointError

IMAGE = Path(__file__).resolve().parents[2] / "recipes" / "image"
TINY = ['model.options={channels = 8, channel_mult = [1, 2], num_res_blocks = [1], attention_resolutions = [4], '
        'head_channels = 8, lowres_channels = LOW, num_classes = NUM}', "sample.steps=3", "sample.guidance=1.0"]


def stage(tmp_path: Path, name: str, recipe: str, shape, lowres: int) -> Path:
    classes = "0" if lowres else "10"  # a class-conditional base, an unconditional super-resolution stage
    cfg = load_recipe(IMAGE / recipe, [s.replace("LOW", str(lowres)).replace("NUM", classes) for s in TINY])
    torch.manual_seed(len(name))
    model = DiffusionModel.build(cfg, shape)
    with torch.no_grad():
        for p in model.denoiser.parameters():
            p.normal_(0, 0.05)
    return model.save_pretrained(tmp_path / name)


@pytest.fixture
def cascade(tmp_path) -> Path:
    base = stage(tmp_path, "base", "digits.toml", (1, 8, 8), 0)
    sr = stage(tmp_path, "sr", "digits_cascade.toml", (1, 16, 16), 1)
    return write_cascade(tmp_path / "cascade", [{"model": "../base"}, {"model": str(sr), "aug_level": 0.2}])


def test_a_cascade_folder_samples_every_stage_in_order(cascade, monkeypatch):
    pipeline = Pipeline.from_pretrained(cascade)
    assert len(pipeline.stages) == 2 and pipeline.last.example_shape == (1, 16, 16)
    seen = {}
    backbone = pipeline.last.denoiser.backbone
    forward = type(backbone).forward

    def spy(self, x_in, c_noise, cond):  # the class is shared by both stages: record the one with an input
        if "lowres" in cond:
            seen.update(lowres=cond["lowres"].shape, level=cond["aug_level"].tolist())
        return forward(self, x_in, c_noise, cond)

    monkeypatch.setattr(type(backbone), "forward", spy)
    samples = pipeline.sample(3, seed=4, cond={"class_labels": torch.tensor([1, 2, 3])})
    assert samples.shape == (3, 1, 16, 16) and torch.isfinite(samples).all()
    assert seen["lowres"] == (3, 1, 8, 8) and seen["level"] == pytest.approx([0.2] * 3)
    monkeypatch.undo()
    one_by_one = torch.cat([pipeline.sample(1, seed=4 + i, cond={"class_labels": torch.tensor([1 + i])})
                            for i in range(3)])
    torch.testing.assert_close(samples, one_by_one, rtol=0, atol=1e-5)  # per-sample seeds through both stages


def test_truncated_conditioning_stops_the_previous_stage_at_the_level(cascade):
    pipeline = with_aug_level(Pipeline.from_pretrained(cascade), 0.3)
    base = pipeline.first
    sigma = float(aug_sigma(torch.tensor(0.3)))
    state = base.sample(2, seed=1, stop_sigma=sigma, sampler="euler")
    # the same run, solved explicitly over the grid that ends at sigma
    from polydiff.pipeline.build import build_sigmas
    from polydiff.pipeline.sampling import draw_samples

    grid = build_sigmas(base.config, base.schedule)
    grid = torch.cat([grid[grid > sigma * (1 + 1e-6)], grid.new_tensor([sigma, 0.0])])
    states = []
    draw_samples(base.denoiser, grid, base.example_shape, 2, "euler", 1, None,
                 lambda s: states.append(s["x"]) if s["sigma_next"] == grid[-2].item() else None)
    torch.testing.assert_close(state, states[0])
    truncated = LowresCondition(0.3, truncated=True)
    assert truncated.stop_sigma == pytest.approx(sigma) and LowresCondition(0.3).stop_sigma is None
    cond = truncated(state, {}, range(1, 3))
    torch.testing.assert_close(cond["lowres"], state / (1 + sigma**2) ** 0.5)


def test_a_stage_that_is_not_super_resolution_is_refused(tmp_path):
    base = stage(tmp_path, "base", "digits.toml", (1, 8, 8), 0)
    write_cascade(tmp_path / "c", [{"model": str(base)}, {"model": str(base), "aug_level": 0.1}])
    with pytest.raises(CheckpointError, match="stage 1 .* is not a super-resolution model"):
        Pipeline.from_pretrained(tmp_path / "c")


def test_the_command_line_joins_stages_and_sweeps_the_level(tmp_path, capsys):
    base = stage(tmp_path, "base", "digits.toml", (1, 8, 8), 0)
    sr = stage(tmp_path, "sr", "digits_cascade.toml", (1, 16, 16), 1)
    assert main(["cascade", str(tmp_path / "c"), str(base), str(sr), "--aug-level", "0.1"]) == 0
    assert main(["sample", str(tmp_path / "c"), "--num", "4", "--labels", "all", "--aug-level", "0", "0.3",
                 "--out", str(tmp_path / "o")]) == 0
    out = tmp_path / "o"
    for name in ("samples.png", "samples_aug0.png", "samples_aug0.3.png", "aug0/samples.npz", "aug0.3/samples.npz"):
        assert (out / name).is_file(), name
    import numpy as np

    assert np.load(out / "aug0.3" / "samples.npz")["arr_0"].shape == (4, 16, 16, 1)
    code = main(["sample", str(base), "--aug-level", "0.2", "--out", str(tmp_path / "x")])
    assert code == 2 and "--aug-level: this is not a cascade" in capsys.readouterr().err

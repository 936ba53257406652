"""The toy part of ``polydiff demo``: train the swiss-roll recipe through the engine, sample the saved model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from ...data.swiss_roll import swiss_roll
from ...media import save_media
from ...pipeline import DiffusionModel
from ...recipes.files import load_recipe
from ...registry import WriteContext, register_demo
from ...storage.output import fresh_demo_folder
from .points import write_points

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "toy" / "swiss_roll.toml"


@register_demo("toy", order=0, about="the 2-D swiss roll, trained through the engine (~30 s on 2 cores)")
def swiss_roll_demo(out: Path, quick: bool = False) -> list[Path]:
    """Train ``recipes/toy/swiss_roll.toml`` into ``<out>/swiss_roll``, reload the model folder it wrote and
    write ``<out>/swiss_roll.png``: data next to samples from the recipe's default sampler."""
    from ...train.trainer import train

    start = time.perf_counter()
    steps, num = (20, 200) if quick else (2500, 4000)
    cfg = load_recipe(RECIPE, [f"train.steps={steps}", f"train.out_dir={json.dumps(out.as_posix())}",
                               f"train.checkpoint_every={steps}", f"train.sample_every={steps}"])
    fresh_demo_folder(out / cfg.name)
    result = train(cfg)
    model = DiffusionModel.from_pretrained(result.model_dir)
    samples = model.sample(num, seed=1)
    data = swiss_roll(num, generator=torch.Generator().manual_seed(2))
    png = save_media(write_points(samples, WriteContext(cfg.data.range, cfg, data)), out / "swiss_roll")
    print(f"demo: trained {result.steps} steps ({result.steps_per_second:.0f} steps/s), sampled {num} points with "
          f"{model.sampling.sampler} ({model.sampling.steps} steps) [{time.perf_counter() - start:.0f} s]; "
          f"run folder {result.run_dir} (loss_curve.png, scalars.csv, tensorboard/, model/)")
    return [png]

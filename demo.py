"""``polydiff demo`` / ``make demo``: train the toy recipe through the engine, then sample the saved model.

Trains ``recipes/toy/swiss_roll.toml`` (shortened to ``steps``) into ``<out>/swiss_roll``, loads the model
folder it wrote with ``DiffusionModel.from_pretrained`` and writes ``<out>/swiss_roll.png``: data next to
samples from the recipe's default sampler.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch

from .data.swiss_roll import swiss_roll
from .modalities.writers import write_scatter
from .pipeline import DiffusionModel
from .recipes.files import load_recipe
from .train.errors import UserError
from .train.trainer import train

DEMO_MARKER = ".polydiff-demo"
RECIPE = Path(__file__).resolve().parent / "recipes" / "toy" / "swiss_roll.toml"


def run_demo(out: Path, steps: int = 2500) -> Path:
    """Train, reload, sample and plot; returns the PNG written."""
    start = time.perf_counter()
    cfg = load_recipe(RECIPE, [f"train.steps={steps}", f"train.out_dir={json.dumps(out.as_posix())}",
                               f"train.checkpoint_every={steps}", f"train.sample_every={steps}"])
    run_dir = out / cfg.name
    if run_dir.exists():
        if not (run_dir / DEMO_MARKER).exists():  # never delete a run the demo did not make
            raise UserError(f"{run_dir} exists and is not a demo run: pass another --out")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / DEMO_MARKER).write_text("written by polydiff demo; the next demo replaces this folder\n")
    result = train(cfg)
    model = DiffusionModel.from_pretrained(result.model_dir)
    samples = model.sample(4000, seed=1)
    data = swiss_roll(4000, generator=torch.Generator().manual_seed(2))
    png = write_scatter(samples, out / "swiss_roll.png", reference=data)
    print(f"demo: trained {result.steps} steps ({result.steps_per_second:.0f} steps/s), sampled 4000 points with "
          f"{model.sampling['sampler']} ({model.sampling['steps']} steps): {png} [{time.perf_counter() - start:.0f} s]")
    print(f"demo: run folder {run_dir} (loss_curve.png, scalars.csv, tensorboard/, model/)")
    return png


if __name__ == "__main__":
    from .cli import main

    raise SystemExit(main(["demo"]))

"""A bundled recipe trained briefly for a part of ``polydiff demo``: the steps cut to what the part can afford,
checkpoint, samples and validation once at the end, into a demo folder that replaces an earlier demo's run."""

from __future__ import annotations

import json
from pathlib import Path

from ..recipes.files import load_recipe
from ..storage.output import fresh_demo_folder


def train_for_demo(recipe: Path, out: Path, steps: int, sets: tuple[str, ...] = ()):
    """Train ``recipe`` for ``steps`` into ``out`` / its name with the overrides ``sets``; the ``TrainResult``.
    Prints one line: the steps made and their rate."""
    from .trainer import train

    cfg = load_recipe(recipe, [f"train.steps={steps}", f"train.out_dir={json.dumps(out.as_posix())}",
                               f"train.checkpoint_every={steps}", f"train.sample_every={steps}",
                               f"train.val_every={steps}", *sets])
    fresh_demo_folder(out / cfg.name)
    result = train(cfg)
    print(f"demo: {cfg.name}: {result.steps} steps ({result.steps_per_second:.2f} steps/s), run folder "
          f"{result.run_dir}")
    return result

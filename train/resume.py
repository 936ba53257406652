"""Which checkpoint a run continues from: the newest one that loads, falling back past damaged ones.

A run folder may end with a checkpoint that cannot be used: truncated tensors, garbage JSON, a hand-edited
state, a tampered random-number-generator entry, non-finite weights. ``--resume`` then continues from the
newest checkpoint that loads whole and says which ones it skipped and why; a recipe that differs from the
one the run was trained with (other than train.steps) is refused outright.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from ..errors import UserError
from ..recipes.config import ConfigError, config_from_dict, config_to_dict
from ..recipes.schema import RecipeConfig
from ..storage.guards import CheckpointError
from .checkpoint import checkpoint_config, checkpoint_step, list_checkpoints


def checkpoints_to_try(cfg: RecipeConfig, run_dir: Path, resume: bool) -> list[Path]:
    """Complete checkpoints newest first when resuming; a fresh run refuses a folder that has checkpoints."""
    found = list_checkpoints(run_dir)
    if not resume:
        if found:
            raise UserError(f"{run_dir} already holds checkpoints: pass --resume to continue it, "
                            f"or --set train.out_dir=... for a new run")
        return []
    if not found:
        raise UserError(f"--resume: no complete checkpoint in {run_dir}")
    return found[::-1]


# Keys a resumed run may change: where the run lives, how long it runs, and what it does besides optimizing.
# Everything else decides what the steps compute and must stay as it was.
MAY_CHANGE = ("train.steps", "train.out_dir", "train.log_every", "train.sample_every", "train.val_every",
              "train.checkpoint_every", "train.keep_last", "train.max_nonfinite_in_row", "data.num_workers", "sample")


def _same_recipe(cfg: RecipeConfig, ckpt: Path, run_dir: Path) -> None:
    try:
        saved = config_from_dict(RecipeConfig, checkpoint_config(ckpt), source=str(ckpt / "config.json"))
    except ConfigError as err:
        raise CheckpointError(str(err)) from None
    changed = [key for key in _differences(config_to_dict(saved), config_to_dict(cfg))
               if not any(key == k or key.startswith(k + ".") for k in MAY_CHANGE)]
    if changed:
        raise UserError(f"--resume: the recipe differs from the one {run_dir} was trained with in "
                        f"{', '.join(changed[:5])}; only {', '.join(MAY_CHANGE)} may change (see "
                        f"{run_dir / 'config.toml'})")


def _differences(a, b, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{path}.{k}".lstrip("."))]
    return [] if a == b else [path]


def resume_from(cfg: RecipeConfig, run_dir: Path, candidates: list[Path], load: Callable[[Path], dict],
                announce: bool = True) -> tuple[Path, dict]:
    """Load the newest of ``candidates`` that ``load(path) -> extra_state`` accepts; returns it and its extra
    state. Damaged checkpoints are skipped (said on stderr); if none loads, one ``UserError`` lists why."""
    skipped = []
    for ckpt in candidates:
        try:
            _same_recipe(cfg, ckpt, run_dir)
            extra = load(ckpt)
            step = checkpoint_step(ckpt)
            stats = extra.get("stats")
            if extra.get("step") != step or not isinstance(stats, dict) or not all(
                    type(v) is int for k, v in stats.items() if k != "skipped_files") or not (
                    isinstance(stats.get("skipped_files", []), list)
                    and all(isinstance(n, str) for n in stats.get("skipped_files", []))):
                raise CheckpointError(f"{ckpt}: its run state (step, counters) is damaged")
        except CheckpointError as err:
            skipped.append(f"{ckpt.name} ({err})")
            continue
        if skipped and announce:
            print(f"polydiff: --resume skipped {len(skipped)} damaged checkpoint(s): {'; '.join(skipped)}; "
                  f"resuming from {ckpt.name}", file=sys.stderr)
        return ckpt, extra
    raise UserError(f"--resume: no checkpoint in {run_dir} loads: {'; '.join(skipped)}")

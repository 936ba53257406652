"""``polydiff train RECIPE``: train a recipe into its run folder."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError
from ..registry import register_command
from .arguments import positive_int

RECIPES_DIR = Path(__file__).resolve().parents[1] / "recipes"


def bundled_recipes() -> list[str]:
    """Names of the recipes that ship with polydiff, e.g. 'toy/swiss_roll'."""
    return sorted(str(p.relative_to(RECIPES_DIR).with_suffix("")) for p in RECIPES_DIR.glob("*/*.toml"))


def resolve_recipe(name: str) -> Path:
    """A recipe path, or a bundled recipe name such as ``toy/swiss_roll``."""
    path = Path(name)
    if path.is_dir():
        raise UserError(f"recipe {name!r} is a folder, not a recipe file (.toml)")
    if path.is_file():
        return path
    bundled = RECIPES_DIR / (name if name.endswith(".toml") else f"{name}.toml")
    if bundled.is_file():
        return bundled
    raise UserError(f"recipe {name!r} not found: no such file, and not a bundled recipe "
                    f"({', '.join(bundled_recipes())})")


def _arguments(p) -> None:
    p.add_argument("recipe", help="a recipe TOML file or a bundled name such as toy/swiss_roll")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    p.add_argument("--resume", action="store_true", help="continue the run from its newest loadable checkpoint")
    p.add_argument("--stop-at", type=positive_int, default=None, metavar="STEP",
                   help="stop after STEP as if interrupted (checkpoint written; for testing --resume)")


@register_command("train", help="train a recipe", arguments=_arguments)
def train_command(args) -> int:
    from ..recipes.files import load_recipe
    from ..train.trainer import train

    cfg = load_recipe(resolve_recipe(args.recipe), args.set)
    result = train(cfg, resume=args.resume, stop_at=args.stop_at)
    if not result.main_process:
        return 0
    print(f"trained {result.steps} steps in {result.run_dir} ({result.steps_per_second:.1f} steps/s), "
          f"last loss {result.last_loss:.4f}, non-finite steps skipped: {result.nonfinite_skipped}")
    if result.fp16_overflow_skipped:
        print(f"fp16 loss scaling skipped {result.fp16_overflow_skipped} step(s) with overflowing gradients",
              file=sys.stderr)
    if result.skipped_examples:
        print(f"skipped {result.skipped_examples} unreadable example(s), replaced by readable ones; files: "
              f"{', '.join(result.skipped_files)}", file=sys.stderr)
    if result.model_dir and cfg.objective.task == "classify":
        print(f"classifier: {result.model_dir}  (polydiff sample MODEL --labels all --classifier {result.model_dir})")
    elif result.model_dir:
        print(f"model: {result.model_dir}  (polydiff sample {result.model_dir})")
    return 0

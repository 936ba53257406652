"""``polydiff cascade OUT BASE_MODEL SR_MODEL [SR_MODEL ...]``: join separately trained stages into a cascade
folder that ``polydiff sample`` runs as one (``pipeline.cascade``)."""

from __future__ import annotations

import os
from pathlib import Path

from ..registry import register_command
from .arguments import non_negative_float, positive_int


def _arguments(p) -> None:
    p.add_argument("out", help="the cascade folder to write (cascade.json; the model folders are referenced)")
    p.add_argument("models", nargs="+", help="model folders, lowest resolution first")
    p.add_argument("--aug-level", type=non_negative_float, default=0.1,
                   help="conditioning augmentation level of every super-resolution stage (0 <= a < 1)")
    p.add_argument("--truncated", action="store_true", help="stop the previous stage at the augmentation level")
    p.add_argument("--steps", type=positive_int, action="append", default=None,
                   help="sampling steps per stage (once per model, in order)")


@register_command("cascade", help="join separately trained stages into a cascade folder", arguments=_arguments)
def cascade_command(args) -> int:
    from ..errors import UserError
    from ..pipeline import Pipeline
    from ..pipeline.cascade import write_cascade

    if len(args.models) < 2:
        raise UserError("a cascade needs a base model and at least one super-resolution model")
    if args.steps and len(args.steps) != len(args.models):
        raise UserError(f"--steps was given {len(args.steps)} times for {len(args.models)} models")
    out = Path(args.out)
    stages = []
    for i, model in enumerate(args.models):
        stage = {"model": os.path.relpath(Path(model).resolve(), out.resolve())}
        if i:
            stage.update(aug_level=args.aug_level, truncated=args.truncated)
        if args.steps:
            stage["steps"] = args.steps[i]
        stages.append(stage)
    folder = write_cascade(out, stages)
    Pipeline.from_pretrained(folder)  # every stage loads and fits: refused now, not when sampling
    print(f"wrote {folder / 'cascade.json'}: {len(stages)} stages (polydiff sample {folder})")
    return 0

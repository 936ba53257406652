"""The ``polydiff`` command: train, sample, demo, info.

Errors a user can cause (a missing file, a bad recipe or option, an unreadable model folder) print one
line and exit with code 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_USER_ERROR = 2
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's own errors: one line, exit 2
        self.exit(EXIT_USER_ERROR, f"polydiff: error: {message} (see 'polydiff {self.prog.split()[-1]} --help')\n")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite float >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text}")
    return value


def resolve_recipe(name: str) -> Path:
    """A recipe path, or a bundled recipe name such as ``toy/swiss_roll``."""
    from .train.errors import UserError

    path = Path(name)
    if path.is_file():
        return path
    bundled = RECIPES_DIR / (name if name.endswith(".toml") else f"{name}.toml")
    if bundled.is_file():
        return bundled
    known = sorted(str(p.relative_to(RECIPES_DIR).with_suffix("")) for p in RECIPES_DIR.glob("*/*.toml"))
    raise UserError(f"recipe {name!r} not found: no such file, and not a bundled recipe ({', '.join(known)})")


def cmd_train(args) -> int:
    from .recipes.files import load_recipe
    from .train.trainer import train

    cfg = load_recipe(resolve_recipe(args.recipe), args.set)
    result = train(cfg, resume=args.resume, stop_at=args.stop_at)
    print(f"trained {result.steps} steps in {result.run_dir} ({result.steps_per_second:.1f} steps/s), "
          f"last loss {result.last_loss:.4f}, non-finite steps skipped: {result.nonfinite_skipped}")
    if result.model_dir:
        print(f"model: {result.model_dir}  (polydiff sample {result.model_dir})")
    return 0


def cmd_sample(args) -> int:
    import torch

    from .modalities.writers import write_samples
    from .pipeline import DiffusionModel
    from .train.errors import UserError

    model = DiffusionModel.from_pretrained(args.model_dir)
    cond = None
    if args.label is not None:
        cond = {"class_labels": torch.full((args.num,), args.label, dtype=torch.long)}
    try:
        samples = model.sample(args.num, sampler=args.sampler, steps=args.steps, guidance=args.guidance,
                               seed=args.seed, cond=cond)
    except (KeyError, ValueError) as err:
        raise UserError(str(err).strip("'\"")) from None
    path = write_samples(model.config.modality, samples, Path(args.out))
    print(f"wrote {args.num} samples to {path}")
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    run_demo(Path(args.out), steps=args.steps)
    return 0


def cmd_info(args) -> int:
    import platform

    import torch

    from . import __version__
    from .core.samplers import SAMPLERS

    lines = {
        "polydiff": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": f"{torch.cuda.is_available()} ({torch.cuda.device_count()} devices)",
        "threads": torch.get_num_threads(),
        "cpu bf16": getattr(torch.backends.cpu, "get_cpu_capability", lambda: "?")(),
        "samplers": ", ".join(sorted(SAMPLERS)),
    }
    for mod in ("torchvision", "torchaudio", "accelerate", "av", "safetensors", "soundfile", "einops"):
        try:
            lines[mod] = __import__(mod).__version__
        except Exception as err:  # an optional library that fails to load is reported, not fatal
            lines[mod] = f"unavailable ({type(err).__name__})"
    width = max(map(len, lines))
    for key, value in lines.items():
        print(f"{key:<{width}}  {value}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="polydiff", description="Train and sample diffusion models.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a recipe")
    p.add_argument("recipe", help="a recipe TOML file or a bundled name such as toy/swiss_roll")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe key")
    p.add_argument("--resume", action="store_true", help="continue the run from its newest complete checkpoint")
    p.add_argument("--stop-at", type=positive_int, default=None, metavar="STEP",
                   help="stop after STEP as if interrupted (checkpoint written; for testing --resume)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample a trained model folder")
    p.add_argument("model_dir")
    p.add_argument("--num", type=positive_int, default=16)
    p.add_argument("--sampler", default=None)
    p.add_argument("--steps", type=positive_int, default=None)
    p.add_argument("--guidance", type=non_negative_float, default=None)
    p.add_argument("--label", type=int, default=None, help="class label for a class-conditional model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="samples", help="output path (the suffix is the modality's)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("demo", help="train the toy recipe and sample it (about a minute on a CPU)")
    p.add_argument("--out", default="out/demo")
    p.add_argument("--steps", type=positive_int, default=2500)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("info", help="versions, devices, threads")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .recipes.config import ConfigError
    from .train.errors import TrainingStopped, UserError
    from .train.guards import CheckpointError

    try:
        return args.func(args)
    except (ConfigError, CheckpointError, UserError, FileNotFoundError) as err:
        if args.debug:
            raise
        print(f"polydiff: error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except TrainingStopped as err:
        if args.debug:
            raise
        print(f"polydiff: training stopped: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:
        detail = f" ({err})" if str(err) else ""
        print(f"polydiff: interrupted{detail}; continue with --resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

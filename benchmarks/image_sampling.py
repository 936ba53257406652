"""Image sampling throughput: a polydiff image model at 10 / 25 / 50 sampler steps, and a cascade's time per stage.

    python -m polydiff.benchmarks.image_sampling [--num 100 --rounds 3 --train-steps 30] [--quick] [--out FILE.md]

The models are real model folders written by the engine (``polydiff.train.trainer.train``) from
``recipes/image/digits.toml`` (8x8 digits, "tiny" U-Net, classifier-free guidance 2) and
``recipes/image/digits_cascade.toml`` (its 8 -> 32 super-resolution stage), trained for a few steps only:
speed, not quality, is measured, so the weights do not matter. Besides the digits model, an untrained 32x32 RGB
model with image_training's CPU U-Net (DDPM-style, width 32) is built from the same recipe. Each is sampled with
the recipe's sampler (heun, 2 network calls a step but one for the last) and a first-order one (euler); the
cascade (``pipeline.cascade``) is timed stage by stage through ``Pipeline.sample``'s ``on_stage`` hook. Cells
are interleaved in rounds of alternating order, medians reported. One torch thread by default (as
image_training). A full run takes about 3 minutes on 2 cores; ``--quick`` under a minute.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from .image_training import Size, command_line
from .report import benchmark_parser, machine, publish

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "image"
SAMPLERS = ("heun", "euler")  # the recipe's sampler, and a first-order one


def train_briefly(recipe: str, out: Path, steps: int) -> Path:
    """``recipes/image/<recipe>.toml`` trained for ``steps`` into ``out``, periodic work off; its model folder."""
    from ..recipes.files import load_recipe
    from ..train.trainer import train

    sets = [f"train.steps={steps}", f"train.out_dir={json.dumps(out.as_posix())}", f"train.log_every={steps}",
            "train.val_every=0", "train.sample_every=0", f"train.checkpoint_every={steps}"]
    return train(load_recipe(RECIPES / f"{recipe}.toml", sets), progress=False).model_dir


def untrained_rgb32(s: Size, device: str):
    """A fresh 32x32 RGB DiffusionModel: the digits recipe with image_training's CPU U-Net, unconditional."""
    from ..pipeline import DiffusionModel
    from ..recipes.files import load_recipe

    sets = ['model.options.preset="cifar10"', f"model.options.channels={s.channels}", "model.options.num_classes=0",
            f"model.options.channel_mult={list(s.mult)}", f"model.options.attention_resolutions=[{s.size // 2}]",
            "model.options.dropout=0.0"]
    model = DiffusionModel.build(load_recipe(RECIPES / "digits.toml", sets), (3, s.size, s.size))
    model.denoiser.to(device).eval().requires_grad_(False)
    return model


class Calls:
    """Counts a network's forward calls (the NFE of a run)."""

    def __init__(self, module: torch.nn.Module):
        self.count = 0
        module.register_forward_hook(lambda *_: setattr(self, "count", self.count + 1))


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def sampling_cells(models: dict, nums: dict, steps_of: dict, device: str) -> dict:
    """(model name, sampler, steps) -> a function drawing ``nums[name]`` samples (labels 0..9 for the digits)."""
    cells = {}
    for name, model in models.items():
        cond = {"class_labels": torch.arange(nums[name]) % 10} if model.denoiser.backbone.null_cond else None
        for sampler in SAMPLERS:
            for steps in steps_of[name]:
                cells[(name, sampler, steps)] = (lambda m=model, n=nums[name], c=cond, sa=sampler, st=steps:
                                                 m.sample(n, sampler=sa, steps=st, cond=c))
    return cells


def cascade_round(pipeline, num: int, device: str) -> list[float]:
    """Seconds of each stage of one ``pipeline.sample`` of ``num`` images (labels 0..9)."""
    marks = []

    def on_stage(i: int, x: torch.Tensor) -> None:
        sync(device)
        marks.append(time.perf_counter())

    sync(device)
    start = time.perf_counter()
    pipeline.sample(num, cond={"class_labels": torch.arange(num) % 10}, on_stage=on_stage)
    return [b - a for a, b in zip([start, *marks[:-1]], marks)]


def main(argv: list[str] | None = None) -> int:
    parser = benchmark_parser(__doc__, "a check that it runs: few images, steps, rounds")
    parser.add_argument("--num", type=int, default=100, help="digits and cascade images per run")
    parser.add_argument("--num-rgb", type=int, default=16, help="32x32 RGB images per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--train-steps", type=int, default=30, help="training steps of each model (speed only)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    from ..pipeline import DiffusionModel, Pipeline
    from ..pipeline.cascade import write_cascade

    torch.set_num_threads(args.threads)
    if args.quick:
        args.num, args.num_rgb, args.rounds, args.train_steps = 10, 2, 2, 2
    start, device, tmp = time.perf_counter(), args.device, tempfile.TemporaryDirectory()
    base, sr = (train_briefly(recipe, Path(tmp.name), args.train_steps) for recipe in ("digits", "digits_cascade"))
    folder = write_cascade(Path(tmp.name) / "cascade", [{"model": str(base)}, {"model": str(sr), "aug_level": 0.1}])
    models = {"digits 8x8": DiffusionModel.from_pretrained(base, device),
              "untrained 32x32 RGB": untrained_rgb32(Size(32, (1, 2, 2), 32, args.num_rgb), device)}
    pipeline = Pipeline.from_pretrained(folder, device)
    tmp.cleanup()
    trained = time.perf_counter() - start
    params = {name: sum(p.numel() for p in m.denoiser.parameters()) for name, m in models.items()}
    nums = {"digits 8x8": args.num, "untrained 32x32 RGB": args.num_rgb}
    steps_of = {"digits 8x8": (2, 3) if args.quick else (10, 25, 50),
                "untrained 32x32 RGB": (2,) if args.quick else (10, 25)}
    cells = sampling_cells(models, nums, steps_of, device)
    calls = {name: Calls(m.denoiser.backbone) for name, m in models.items()}
    stage_calls = [Calls(stage.model.denoiser.backbone) for stage in pipeline.stages]
    nfe, seconds, stage_seconds = {}, {key: [] for key in cells}, []
    for r in range(args.rounds):
        for key in list(cells) if r % 2 == 0 else list(cells)[::-1]:  # alternate, so drift within a round cancels
            before = calls[key[0]].count
            seconds[key].append(timed(cells[key], device))
            nfe[key] = calls[key[0]].count - before
        stage_seconds.append(cascade_round(pipeline, args.num, device))
        if r == 0:
            left = (args.rounds - 1) * (sum(v[0] for v in seconds.values()) + sum(stage_seconds[0]))
            print(f"round 1 done ({time.perf_counter() - start:.0f} s so far); about {left:.0f} s left", flush=True)
    rows = ["| model | sampler | steps | network calls | seconds (median) | images/s |", "|---|---|---|---|---|---|"]
    for key, values in seconds.items():
        t = statistics.median(values)
        rows.append(f"| {' | '.join(map(str, key))} | {nfe[key]} | {t:.2f} | {nums[key[0]] / t:.1f} |")
    stage_rows = ["| stage | resolution | sampler, steps | network calls | seconds (median) | images/s |",
                  "|---|---|---|---|---|---|"]
    for i, stage in enumerate(pipeline.stages):
        m, t = stage.model, statistics.median(s[i] for s in stage_seconds)
        shape, kind = "x".join(map(str, m.example_shape[1:])), "base" if i == 0 else "super-resolution"
        stage_rows.append(f"| {i} ({kind}) | {shape} | {m.sampling.sampler}, {m.sampling.steps} | "
                          f"{stage_calls[i].count // args.rounds} | {t:.2f} | {args.num / t:.1f} |")
    total = statistics.median(sum(s) for s in stage_seconds)
    stage_rows.append(f"| all | | | | {total:.2f} | {args.num / total:.1f} |")
    guidance = models["digits 8x8"].sampling.guidance
    md = f"""## Image sampling throughput

Command: `{command_line("image_sampling", argv)}` ({time.perf_counter() - start:.0f} s, {trained:.0f} s of it
training and loading). Machine: {machine()}; sampling on {device}.

Models: `recipes/image/digits.toml` (8x8 grayscale, preset "tiny", {params["digits 8x8"]:,} parameters) trained
{args.train_steps} steps, sampled with classes 0..9 and the recipe's guidance {guidance:g} (one network call runs
the conditional and the unconditional rows together: twice the batch); an untrained, unconditional 32x32 RGB
model built from that recipe with image_training's CPU U-Net (DDPM layout, width 32,
{params["untrained 32x32 RGB"]:,} parameters). Grids are the recipe's (karras); "network calls" counts the
backbone's forward calls. {args.num} digits, {args.num_rgb} RGB images per run; medians of {args.rounds} rounds,
cells interleaved in alternating order.

{chr(10).join(rows)}

Cascade: the digits model as base and `recipes/image/digits_cascade.toml` (8 -> 32, Efficient U-Net "tiny",
trained {args.train_steps} steps) as super-resolution stage with aug_level 0.1, written by `write_cascade` and
sampled by `Pipeline.from_pretrained(...).sample({args.num}, cond={{"class_labels": ...}})`, each stage with its
model's sampling defaults; a stage's time runs from the previous `on_stage` call to its own (so the
super-resolution stage includes noising its low-resolution input).

{chr(10).join(stage_rows)}
"""
    return publish("image-sampling", md, args.out)


if __name__ == "__main__":
    raise SystemExit(main())

"""Trainer overhead: steps/s of the toy recipe through ``polydiff train`` against a bare PyTorch loop.

The bare loop does the same optimisation work by hand: the same model, batch, EDM loss (drawn exactly
as the trainer draws it), AdamW, clipping, learning-rate schedule and EMA update, with batches sliced
from an in-memory tensor. The engine also runs its periodic work (logging, validation, samples,
checkpoints); it is measured with the recipe's own schedule of those and with them off. Variants are
interleaved in rounds, in alternating order, and the median of per-round ratios is reported, because this
machine is noisy; torch
runs one intra-op thread, which made the rounds agree within a few percent here (two threads swung them by
+-20% on a shared 2-core machine).

    python -m polydiff.benchmarks.trainer_overhead [--steps 1000 --rounds 6]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from ..recipes.files import load_recipe
from ..data.examples import example_shape
from ..pipeline.build import build_denoiser, build_schedule
from ..train.build import build_data, build_objective
from ..train.ema import EMA
from ..train.lr import make_lr_scheduler
from ..train.trainer import train
from .report import machine, write_section

RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "toy" / "swiss_roll.toml"


def bare_loop(cfg) -> float:
    """Steps/s of a hand-written loop doing the trainer's optimisation work."""
    torch.manual_seed(cfg.train.seed)
    schedule = build_schedule(cfg)
    train_set, _ = build_data(cfg)
    model, objective = build_denoiser(cfg, example_shape(train_set), schedule), build_objective(cfg, schedule)
    ema = EMA(model, halflife_steps=cfg.train.ema_halflife_steps)
    o = cfg.optim
    opt = torch.optim.AdamW(model.parameters(), o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    sched = make_lr_scheduler(opt, o.warmup_steps, cfg.train.steps, o.lr_schedule)
    data = torch.stack([train_set[i]["x"] for i in range(len(train_set))])
    B = cfg.data.batch_size
    start = time.perf_counter()
    for step in range(cfg.train.steps):
        idx = torch.randint(len(data), (B,))
        x0 = data[idx]
        g = torch.Generator().manual_seed(step)
        loss = objective.loss(model, x0, objective.draw(x0, g)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip)
        opt.step()
        sched.step()
        ema.update(model)
    return cfg.train.steps / (time.perf_counter() - start)


def engine(overrides: list[str]) -> float:
    """Steps/s of ``train`` (what ``polydiff train`` runs) on the recipe with ``overrides``."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_recipe(RECIPE, [*overrides, f'train.out_dir="{Path(tmp).as_posix()}"'])
        start = time.perf_counter()
        result = train(cfg, progress=False)
        return result.steps / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    steps = [f"train.steps={args.steps}"]
    periodic = [f"train.log_every={args.steps // 50}", f"train.val_every={args.steps // 10}",
                f"train.sample_every={args.steps // 5}", f"train.checkpoint_every={args.steps // 5}"]
    quiet = [f"train.log_every={args.steps}", "train.val_every=0", "train.sample_every=0",
             f"train.checkpoint_every={args.steps}"]
    variants = {"engine, periodic work on": steps + periodic, "engine, periodic work off": steps + quiet}
    bare_cfg = load_recipe(RECIPE, steps)
    rates: dict[str, list[float]] = {"bare loop": [], **{name: [] for name in variants}}
    runs = {"bare loop": lambda: bare_loop(bare_cfg), **{n: (lambda o=o: engine(o)) for n, o in variants.items()}}
    for r in range(args.rounds):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]  # alternate, so drift within a round cancels
        for name in order:
            rates[name].append(runs[name]())
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rates.items()))
    rows = ["| loop | steps/s (median) | ratio to bare loop (median of rounds) | ratio in each round |",
            "|---|---|---|---|"]
    for name, values in rates.items():
        ratios = [v / b for v, b in zip(values, rates["bare loop"])]
        each = ", ".join(f"{r:.2f}" for r in ratios)
        rows.append(f"| {name} | {statistics.median(values):.1f} | {statistics.median(ratios):.3f} | {each} |")
    periodic_text = ", ".join(p.removeprefix("train.") for p in periodic)
    md = f"""## Trainer overhead (toy recipe)

Command: `python -m polydiff.benchmarks.trainer_overhead --steps {args.steps} --rounds {args.rounds}`
(part of `make bench`). Machine: {machine()}.

The toy recipe (`recipes/toy/swiss_roll.toml`, batch 512, 3-block MLP, {args.steps} steps) through the
engine (`polydiff.train.trainer.train`, what `polydiff train` runs) against a hand-written loop doing the
same optimisation work (same model, loss draws, AdamW, clipping, LR schedule, EMA). "Periodic work on"
adds {periodic_text}. Target: within 10% of the bare loop.

{chr(10).join(rows)}

The engine's own cost is the "periodic work off" row; the per-round ratios show how much this shared machine
moved while it ran. With the periodic work on, most of the difference
is the recipe's sample grid ({bare_cfg.sample.num} points by {bare_cfg.sample.sampler} in {bare_cfg.sample.steps} steps, every {args.steps // 5} steps) and the
validation loss at six noise levels: work the recipe asks for, not loop overhead.
"""
    print(md)
    write_section("trainer-overhead", md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

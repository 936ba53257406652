"""The training loop on accelerate: one code path for 1 CPU, N GPUs and several machines.

What each step sees is a pure function of (seed, step): the data order (``data_order``) and the noise
(``objective.draw`` from a generator seeded by the step, drawn for the *global* batch and sliced per
rank), so a resumed run and a W-process run reproduce a one-process run (DESIGN.md, principle 2).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..core.conditioning import select_conditions
from ..core.utils import append_dims
from ..recipes.config import config_from_dict, config_to_dict
from ..recipes.files import save_resolved
from ..recipes.schema import RecipeConfig
from ..data.registry import collate
from .build import build_data, build_denoiser, build_objective, build_schedule
from .checkpoint import checkpoint_config, latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint
from .data_order import StepBatchSampler, rank_share
from .ema import EMA
from .errors import TrainingStopped, UserError
from .interrupt import DeferredInterrupt
from .logs import RunLog, plot_loss_curve
from .lr import make_lr_scheduler
from .periodic import sample_and_write, save_model, validation_loss


class TrainingStep(nn.Module):
    """Denoiser + objective as one module, so that DDP sees the forward pass that makes the loss."""

    def __init__(self, denoiser: nn.Module, objective):
        super().__init__()
        self.denoiser, self.objective = denoiser, objective

    def forward(self, x0: torch.Tensor, draws: dict, cond: dict) -> torch.Tensor:
        return self.objective.loss(self.denoiser, x0, draws, cond)


@dataclass
class RunResult:
    run_dir: Path
    steps: int
    last_loss: float
    nonfinite_skipped: int
    model_dir: Path | None
    steps_per_second: float


def _step_seed(seed: int, step: int, micro: int) -> int:
    return (seed * 1_000_003 + step) * 64 + micro


def _resume_state(cfg: RecipeConfig, run_dir: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from (None: fresh run); refuses to overwrite or to mix configs."""
    ckpt = latest_checkpoint(run_dir) if run_dir.exists() else None
    if not resume:
        if list_checkpoints(run_dir) if run_dir.exists() else []:
            raise UserError(f"{run_dir} already holds checkpoints: pass --resume to continue it, "
                            f"or --set train.out_dir=... for a new run")
        return None
    if ckpt is None:
        raise UserError(f"--resume: no complete checkpoint in {run_dir}")
    saved = config_from_dict(RecipeConfig, checkpoint_config(ckpt), source=str(ckpt))
    a, b = config_to_dict(saved), config_to_dict(cfg)
    a["train"].pop("steps"), b["train"].pop("steps")
    if a != b:
        raise UserError(f"--resume: the recipe differs from the one {run_dir} was trained with "
                        f"(only train.steps may change); see {run_dir / 'config.toml'}")
    return ckpt


def train(cfg: RecipeConfig, *, resume: bool = False, stop_at: int | None = None, progress: bool = True) -> RunResult:
    """Train ``cfg``; with ``resume`` continue its run folder's newest complete checkpoint exactly.
    ``stop_at`` ends the run after that step as if it were interrupted (to test resume)."""
    t = cfg.train
    # accelerate keeps one process-wide state; a second run in the same process (tests, notebooks) with
    # another precision must start from a clean one. The distributed setup (PartialState) is kept.
    AcceleratorState._reset_state()
    acc = Accelerator(mixed_precision=t.mixed_precision, cpu=not torch.cuda.is_available())
    run_dir = Path(t.out_dir) / cfg.name
    ckpt = _resume_state(cfg, run_dir, resume)
    torch.manual_seed(t.seed)
    schedule = build_schedule(cfg)
    denoiser, objective = build_denoiser(cfg, schedule), build_objective(cfg, schedule)
    ema = EMA(denoiser, t.ema_decay, t.ema_halflife_steps, t.ema_warmup, t.ema_rampup_ratio) if (
        t.ema_decay is not None or t.ema_halflife_steps is not None) else None
    o = cfg.optim
    optimizer = torch.optim.AdamW(denoiser.parameters(), o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    lr_scheduler = make_lr_scheduler(optimizer, o.warmup_steps, t.steps, o.lr_schedule)
    start, stats = 0, {"nonfinite_skipped": 0}
    if ckpt is not None:
        extra = load_checkpoint(ckpt, model=denoiser, ema=ema, optimizer=optimizer, lr_scheduler=lr_scheduler)
        start, stats = int(extra["step"]), dict(extra["stats"])
    step_module, optimizer = acc.prepare(TrainingStep(denoiser, objective), optimizer)
    denoiser = acc.unwrap_model(step_module).denoiser
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_resolved(cfg, run_dir / "config.toml")
    log = RunLog(run_dir, acc.is_main_process)

    train_set, val_set = build_data(cfg)
    share = rank_share(cfg.data.batch_size, acc.process_index, acc.num_processes)
    sampler = StepBatchSampler(len(train_set), cfg.data.batch_size, t.seed, start * t.grad_accum,
                               acc.process_index, acc.num_processes)
    batches = iter(DataLoader(train_set, batch_sampler=sampler, collate_fn=collate, num_workers=cfg.data.num_workers))
    null_cond = getattr(denoiser.backbone, "null_cond", {})

    in_row, last_loss, window, tick = 0, float("nan"), [], time.perf_counter()
    end = t.steps if stop_at is None else min(t.steps, stop_at)
    bar = tqdm(range(start, end), initial=start, total=t.steps, desc=f"train {cfg.name}", unit="step",
               disable=not (progress and acc.is_main_process), dynamic_ncols=True)
    interrupt = DeferredInterrupt(active=acc.num_processes == 1)
    with interrupt:
        for step in bar:
            total = torch.zeros((), device=acc.device)
            for micro in range(t.grad_accum):
                batch = next(batches)
                x0 = batch["x"].to(acc.device)
                cond = {k: v.to(acc.device) for k, v in batch["cond"].items()}
                g = torch.Generator().manual_seed(_step_seed(t.seed, step, micro))
                proto = x0.new_empty((cfg.data.batch_size, *x0.shape[1:]), device="cpu")
                draws = {k: v[share].to(acc.device) for k, v in objective.draw(proto, g).items()}
                if t.cond_drop_prob > 0 and cond:
                    keep = torch.rand(cfg.data.batch_size, generator=g)[share].to(acc.device) >= t.cond_drop_prob
                    cond = select_conditions(cond, null_cond, keep)
                sync = contextlib.nullcontext() if micro == t.grad_accum - 1 else acc.no_sync(step_module)
                with sync, acc.autocast():
                    loss = step_module(x0, draws, cond).mean() / t.grad_accum
                    acc.backward(loss)
                total += loss.detach()
            total = acc.reduce(total, "mean")
            finite = bool(torch.isfinite(total))
            if finite and o.grad_clip is not None:
                norm = acc.clip_grad_norm_(step_module.parameters(), o.grad_clip)
                finite = t.mixed_precision == "fp16" or bool(torch.isfinite(torch.as_tensor(norm)))
            if finite:
                optimizer.step()
                if ema is not None:
                    ema.update(denoiser)
                in_row, last_loss = 0, float(total)
                window.append(last_loss)
            else:
                in_row += 1
                stats["nonfinite_skipped"] += 1
                if in_row >= t.max_nonfinite_in_row:
                    newest = latest_checkpoint(run_dir)
                    raise TrainingStopped(
                        f"step {step + 1}: the loss or its gradient was not finite {in_row} times in a row, so the run "
                        f"stopped; try a lower optim.lr, optim.grad_clip, train.mixed_precision='bf16' instead of 'fp16', "
                        f"or check the data. Newest good checkpoint: {newest or 'none yet'}"
                    )
            optimizer.zero_grad(set_to_none=True)
            lr_scheduler.step()
            done = step + 1
            if done % t.log_every == 0 or done == end:
                rate = len(window) / max(time.perf_counter() - tick, 1e-9)
                if window:
                    log.scalars(done, {"train/loss": sum(window) / len(window), "train/lr": lr_scheduler.get_last_lr()[0],
                                       "train/steps_per_s": rate, "train/nonfinite_skipped": stats["nonfinite_skipped"]})
                bar.set_postfix(loss=f"{last_loss:.4f}", refresh=False)
                window, tick = [], time.perf_counter()
            sampling_model = ema.model if ema is not None else denoiser
            if t.val_every and done % t.val_every == 0 and len(val_set):
                log.scalars(done, {"val/loss": validation_loss(denoiser, val_set, cfg, acc.device)})
            if t.sample_every and done % t.sample_every == 0 and acc.is_main_process:
                png = sample_and_write(sampling_model, schedule, cfg, run_dir / "samples" / f"step_{done:06d}", val_set)
                log.image("samples", done, png)
            if done % t.checkpoint_every == 0 or done == end or interrupt.requested:
                if acc.is_main_process:
                    saved = save_checkpoint(
                        run_dir, done, model=denoiser, ema=ema, optimizer=optimizer, lr_scheduler=lr_scheduler,
                        extra_state={"step": done, "stats": stats}, config=config_to_dict(cfg), keep_last=t.keep_last)
                acc.wait_for_everyone()
            if interrupt.requested:
                raise KeyboardInterrupt(f"after step {done}, checkpoint {saved}")
    bar.close()
    model_dir = None
    if acc.is_main_process and end == t.steps:
        model_dir = save_model(ema.model if ema is not None else denoiser, cfg, run_dir / "model")
        if log.path.exists():
            plot_loss_curve(log.path, run_dir / "loss_curve.png")
    log.close()
    rate = (end - start) / max(bar.format_dict["elapsed"], 1e-9)
    return RunResult(run_dir, end, last_loss, stats["nonfinite_skipped"], model_dir, rate)

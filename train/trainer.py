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
from .periodic import event_shape, sample_and_write, save_model, validation_loss


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


def _check_example_shape(cfg: RecipeConfig, train_set) -> None:
    """The data's example shape must be the one the model is built for (one line, not a matmul error)."""
    got, want = tuple(train_set[0]["x"].shape), event_shape(cfg)
    if got != want:
        raise UserError(f"recipe {cfg.name!r}: data set {cfg.data.name!r} gives examples of shape {got}, "
                        f"but model {cfg.model.name!r} is built for {want} (see model.options)")


class _Run:
    """The state of one training run and the pieces of its step; ``train`` drives it."""

    def __init__(self, cfg: RecipeConfig, resume: bool, progress: bool):
        t, o = cfg.train, cfg.optim
        # accelerate keeps one process-wide state; a second run in the same process (tests, notebooks) with
        # another precision must start from a clean one. The distributed setup (PartialState) is kept.
        AcceleratorState._reset_state()
        self.acc = acc = Accelerator(mixed_precision=t.mixed_precision, cpu=not torch.cuda.is_available())
        self.cfg, self.progress = cfg, progress
        self.run_dir = Path(t.out_dir) / cfg.name
        ckpt = _resume_state(cfg, self.run_dir, resume)
        torch.manual_seed(t.seed)
        try:  # names and ranges are checked by the recipe schema; what remains is how the pieces fit
            self.schedule = build_schedule(cfg)
            denoiser, self.objective = build_denoiser(cfg, self.schedule), build_objective(cfg, self.schedule)
            train_set, self.val_set = build_data(cfg)
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"recipe {cfg.name!r}: {str(err).strip(chr(34) + chr(39))}") from None
        _check_example_shape(cfg, train_set)
        self.ema = EMA(denoiser, t.ema_decay, t.ema_halflife_steps, t.ema_warmup, t.ema_rampup_ratio) if (
            t.ema_decay is not None or t.ema_halflife_steps is not None) else None
        optimizer = torch.optim.AdamW(denoiser.parameters(), o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
        self.lr_scheduler = make_lr_scheduler(optimizer, o.warmup_steps, t.steps, o.lr_schedule)
        self.start, self.stats = 0, {"nonfinite_skipped": 0}
        if ckpt is not None:
            extra = load_checkpoint(ckpt, model=denoiser, ema=self.ema, optimizer=optimizer,
                                    lr_scheduler=self.lr_scheduler)
            self.start, self.stats = int(extra["step"]), dict(extra["stats"])
        self.step_module, self.optimizer = acc.prepare(TrainingStep(denoiser, self.objective), optimizer)
        self.denoiser = acc.unwrap_model(self.step_module).denoiser
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_resolved(cfg, self.run_dir / "config.toml")
        self.log = RunLog(self.run_dir, acc.is_main_process)
        self.share = rank_share(cfg.data.batch_size, acc.process_index, acc.num_processes)
        sampler = StepBatchSampler(len(train_set), cfg.data.batch_size, t.seed, self.start * t.grad_accum,
                                   acc.process_index, acc.num_processes)
        self.batches = iter(DataLoader(train_set, batch_sampler=sampler, collate_fn=collate,
                                       num_workers=cfg.data.num_workers))
        self.null_cond = getattr(self.denoiser.backbone, "null_cond", {})
        self.in_row, self.last_loss, self.window, self.tick = 0, float("nan"), [], time.perf_counter()

    def accumulate_gradients(self, step: int) -> torch.Tensor:
        """Forward and backward over the step's micro-batches; returns the mean loss over all processes.
        Noise (and condition dropout) is drawn for the global batch and sliced to this rank's rows."""
        t, acc, B = self.cfg.train, self.acc, self.cfg.data.batch_size
        total = torch.zeros((), device=acc.device)
        for micro in range(t.grad_accum):
            batch = next(self.batches)
            x0 = batch["x"].to(acc.device)
            cond = {k: v.to(acc.device) for k, v in batch["cond"].items()}
            g = torch.Generator().manual_seed(_step_seed(t.seed, step, micro))
            proto = x0.new_empty((B, *x0.shape[1:]), device="cpu")  # the global batch's shape
            draws = {k: v[self.share].to(acc.device) for k, v in self.objective.draw(proto, g).items()}
            if t.cond_drop_prob > 0 and cond:
                keep = torch.rand(B, generator=g)[self.share].to(acc.device) >= t.cond_drop_prob
                cond = select_conditions(cond, self.null_cond, keep)
            sync = contextlib.nullcontext() if micro == t.grad_accum - 1 else acc.no_sync(self.step_module)
            with sync, acc.autocast():
                loss = self.step_module(x0, draws, cond).mean() / t.grad_accum
                acc.backward(loss)
            total += loss.detach()
        return acc.reduce(total, "mean")

    def update(self, step: int, total: torch.Tensor) -> None:
        """Clip and apply the gradients, or skip a non-finite step (counted; too many in a row stop the run)."""
        t, clip = self.cfg.train, self.cfg.optim.grad_clip
        finite = bool(torch.isfinite(total))
        if finite and clip is not None:
            norm = self.acc.clip_grad_norm_(self.step_module.parameters(), clip)
            finite = t.mixed_precision == "fp16" or bool(torch.isfinite(torch.as_tensor(norm)))  # fp16: the scaler skips
        if finite:
            self.optimizer.step()
            if self.ema is not None:
                self.ema.update(self.denoiser)
            self.in_row, self.last_loss = 0, float(total)
            self.window.append(self.last_loss)
        else:
            self.in_row += 1
            self.stats["nonfinite_skipped"] += 1
            if self.in_row >= t.max_nonfinite_in_row:
                raise TrainingStopped(
                    f"step {step + 1}: the loss or its gradient was not finite {self.in_row} times in a row, so the "
                    f"run stopped; try a lower optim.lr, optim.grad_clip, train.mixed_precision='bf16' instead of "
                    f"'fp16', or check the data. Newest good checkpoint: {latest_checkpoint(self.run_dir) or 'none yet'}"
                )
        self.optimizer.zero_grad(set_to_none=True)
        self.lr_scheduler.step()

    @property
    def sampling_model(self) -> nn.Module:
        return self.ema.model if self.ema is not None else self.denoiser

    def periodic(self, done: int, last: bool, bar) -> None:
        """Logs, validation loss and sample files when they fall due after step ``done``."""
        t = self.cfg.train
        if done % t.log_every == 0 or last:
            if self.window:
                rate = len(self.window) / max(time.perf_counter() - self.tick, 1e-9)
                self.log.scalars(done, {
                    "train/loss": sum(self.window) / len(self.window), "train/lr": self.lr_scheduler.get_last_lr()[0],
                    "train/steps_per_s": rate, "train/nonfinite_skipped": self.stats["nonfinite_skipped"]})
            bar.set_postfix(loss=f"{self.last_loss:.4f}", refresh=False)
            self.window, self.tick = [], time.perf_counter()
        if t.val_every and done % t.val_every == 0 and len(self.val_set):
            self.log.scalars(done, {"val/loss": validation_loss(self.denoiser, self.val_set, self.cfg, self.acc.device)})
        if t.sample_every and done % t.sample_every == 0 and self.acc.is_main_process:
            path = self.run_dir / "samples" / f"step_{done:06d}"
            self.log.image("samples", done, sample_and_write(self.sampling_model, self.schedule, self.cfg, path,
                                                             self.val_set))

    def checkpoint(self, done: int) -> Path | None:
        """Write the checkpoint of step ``done`` (main process) and wait for every process."""
        saved = None
        if self.acc.is_main_process:
            saved = save_checkpoint(
                self.run_dir, done, model=self.denoiser, ema=self.ema, optimizer=self.optimizer,
                lr_scheduler=self.lr_scheduler, extra_state={"step": done, "stats": self.stats},
                config=config_to_dict(self.cfg), keep_last=self.cfg.train.keep_last)
        self.acc.wait_for_everyone()
        return saved

    def finish(self) -> Path | None:
        """The model folder (EMA weights) and the loss curve, from the main process."""
        model_dir = None
        if self.acc.is_main_process:
            model_dir = save_model(self.sampling_model, self.cfg, self.run_dir / "model")
            if self.log.path.exists():
                plot_loss_curve(self.log.path, self.run_dir / "loss_curve.png")
        return model_dir


def train(cfg: RecipeConfig, *, resume: bool = False, stop_at: int | None = None, progress: bool = True) -> RunResult:
    """Train ``cfg``; with ``resume`` continue its run folder's newest complete checkpoint exactly.
    ``stop_at`` ends the run after that step as if it were interrupted (to test resume). Ctrl-C in a
    one-process run finishes the step, writes a checkpoint and raises KeyboardInterrupt."""
    run = _Run(cfg, resume, progress)
    t = cfg.train
    end = t.steps if stop_at is None else min(t.steps, stop_at)
    bar = tqdm(range(run.start, end), initial=run.start, total=t.steps, desc=f"train {cfg.name}", unit="step",
               disable=not (progress and run.acc.is_main_process), dynamic_ncols=True)
    with DeferredInterrupt(active=run.acc.num_processes == 1) as interrupt:
        for step in bar:
            run.update(step, run.accumulate_gradients(step))
            done = step + 1
            run.periodic(done, done == end, bar)
            if done % t.checkpoint_every == 0 or done == end or interrupt.requested:
                saved = run.checkpoint(done)
            if interrupt.requested:
                raise KeyboardInterrupt(f"after step {done}, checkpoint {saved}")
    bar.close()
    model_dir = run.finish() if end == t.steps else None
    run.log.close()
    rate = (end - run.start) / max(bar.format_dict["elapsed"], 1e-9)
    return RunResult(run.run_dir, end, run.last_loss, run.stats["nonfinite_skipped"], model_dir, rate)
